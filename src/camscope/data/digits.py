"""Real data: scikit-learn's handwritten digits, upsampled, with a fixed seeded split.

``sklearn.datasets.load_digits`` holds 1,797 grey 8x8 images of the digits 0 to 9
(values 0 to 16, bundled with scikit-learn: nothing is downloaded). They stand in
for MNIST in the DiffCAM and IFA experiments. Here they are scaled to ``[0, 1]``
(``value / 16``; background 0, ink up to 1) and upsampled bilinearly
(``align_corners=False``) to ``size`` x ``size`` (default 32).

The split is stratified and fixed: the indices of each digit are shuffled by
``random.Random(seed)`` and the first ``round(test_fraction * count)`` of them
go to the test split (default 25%: 450 test and 1,347 train images).

Example:
    >>> from camscope.data.digits import load_digits_data
    >>> test = load_digits_data("test")
    >>> test.images.shape, test.labels.shape
    (torch.Size([450, 1, 32, 32]), torch.Size([450]))
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from camscope.errors import CamscopeError, needs_extra

__all__ = ["SPLITS", "DigitsData", "load_digits_data"]

SPLITS = ("train", "test", "all")


@dataclass
class DigitsData:
    """Digits of one split.

    Attributes:
        images: ``[N, C, size, size]`` float32 in ``[0, 1]`` (``C`` = 1, or 3 copies with ``channels=3``).
        labels: ``[N]`` int64 digits 0 to 9.
        indices: ``[N]`` int64 positions in ``sklearn.datasets.load_digits()`` order.
        class_names: ``["0", ..., "9"]``.
        split, size, seed, test_fraction: how the data were made.
    """

    images: Tensor
    labels: Tensor
    indices: Tensor
    class_names: list[str]
    split: str
    size: int
    seed: int
    test_fraction: float

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def config(self) -> dict[str, Any]:
        """How the data were made (JSON-serialisable)."""
        return {"split": self.split, "size": self.size, "seed": self.seed, "test_fraction": self.test_fraction}


@lru_cache(maxsize=1)
def _raw_digits() -> tuple[Tensor, Tensor]:
    with needs_extra("reproduce", "the digits data set"):
        from sklearn.datasets import load_digits
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32) / 16.0  # [1797, 8, 8]
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    return images, labels


def split_indices(labels: Tensor, seed: int = 0, test_fraction: float = 0.25) -> tuple[Tensor, Tensor]:
    """Stratified, seeded ``(train, test)`` index tensors (each sorted)."""
    rng = random.Random(seed)
    train: list[int] = []
    test: list[int] = []
    for digit in sorted(set(labels.tolist())):
        members = (labels == digit).nonzero().flatten().tolist()
        rng.shuffle(members)
        cut = round(test_fraction * len(members))
        test.extend(members[:cut])
        train.extend(members[cut:])
    return torch.tensor(sorted(train), dtype=torch.long), torch.tensor(sorted(test), dtype=torch.long)


def load_digits_data(
    split: str = "test", size: int = 32, seed: int = 0, test_fraction: float = 0.25, channels: int = 1
) -> DigitsData:
    """scikit-learn's digits as upsampled tensors.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        size: output side in pixels (8 keeps the original resolution).
        seed: seed of the stratified split.
        test_fraction: share of each digit in the test split.
        channels: 1 (grey) or 3 (the grey image repeated, for RGB-only tools).

    Returns:
        A :class:`DigitsData`.
    """
    if split not in SPLITS:
        raise CamscopeError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if size < 8:
        raise CamscopeError(f"size must be at least 8 (the original resolution), got {size}")
    if not 0.0 < test_fraction < 1.0:
        raise CamscopeError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if channels not in (1, 3):
        raise CamscopeError(f"channels must be 1 or 3, got {channels}")
    images, labels = _raw_digits()
    if split == "all":
        indices = torch.arange(labels.shape[0])
    else:
        train, test = split_indices(labels, seed, test_fraction)
        indices = train if split == "train" else test
    selected = images[indices][:, None]
    if size != 8:
        selected = F.interpolate(selected, size=(size, size), mode="bilinear", align_corners=False)
    selected = selected.clamp(0, 1).expand(-1, channels, -1, -1).contiguous()
    return DigitsData(
        images=selected,
        labels=labels[indices].clone(),
        indices=indices,
        class_names=[str(d) for d in range(10)],
        split=split,
        size=size,
        seed=seed,
        test_fraction=test_fraction,
    )
