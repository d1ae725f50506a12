"""Train the scene detector and segmenter shipped in camscope/assets/models/, on a CPU.

Usage:
    .venv/bin/python scripts/train_scene_models.py                      # both models
    .venv/bin/python scripts/train_scene_models.py --only scenes-detector --threads 2

Data: scenes of ``camscope.data.scenes.SpeciesScenes`` (several synthetic species per
scene, boxes and part masks known), a training split and a test split drawn with their own
seeds. Models: ``camscope.models.scene_models.SceneDetector`` (CenterNet-style, torchvision's
output) and ``SceneSegmenter`` (``{"out": logits}``). Seeded and deterministic as far as
torch allows on a CPU (the same torch version and thread count give the same weights).

Each file holds the weights and JSON metadata: the architecture, how to rebuild the data
(generator config, seeds, sizes), the recipe, the command, the time, the per-epoch log, and
the scores on the whole test split (the detector's average precision at IoU 0.5 per class
and its mean; the segmenter's IoU per class and the mean over the species) and on its first
16 scenes, which ``tests/models/test_scene_models.py`` checks against the shipped weights.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camscope.data.scenes import SceneBatch, SpeciesScenes
from camscope.io import save_tensors
from camscope.models.scene_models import (
    SceneDetector,
    SceneSegmenter,
    detection_average_precision,
    segmentation_iou,
)
from camscope.models.scene_zoo import SCENE_MODEL_KIND

ASSETS = Path(__file__).resolve().parents[1] / "src" / "camscope" / "assets" / "models"
#: The test scenes the scores are also recorded on, for a quick check of the shipped weights.
FIRST_SCENES = 16

_DATA = {
    "generator": {"num_classes": 4, "size": 96, "seed": 0},
    "train_seed": 1,
    "train_size": 2048,
    "test_seed": 2,
    "test_size": 256,
}
RECIPES: dict[str, dict[str, Any]] = {
    "scenes-detector": {
        "model": "SceneDetector",
        "architecture": {"widths": [16, 32, 48, 64], "channels": 32},
        "data": _DATA,
        "epochs": 16,
        "batch_size": 32,
        "lr": 4e-3,
        "weight_decay": 1e-4,
        "flip": True,
        "seed": 0,
    },
    "scenes-segmenter": {
        "model": "SceneSegmenter",
        "architecture": {"widths": [16, 32, 48, 64], "channels": 32},
        "data": _DATA,
        "epochs": 6,
        "batch_size": 32,
        "lr": 4e-3,
        "weight_decay": 1e-4,
        "flip": True,
        "seed": 0,
    },
}


def build_model(recipe: dict[str, Any], num_classes: int) -> nn.Module:
    """The recipe's untrained model (``num_classes`` with the background)."""
    cls = {"SceneDetector": SceneDetector, "SceneSegmenter": SceneSegmenter}[recipe["model"]]
    return cls(num_classes=num_classes, **recipe["architecture"])


def _flip(batch: SceneBatch, mirror: Tensor) -> SceneBatch:
    """The scenes ``mirror`` ``[N]`` mirrored left to right (boxes too); the others as they are."""
    size = batch.images.shape[-1]
    flipped_boxes = torch.stack(
        [size - batch.boxes[..., 2], batch.boxes[..., 1], size - batch.boxes[..., 0], batch.boxes[..., 3]], dim=-1
    )
    present = (batch.labels >= 0)[..., None]
    return SceneBatch(
        images=torch.where(mirror[:, None, None, None], batch.images.flip(-1), batch.images),
        labels=batch.labels,
        boxes=torch.where(mirror[:, None, None] & present, flipped_boxes, batch.boxes),
        instances=torch.where(mirror[:, None, None], batch.instances.flip(-1), batch.instances),
        parts=torch.where(mirror[:, None, None], batch.parts.flip(-1), batch.parts),
    )


def _loss(model: nn.Module, batch: SceneBatch) -> dict[str, Tensor]:
    if isinstance(model, SceneDetector):
        return model.loss(batch.images, batch.labels, batch.boxes)
    return model.loss(batch.images, batch.semantic())


def scores_on(model: nn.Module, test: SceneBatch, batch_size: int = 64) -> dict[str, Any]:
    """The detector's AP at IoU 0.5 per class and their mean (``map50``); the segmenter's IoU per class and the
    mean over the species (``miou``), on ``test``."""
    model.eval()
    with torch.no_grad():
        outputs = [model(test.images[i : i + batch_size]) for i in range(0, len(test), batch_size)]
    if isinstance(model, SceneDetector):
        found = [d for chunk in outputs for d in chunk]
        ap = detection_average_precision(found, test.labels, test.boxes, 0.5)
        return {"map50": sum(ap.values()) / max(1, len(ap)), "ap50": {str(c): v for c, v in ap.items()}}
    logits = torch.cat([chunk["out"] for chunk in outputs])
    iou = segmentation_iou(logits, test.semantic(), model.num_classes)
    species = iou[1:][~iou[1:].isnan()]
    return {"miou": float(species.mean()), "iou": [None if math.isnan(v) else v for v in iou.tolist()]}


def train(
    name: str,
    recipe: dict[str, Any],
    log: Callable[[str], None] = print,
    command: str | None = None,
    splits: tuple[SceneBatch, SceneBatch] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train model ``name`` by ``recipe``; returns the model (eval mode) and its metadata (with the log).

    ``splits``: the train and test scenes when already drawn by ``recipe["data"]`` (drawn here otherwise).
    """
    lines: list[str] = []

    def note(message: str) -> None:
        lines.append(message)
        log(message)

    torch.manual_seed(recipe["seed"])
    started = time.perf_counter()
    data = recipe["data"]
    scenes = SpeciesScenes(**data["generator"])
    if splits is None:
        splits = (
            scenes.sample_split(data["train_size"], data["train_seed"]),
            scenes.sample_split(data["test_size"], data["test_seed"]),
        )
    train_set, test_set = splits
    data_seconds = time.perf_counter() - started
    note(f"[{name}] data: {len(train_set)} train, {len(test_set)} test scenes in {data_seconds:.1f} s")

    model = build_model(recipe, len(scenes.class_names))
    epochs, batch_size = recipe["epochs"], recipe["batch_size"]
    steps = math.ceil(len(train_set) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe["lr"], total_steps=epochs * steps, pct_start=0.2
    )
    generator = torch.Generator().manual_seed(recipe["seed"])
    train_started = time.perf_counter()
    losses: list[float] = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_set), generator=generator)
        totals: dict[str, float] = {}
        for step in range(steps):
            batch = train_set[order[step * batch_size : (step + 1) * batch_size]]
            if recipe["flip"]:
                batch = _flip(batch, torch.rand(len(batch), generator=generator) < 0.5)
            parts = _loss(model, batch)
            loss = sum(parts.values(), torch.zeros(()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / steps
        losses.append(sum(totals.values()))
        shown = ", ".join(f"{key} {value:.3f}" for key, value in totals.items())
        note(
            f"[{name}] epoch {epoch + 1}/{epochs}: loss {losses[-1]:.3f} ({shown}), {time.perf_counter() - train_started:.0f} s"
        )
    train_seconds = time.perf_counter() - train_started
    model.eval()
    scores = scores_on(model, test_set)
    first = {"scenes": FIRST_SCENES, **scores_on(model, test_set[:FIRST_SCENES])}  # cheap to check in the tests
    headline = "map50" if "map50" in scores else "miou"
    note(f"[{name}] test {headline} {scores[headline]:.4f}, {sum(p.numel() for p in model.parameters())} parameters")
    metadata = {
        "name": name,
        "model": recipe["model"],
        "architecture": {**recipe["architecture"], "num_classes": len(scenes.class_names)},
        "cam_layer": model.cam_layer,
        "input": {"channels": 3, "size": scenes.size, "range": [0.0, 1.0]},
        "data": {**data, "generator": scenes.config()},
        "class_names": scenes.class_names,
        "test": scores,
        "test_first": first,
        "test_images": len(test_set),
        "train_images": len(train_set),
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": "AdamW",
            "lr": recipe["lr"],
            "schedule": "OneCycleLR(pct_start=0.2)",
            "weight_decay": recipe["weight_decay"],
            "augmentation": {"flip": recipe["flip"]},
            "seed": recipe["seed"],
            "losses": losses,
            "data_seconds": round(data_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "script": "scripts/train_scene_models.py",
            "command": command or f"python scripts/train_scene_models.py --only {name}",
            "log": lines,
        },
    }
    return model, metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(RECIPES), action="append", help="train only this model (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path, default=ASSETS, help=f"output folder (default {ASSETS})")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (experiments)")
    parser.add_argument("--train-size", type=int, default=None, help="override the training scenes (experiments)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    for name in args.only or sorted(RECIPES):
        recipe = {**RECIPES[name], "data": dict(RECIPES[name]["data"])}
        if args.epochs is not None:
            recipe["epochs"] = args.epochs
        if args.train_size is not None:
            recipe["data"]["train_size"] = args.train_size
        command = f"python scripts/train_scene_models.py --only {name}" + "".join(
            f" --{flag} {value}"
            for flag, value, default in (
                ("threads", args.threads, 1),
                ("epochs", args.epochs, None),
                ("train-size", args.train_size, None),
            )
            if value != default
        )
        model, metadata = train(name, recipe, log=lambda message: print(message, flush=True), command=command)
        path = save_tensors(args.out / f"{name}.safetensors", model.state_dict(), metadata, kind=SCENE_MODEL_KIND)
        print(f"[{name}] wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
