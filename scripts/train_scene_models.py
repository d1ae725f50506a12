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

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import training
from torch import Tensor, nn

from camscope.data.scenes import SceneBatch, SpeciesScenes
from camscope.models.scene_models import (
    SceneDetector,
    SceneSegmenter,
    detection_average_precision,
    segmentation_iou,
)
from camscope.models.scene_zoo import SCENE_MODEL_KIND

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
        images=training.mirrored(batch.images, mirror),
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
        outputs = training.batched(model, test.images, batch_size)
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
    note = training.Notes(log)
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
    steps = math.ceil(len(train_set) / recipe["batch_size"])
    losses: list[float] = []

    def step(index: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        batch = train_set[index]
        if recipe["flip"]:
            batch = _flip(batch, training.coin_flips(len(batch), generator))
        parts = _loss(model, batch)
        return sum(parts.values(), torch.zeros(())), {
            key: float(value.detach()) / steps for key, value in parts.items()
        }

    def end(epoch: int, totals: dict[str, float], elapsed: Callable[[], float]) -> None:
        losses.append(sum(totals.values()))
        shown = ", ".join(f"{key} {value:.3f}" for key, value in totals.items())
        note(f"[{name}] epoch {epoch + 1}/{recipe['epochs']}: loss {losses[-1]:.3f} ({shown}), {elapsed():.0f} s")

    train_seconds = training.fit(model, recipe, len(train_set), step, 0.2, end)
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
        "training": training.record(
            recipe,
            0.2,
            {"flip": recipe["flip"]},
            (data_seconds, train_seconds),
            "scripts/train_scene_models.py",
            command or f"python scripts/train_scene_models.py --only {name}",
            note.lines,
            tail={"losses": losses},
        ),
    }
    return model, metadata


def main(argv: list[str] | None = None) -> int:
    return training.main_over_recipes(
        __doc__,
        argv,
        RECIPES,
        train,
        SCENE_MODEL_KIND,
        "scripts/train_scene_models.py",
        "override the training scenes (experiments)",
    )


if __name__ == "__main__":
    sys.exit(main())
