"""The data the shipped small models (:mod:`camscope.models.zoo`) were trained and tested on.

The data are rebuilt from the seeds recorded with each model (:func:`camscope.models.zoo.model_info`),
so they are exactly those of ``scripts/train_small_models.py``.

Example:
    >>> test = dataset("digits", split="test", limit=4)
    >>> test.images.shape, len(test.class_names)
    (torch.Size([4, 1, 32, 32]), 10)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from camscope.data.digits import load_digits_data
from camscope.data.scenes import SpeciesScenes
from camscope.data.synthetic import SyntheticSpecies
from camscope.errors import CamscopeError
from camscope.models.scene_zoo import scene_model_info
from camscope.models.zoo import model_info

__all__ = ["EvaluationData", "dataset", "scene_data"]


@dataclass
class EvaluationData:
    """A model's data: ``images`` ``[N, C, H, W]`` in ``[0, 1]``, ``labels`` ``[N]``, ``class_names``,
    and for ``"species"`` the ground truth (``part_masks`` ``[N, P, H, W]``, ``boxes`` ``[N, 4]``, the
    :class:`~camscope.data.synthetic.SpeciesBatch` as ``batch`` and its generator as ``generator``)."""

    images: Tensor
    labels: Tensor
    class_names: list[str]
    part_masks: Tensor | None = None
    boxes: Tensor | None = None
    batch: Any = None
    generator: Any = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def dataset(name: str, split: str = "test", limit: int | None = None) -> EvaluationData:
    """The data model ``name`` was trained (``split="train"``) or tested (``"test"``) on.

    The data are rebuilt from the seeds in :func:`model_info`, so they are
    exactly those of the training script. ``limit`` keeps the first images
    (for species, only those are rendered).
    """
    info = model_info(name)
    data = info["data"]
    if split not in ("train", "test"):
        raise CamscopeError(f"unknown split {split!r}: choose 'train' or 'test'")
    if name == "digits":
        digits = load_digits_data(split, size=data["size"], seed=data["seed"], test_fraction=data["test_fraction"])
        end = len(digits) if limit is None else limit
        return EvaluationData(images=digits.images[:end], labels=digits.labels[:end], class_names=digits.class_names)
    species = SyntheticSpecies(**data["generator"])
    count = int(data[f"{split}_size"]) if limit is None else min(int(limit), int(data[f"{split}_size"]))
    batch = species.sample_split(int(data[f"{split}_size"]), int(data[f"{split}_seed"]), count)
    return EvaluationData(
        images=batch.images,
        labels=batch.labels,
        class_names=list(species.class_names),
        part_masks=batch.part_masks,
        boxes=batch.boxes,
        batch=batch,
        generator=species,
    )


def scene_data(name: str, split: str = "test", limit: int | None = None) -> Any:
    """The scenes model ``name`` was trained (``split="train"``) or tested (``"test"``) on: a
    :class:`~camscope.data.scenes.SceneBatch`, rebuilt from the seeds in :func:`~camscope.models.scene_zoo.scene_model_info`
    (``limit``: only the first scenes are drawn)."""
    if split not in ("train", "test"):
        raise CamscopeError(f"unknown split {split!r}: choose 'train' or 'test'")
    data = scene_model_info(name)["data"]
    generator = SpeciesScenes(**{**data["generator"]})
    return generator.sample_split(int(data[f"{split}_size"]), int(data[f"{split}_seed"]), limit)
