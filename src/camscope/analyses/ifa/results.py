"""What the analyses of an importance matrix return: overfitting, redundancy, outliers, confounders."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Comparison", "Confounder", "Outlier", "Redundancy"]


@dataclass
class Comparison:
    """Importance matrices of two datasets (e.g. train vs test): overfitting.

    Attributes:
        feature_difference: ``[K]`` mean over the common classes of ``IM_a - IM_b``
            (positive: the feature is more active on the first dataset).
        class_difference: ``[C]`` per class ``||IM_a[:, c] - IM_b[:, c]|| / ||IM_a[:, c]||``
            (NaN for a class missing from either dataset: :meth:`by_class` leaves them out).
        class_correlation: ``[C]`` Pearson correlation of the two columns (NaN likewise).
        summary: ``||IM_a - IM_b||_F / ||IM_a||_F`` over the common classes: 0 for
            identical matrices; the paper reads a large value as overfitting.
        classes: the common classes (samples in both datasets): the only ones compared.
        top_features: the features with the largest positive ``feature_difference``.
        only_first: classes with samples in the first dataset only (not compared).
        only_second: classes with samples in the second dataset only (not compared).
    """

    feature_difference: Tensor
    class_difference: Tensor
    class_correlation: Tensor
    summary: float
    classes: Tensor
    top_features: list[int]
    only_first: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    only_second: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def by_class(self) -> dict[int, tuple[float, float]]:
        """``{class: (difference, correlation)}`` for the compared classes only (no NaN for absent ones)."""
        return {
            int(c): (float(self.class_difference[c]), float(self.class_correlation[c])) for c in self.classes.tolist()
        }

    def __str__(self) -> str:
        return (
            f"relative difference of the importance matrices: {self.summary:.3f} over {len(self.classes)} classes; "
            f"features more active on the first dataset: {self.top_features[:5]}"
            + _absent("first", self.only_first)
            + _absent("second", self.only_second)
        )

    def __repr__(self) -> str:
        """A summary (never the ``[C]`` tensors, whose absent classes are NaN)."""
        return (
            f"Comparison(summary={self.summary:.4g}, classes compared={len(self.classes)}, "
            f"only in the first={len(self.only_first)}, only in the second={len(self.only_second)}, "
            f"top_features={self.top_features[:5]})"
        )


def _absent(which: str, classes: Tensor) -> str:
    """``; 2 classes only in the first dataset, not compared: 3, 7`` (at most 8 listed; '' for none)."""
    if not len(classes):
        return ""
    listed = ", ".join(str(int(c)) for c in classes[:8]) + (", ..." if len(classes) > 8 else "")
    count = f"{len(classes)} class" if len(classes) == 1 else f"{len(classes)} classes"
    return f"; {count} only in the {which} dataset, not compared: {listed}"


@dataclass
class Redundancy:
    """Features rarely activated for any class ("lazy" features that could be pruned).

    Attributes:
        share: the fraction of lazy features.
        lazy: ``[K]`` bool, ``strength <= threshold * strength.max()``.
        strength: ``[K]`` the largest ``|IM[f, c]|`` over classes.
        threshold: the relative threshold used.
    """

    share: float
    lazy: Tensor
    strength: Tensor
    threshold: float


@dataclass
class Outlier:
    """A sample whose feature profile departs from its class's column of the importance matrix."""

    index: int
    label: int
    prediction: int
    cls: int
    distance: float


@dataclass
class Confounder:
    """A class dominated by very few features: a confounder candidate to check visually (FS-CAM of them).

    Attributes:
        cls: the class.
        features: its top features, by importance.
        share: the share of the column's positive importance they hold.
        effective_features: ``(sum p)^2 / sum p^2`` of the positive importances ``p``:
            1 when a single feature holds everything.
    """

    cls: int
    features: list[int]
    share: float
    effective_features: float
