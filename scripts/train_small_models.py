"""Train the small CNNs shipped in camscope/assets/models/ (digits and the synthetic species levels), on a CPU.

Usage:
    .venv/bin/python scripts/train_small_models.py                 # every model
    .venv/bin/python scripts/train_small_models.py --only species-hard --threads 2

Models: ``digits``; ``species``, ``species-medium`` and ``species-hard``, the synthetic species
at the difficulty levels ``easy``, ``medium`` and ``hard`` of ``camscope.data.synthetic.LEVELS``
(same architecture, data sizes, seeds and recipe, with 15 epochs instead of 10 for the two harder
levels; otherwise only the generator's knobs differ).

Seeded and deterministic as far as torch allows on a CPU (``torch.use_deterministic_algorithms``;
the same torch version and thread count give the same weights). Each model's file
holds its weights and JSON metadata: architecture, how to rebuild its data (seeds,
split), the training recipe and time, and the accuracy on the whole test split,
which ``tests/models/test_zoo.py`` checks against the shipped weights; the species files also
hold the share of the test errors that go to the class's most similar class, the exact command
and the per-epoch training log.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from camscope.data.digits import load_digits_data
from camscope.data.synthetic import LEVELS, SyntheticSpecies
from camscope.io import save_tensors
from camscope.models.zoo import MODEL_KIND, SmallCNN, evaluate

ASSETS = Path(__file__).resolve().parents[1] / "src" / "camscope" / "assets" / "models"

RECIPES: dict[str, dict[str, Any]] = {
    "digits": {
        "architecture": {"in_channels": 1, "num_classes": 10, "stages": [[16, 32], [64, 64]]},
        "data": {"size": 32, "seed": 0, "test_fraction": 0.25},
        "epochs": 30,
        "batch_size": 64,
        "lr": 3e-3,
        "weight_decay": 5e-4,
        "shift": 3,  # random translation (pixels, zero padding) as augmentation
        "flip": False,
        "seed": 0,
    },
    "species": {
        "architecture": {"in_channels": 3, "num_classes": 16, "stages": [[32], [64, 64]], "stem_stride": 2},
        "data": {
            "generator": {"num_classes": 16, "size": 64, "seed": 0},
            "train_seed": 1,
            "train_size": 8192,
            "test_seed": 2,
            "test_size": 2048,
        },
        "epochs": 10,
        "batch_size": 64,
        "lr": 3e-3,
        "weight_decay": 5e-4,
        "shift": 0,
        "flip": True,  # a mirrored bird is the same species facing the other way
        "seed": 0,
    },
}

#: Zoo name of the species model of each difficulty level.
SPECIES_LEVELS = {"easy": "species", "medium": "species-medium", "hard": "species-hard"}
for _level, _name in SPECIES_LEVELS.items():
    if _level != "easy":
        _data = RECIPES["species"]["data"]
        RECIPES[_name] = {
            **RECIPES["species"],
            "data": {**_data, "generator": {**_data["generator"], **LEVELS[_level]}},
            "epochs": 15,  # the harder data take longer to fit (10 epochs leave the models underfitted)
            "level": _level,
        }
RECIPES["species"]["level"] = "easy"


def _augment(images: Tensor, generator: torch.Generator, shift: int, flip: bool) -> Tensor:
    if flip:
        mirror = torch.rand(images.shape[0], generator=generator) < 0.5
        images = torch.where(mirror[:, None, None, None], images.flip(-1), images)
    if shift:
        n, _, h, w = images.shape
        padded = F.pad(images, (shift, shift, shift, shift))
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        images = _crop(padded, dy, dx, h, w)
    return images


def _crop(padded: Tensor, dy: Tensor, dx: Tensor, h: int, w: int) -> Tensor:
    n, c = padded.shape[:2]
    rows = dy[:, None] + torch.arange(h)[None]  # [n, h]
    cols = dx[:, None] + torch.arange(w)[None]  # [n, w]
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, padded.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def build_data(name: str, recipe: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor, list[str]]:
    data = recipe["data"]
    if name == "digits":
        train = load_digits_data("train", size=data["size"], seed=data["seed"], test_fraction=data["test_fraction"])
        test = load_digits_data("test", size=data["size"], seed=data["seed"], test_fraction=data["test_fraction"])
        return train.images, train.labels, test.images, test.labels, train.class_names
    species = SyntheticSpecies(**data["generator"])
    train = species.sample_split(data["train_size"], data["train_seed"])
    test = species.sample_split(data["test_size"], data["test_seed"])
    labels = species.noisy_labels(train.labels, generator=data["train_seed"])  # unchanged without label noise
    return train.images, labels, test.images, test.labels, list(species.class_names)


def error_structure(
    model: SmallCNN, name: str, recipe: dict[str, Any], test_x: Tensor, test_y: Tensor
) -> dict[str, Any]:
    """Where the test errors go: the share into the class's most similar class (species models)."""
    if name == "digits":
        return {}
    species = SyntheticSpecies(**recipe["data"]["generator"])
    with torch.no_grad():
        predicted = torch.cat([model(test_x[i : i + 256]).argmax(dim=1) for i in range(0, len(test_y), 256)])
    wrong = predicted != test_y
    similar = species.most_similar_classes()[test_y]
    into_similar = int((wrong & (predicted == similar)).sum())
    return {
        "level": recipe.get("level"),
        "test_errors": int(wrong.sum()),
        "errors_into_most_similar": into_similar,
        "error_rate_into_most_similar": into_similar / max(1, len(test_y)),
        "share_of_errors_into_most_similar": into_similar / max(1, int(wrong.sum())),
    }


def train(
    name: str, recipe: dict[str, Any], log: Any = print, command: str | None = None
) -> tuple[SmallCNN, dict[str, Any]]:
    torch.manual_seed(recipe["seed"])
    lines: list[str] = []
    console = log

    def log(message: str) -> None:
        lines.append(message)
        console(message)

    started = time.perf_counter()
    train_x, train_y, test_x, test_y, class_names = build_data(name, recipe)
    data_seconds = time.perf_counter() - started
    log(
        f"[{name}] data: {len(train_y)} train, {len(test_y)} test images {tuple(train_x.shape[1:])} in {data_seconds:.1f} s"
    )

    model = SmallCNN(**recipe["architecture"]).to(memory_format=torch.channels_last)
    epochs, batch_size = recipe["epochs"], recipe["batch_size"]
    steps_per_epoch = math.ceil(len(train_y) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe["lr"], total_steps=epochs * steps_per_epoch, pct_start=0.25
    )
    generator = torch.Generator().manual_seed(recipe["seed"])
    train_started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        total, correct, loss_sum = 0, 0, 0.0
        for step in range(steps_per_epoch):
            index = order[step * batch_size : (step + 1) * batch_size]
            x = _augment(train_x[index], generator, recipe["shift"], recipe["flip"]).contiguous(
                memory_format=torch.channels_last
            )
            y = train_y[index]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
        test_accuracy = evaluate(model, test_x, test_y)
        log(
            f"[{name}] epoch {epoch + 1}/{epochs}: loss {loss_sum / total:.3f}, train acc {correct / total:.3f}, "
            f"test acc {test_accuracy:.4f} ({time.perf_counter() - train_started:.0f} s)"
        )
    train_seconds = time.perf_counter() - train_started
    model = model.to(memory_format=torch.contiguous_format).eval()
    test_accuracy = evaluate(model, test_x, test_y)
    errors = error_structure(model, name, recipe, test_x, test_y)
    metadata = {
        "name": name,
        **errors,
        "architecture": recipe["architecture"],
        "cam_layer": SmallCNN.cam_layer,
        "input": {
            "channels": recipe["architecture"]["in_channels"],
            "size": int(train_x.shape[-1]),
            "range": [0.0, 1.0],
        },
        "data": recipe["data"],
        "class_names": class_names,
        "test_accuracy": test_accuracy,
        "test_images": len(test_y),
        "train_images": len(train_y),
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": "AdamW",
            "lr": recipe["lr"],
            "schedule": "OneCycleLR(pct_start=0.25)",
            "weight_decay": recipe["weight_decay"],
            "augmentation": {"shift": recipe["shift"], "flip": recipe["flip"]},
            "seed": recipe["seed"],
            "data_seconds": round(data_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "script": "scripts/train_small_models.py",
            "command": command or f"python scripts/train_small_models.py --only {name}",
        },
    }
    if errors:
        log(
            f"[{name}] {errors['test_errors']} test errors, {errors['errors_into_most_similar']} of them into the most "
            f"similar class ({100 * errors['share_of_errors_into_most_similar']:.0f}%)"
        )
    log(
        f"[{name}] test accuracy {test_accuracy:.4f}, {metadata['parameters']} parameters, {train_seconds:.0f} s training"
    )
    metadata["training"]["log"] = lines
    return model, metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(RECIPES), action="append", help="train only this model (repeatable)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine one thread is faster than two)",
    )
    parser.add_argument("--out", type=Path, default=ASSETS, help=f"output folder (default {ASSETS})")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (experiments)")
    parser.add_argument(
        "--train-size", type=int, default=None, help="override the species training set size (experiments)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    for name in args.only or sorted(RECIPES):
        recipe = {**RECIPES[name], "data": dict(RECIPES[name]["data"])}
        if args.epochs is not None:
            recipe["epochs"] = args.epochs
        if args.train_size is not None and name != "digits":
            recipe["data"]["train_size"] = args.train_size
        command = f"python scripts/train_small_models.py --only {name}" + "".join(
            f" --{flag} {value}"
            for flag, value, default in (
                ("threads", args.threads, 1),
                ("epochs", args.epochs, None),
                ("train-size", args.train_size, None),
            )
            if value != default
        )
        model, metadata = train(name, recipe, log=lambda message: print(message, flush=True), command=command)
        path = save_tensors(args.out / f"{name}.safetensors", model.state_dict(), metadata, kind=MODEL_KIND)
        print(f"[{name}] wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
