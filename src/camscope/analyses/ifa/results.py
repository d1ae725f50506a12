"""What the analyses of an importance matrix return: overfitting, redundancy, outliers, confounders."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["Comparison", "Confounder", "Outlier", "Redundancy"]


@dataclass
class Comparison:
    """Importance matrices of two datasets (e.g. train vs test): overfitting.

    Attributes:
        feature_difference: ``[K]`` mean over the common classes of ``IM_a - IM_b``
            (positive: the feature is more active on the first dataset).
        class_difference: ``[C]`` per class ``||IM_a[:, c] - IM_b[:, c]|| / ||IM_a[:, c]||``
            (NaN for a class missing from either dataset).
        class_correlation: ``[C]`` Pearson correlation of the two columns.
        summary: ``||IM_a - IM_b||_F / ||IM_a||_F`` over the common classes: 0 for
            identical matrices; the paper reads a large value as overfitting.
        classes: the common classes.
        top_features: the features with the largest positive ``feature_difference``.
    """

    feature_difference: Tensor
    class_difference: Tensor
    class_correlation: Tensor
    summary: float
    classes: Tensor
    top_features: list[int]

    def __str__(self) -> str:
        return (
            f"relative difference of the importance matrices: {self.summary:.3f} over {len(self.classes)} classes; "
            f"features more active on the first dataset: {self.top_features[:5]}"
        )


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
