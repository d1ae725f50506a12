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

import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import training
from torch import Tensor

from camscope.data.digits import load_digits_data
from camscope.data.synthetic import LEVELS, SyntheticSpecies
from camscope.models.zoo import MODEL_KIND, SmallCNN, evaluate

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
        images = training.mirrored(images, training.coin_flips(images.shape[0], generator))
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
        predicted = torch.cat(training.batched(lambda x: model(x).argmax(dim=1), test_x))
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
    note = training.Notes(log)
    started = time.perf_counter()
    train_x, train_y, test_x, test_y, class_names = build_data(name, recipe)
    data_seconds = time.perf_counter() - started
    note(
        f"[{name}] data: {len(train_y)} train, {len(test_y)} test images {tuple(train_x.shape[1:])} in {data_seconds:.1f} s"
    )

    model = SmallCNN(**recipe["architecture"]).to(memory_format=torch.channels_last)

    def step(index: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        x = _augment(train_x[index], generator, recipe["shift"], recipe["flip"]).contiguous(
            memory_format=torch.channels_last
        )
        y = train_y[index]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        return loss, {
            "images": len(y),
            "correct": int((logits.argmax(1) == y).sum()),
            "loss": float(loss.detach()) * len(y),
        }

    def end(epoch: int, sums: dict[str, float], elapsed: Callable[[], float]) -> None:
        note(
            f"[{name}] epoch {epoch + 1}/{recipe['epochs']}: loss {sums['loss'] / sums['images']:.3f}, "
            f"train acc {sums['correct'] / sums['images']:.3f}, test acc {evaluate(model, test_x, test_y):.4f} "
            f"({elapsed():.0f} s)"
        )

    train_seconds = training.fit(model, recipe, len(train_y), step, 0.25, end)
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
        "training": training.record(
            recipe,
            0.25,
            {"shift": recipe["shift"], "flip": recipe["flip"]},
            (data_seconds, train_seconds),
            "scripts/train_small_models.py",
            command or f"python scripts/train_small_models.py --only {name}",
            note.lines,
        ),
    }
    if errors:
        note(
            f"[{name}] {errors['test_errors']} test errors, {errors['errors_into_most_similar']} of them into the most "
            f"similar class ({100 * errors['share_of_errors_into_most_similar']:.0f}%)"
        )
    note(
        f"[{name}] test accuracy {test_accuracy:.4f}, {metadata['parameters']} parameters, {train_seconds:.0f} s training"
    )
    return model, metadata


def main(argv: list[str] | None = None) -> int:
    return training.main_over_recipes(
        __doc__,
        argv,
        RECIPES,
        train,
        MODEL_KIND,
        "scripts/train_small_models.py",
        "override the species training set size (experiments)",
        resizable=lambda name: name != "digits",
    )


if __name__ == "__main__":
    sys.exit(main())
