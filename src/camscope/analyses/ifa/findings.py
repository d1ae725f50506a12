"""The paper's analyses of importance matrices: overfitting, redundancy, outliers and confounder candidates.

Each function reads an :class:`~camscope.analyses.ifa.Analysis` (its importance
matrix ``IM [features, classes]``, see :meth:`Analysis.matrix`) and returns one of
the results of :mod:`camscope.analyses.ifa.results`; the methods of the same
names on :class:`Analysis` call them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from camscope.analyses.ifa.results import Comparison, Confounder, Outlier, Redundancy
from camscope.errors import CamscopeError

if TYPE_CHECKING:
    from camscope.analyses.ifa.analysis import Analysis

__all__ = ["check_compatible", "compare", "confounders", "outliers", "redundancy"]


def check_compatible(first: Analysis, other: object, what: str) -> None:
    """Raise unless ``other`` is an analysis of the same method, layer, features and classes."""
    from camscope.analyses.ifa.analysis import Analysis

    if not isinstance(other, Analysis):
        raise CamscopeError(f"can only {what} another Analysis, got {type(other).__name__}")
    mine = (first.method, first.layer, first.num_features, first.num_classes)
    theirs = (other.method, other.layer, other.num_features, other.num_classes)
    if mine != theirs:
        raise CamscopeError(
            f"cannot {what} analyses of different settings (method, layer, features, classes): {mine} vs {theirs}"
        )


def compare(first: Analysis, other: Analysis, source: str = "true", top: int = 10) -> Comparison:
    """Compare two datasets' analyses (``first`` e.g. train, ``other`` test) for overfitting.

    ``summary = ||IM_a - IM_b||_F / ||IM_a||_F`` over the classes both have samples of.
    """
    check_compatible(first, other, "compare with")
    mine, theirs = first.present_classes(source), other.present_classes(source)
    common = mine & theirs
    if not bool(common.any()):
        raise CamscopeError("the two analyses share no class with samples: nothing to compare")
    a, b = first.matrix(source).double(), other.matrix(source).double()
    difference = a - b
    feature_difference = difference[:, common].mean(dim=1)
    column_norm = a.norm(dim=0)
    class_difference = difference.norm(dim=0) / torch.where(column_norm > 0, column_norm, torch.ones_like(column_norm))
    class_difference = torch.where(common, class_difference, torch.full_like(class_difference, math.nan))
    ac, bc = a - a.mean(0), b - b.mean(0)
    denominator = ac.norm(dim=0) * bc.norm(dim=0)
    correlation = (ac * bc).sum(0) / torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    correlation = torch.where(common & (denominator > 0), correlation, torch.full_like(correlation, math.nan))
    total = a[:, common].norm()
    summary = float(difference[:, common].norm() / total) if float(total) > 0 else 0.0
    order = torch.sort(-feature_difference, stable=True).indices[:top]
    return Comparison(
        feature_difference=feature_difference.float(),
        class_difference=class_difference.float(),
        class_correlation=correlation.float(),
        summary=summary,
        classes=torch.nonzero(common).flatten(),
        top_features=order.tolist(),
        only_first=torch.nonzero(mine & ~theirs).flatten(),
        only_second=torch.nonzero(theirs & ~mine).flatten(),
    )


def redundancy(analysis: Analysis, threshold: float = 0.05, source: str = "true") -> Redundancy:
    """Features rarely activated for any class: ``max_c |IM[f, c]| <= threshold * max_f max_c |IM[f, c]|``."""
    present = analysis.present_classes(source)
    if not bool(present.any()):
        raise CamscopeError("the importance matrix is empty: no sample was analysed with a class")
    strength = analysis.matrix(source)[:, present].abs().amax(dim=1)
    lazy = strength <= threshold * strength.max()
    return Redundancy(share=float(lazy.float().mean()), lazy=lazy, strength=strength, threshold=threshold)


def outliers(analysis: Analysis, k: int = 10, metric: str = "cosine") -> list[Outlier]:
    """The ``k`` samples whose feature profile departs most from their class's importance column.

    Args:
        analysis: an analysis run with ``profiles=True``.
        k: how many.
        metric: ``"cosine"`` (``1 - cos``: a different pattern of features,
            whatever the activation level) or ``"relative"``
            (``||profile - column|| / ||column||``: pattern and level).
    """
    profiles, labels = analysis.profiles, analysis.profile_labels
    predictions, ids = analysis.profile_predictions, analysis.profile_ids
    if profiles is None or labels is None or predictions is None or ids is None:
        raise CamscopeError("outliers need the per-sample feature profiles: run analyze(..., profiles=True)")
    classes = torch.where(labels >= 0, labels, predictions)
    columns = analysis.importance.T[classes].double()
    profiles = profiles.double()
    if metric == "cosine":
        distance = 1 - F.cosine_similarity(profiles, columns, dim=1, eps=1e-12)
    elif metric == "relative":
        distance = (profiles - columns).norm(dim=1) / columns.norm(dim=1).clamp(min=1e-12)
    else:
        raise CamscopeError(f"unknown outlier metric {metric!r}: use 'cosine' or 'relative'")
    order = torch.sort(-distance, stable=True).indices[: max(0, k)]
    return [
        Outlier(int(ids[i]), int(labels[i]), int(predictions[i]), int(classes[i]), float(distance[i])) for i in order
    ]


def confounders(
    analysis: Analysis, top: int | None = None, share: float = 0.5, source: str = "true"
) -> list[Confounder]:
    """Confounder candidates: classes where ``top`` features hold at least ``share`` of the positive importance.

    The paper: a confounder gives "extremely high values for some specific
    features and relatively low values for all other features". These are
    candidates to check with an FS-CAM of just those features, not verdicts.

    Args:
        analysis: the analysis.
        top: how many features may dominate (default ``max(1, ceil(1% of K))``).
        share: the share of the column's positive importance they must hold.
        source: ``"true"`` (Eq. 4) or ``"all"`` (Eq. 3).

    Returns:
        The flagged classes, most dominated first.
    """
    top = top or max(1, math.ceil(0.01 * analysis.num_features))
    positive = analysis.matrix(source).double().clamp(min=0)
    present = analysis.present_classes(source)
    total = positive.sum(dim=0)
    values, indices = torch.sort(positive, dim=0, descending=True, stable=True)
    held = values[:top].sum(dim=0) / torch.where(total > 0, total, torch.ones_like(total))
    effective = total**2 / (positive**2).sum(dim=0).clamp(min=1e-300)
    flagged = present & (total > 0) & (held >= share)
    found = [
        Confounder(int(c), indices[:top, c].tolist(), float(held[c]), float(effective[c]))
        for c in torch.nonzero(flagged).flatten()
    ]
    return sorted(found, key=lambda item: -item.share)
