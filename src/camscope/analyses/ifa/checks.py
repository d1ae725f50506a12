"""Checks of a loaded analysis: the settings' types and the tensors' shapes, values and counts.

A saved or checkpointed :class:`~camscope.analyses.ifa.Analysis` is trusted only
after these checks, so loading either gives a consistent analysis or raises a
:class:`~camscope.errors.CamscopeError` saying what is wrong.

Example:
    >>> check_settings({"method": "gradcam", "layer": "layer4", "num_features": 8, "num_classes": 3,
    ...                 "explain": "predicted", "percentiles": [10, 90], "n_samples": 0})
    >>> check_settings({"method": "gradcam", "layer": "layer4", "num_features": "8", "num_classes": 3})
    Traceback (most recent call last):
    ...
    camscope.errors.CamscopeError: num_features must be an integer >= 1, got '8'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from camscope.errors import CamscopeError
from camscope.io import checked_float, checked_int, checked_tensor

if TYPE_CHECKING:
    from camscope.analyses.ifa.analysis import Analysis

__all__ = ["check_settings", "check_tensors"]


def check_settings(settings: Mapping[str, Any], *, header: bool = False) -> None:
    """Raise a :class:`CamscopeError` unless the analysis settings (a file's ``header`` or a state dict) have valid types."""
    for name in ("method", "layer"):
        if not isinstance(settings[name], str):
            raise CamscopeError(f"{name} must be a name, got {settings[name]!r}")
    checked_int(settings["num_features"], "num_features", minimum=1)
    checked_int(settings["num_classes"], "num_classes", minimum=1)
    if "explain" in settings and settings["explain"] not in ("predicted", "true"):
        raise CamscopeError(f"explain must be 'predicted' or 'true', got {settings['explain']!r}")
    if "n_samples" in settings:
        checked_int(settings["n_samples"], "n_samples", minimum=0)
    if "percentiles" in settings:
        percentiles = settings["percentiles"]
        if not isinstance(percentiles, (list, tuple)) or len(percentiles) != 2:
            raise CamscopeError(f"percentiles must be two numbers, got {percentiles!r}")
        for value in percentiles:
            if not 0 <= checked_float(value, "a percentile") <= 100:
                raise CamscopeError(f"percentiles must lie in [0, 100], got {percentiles!r}")
    if not isinstance(settings.get("info", {}), dict):
        raise CamscopeError(f"info must be a mapping, got {settings['info']!r}")
    for name in ("profiles",) if header else ("keep_profiles",):
        if name in settings and not isinstance(settings[name], bool):
            raise CamscopeError(f"{name} must be true or false, got {settings[name]!r}")


def check_tensors(analysis: Analysis) -> None:
    """Check (and bring to their dtypes) the tensors of ``analysis``; raise a :class:`CamscopeError` if inconsistent."""
    k, c, n = analysis.num_features, analysis.num_classes, analysis.n_samples
    analysis.im_sum = checked_tensor(analysis.im_sum, "im_sum", [k, c], torch.float64)
    if analysis.im_all_sum is not None:
        analysis.im_all_sum = checked_tensor(analysis.im_all_sum, "im_all_sum", [k, c], torch.float64)
    analysis.class_counts = checked_tensor(analysis.class_counts, "class_counts", [c], torch.int64, nonnegative=True)
    for name in ("labelled", "correct", "stand_ins"):
        setattr(analysis, name, checked_tensor(getattr(analysis, name), name, [], torch.int64, nonnegative=True))
    labelled, correct, stand_ins = int(analysis.labelled), int(analysis.correct), int(analysis.stand_ins)
    if not (correct <= labelled <= n and stand_ins <= n and int(analysis.class_counts.sum()) <= n):
        raise CamscopeError(
            f"inconsistent counts: {n} samples, {labelled} labelled, {correct} correct, {stand_ins} stand-ins, "
            f"{int(analysis.class_counts.sum())} in the class counts"
        )
    images = (int(analysis.image_max.count), int(analysis.image_min.count))
    if images != (n, n) or int(analysis.moments.count) != int(analysis.values.count):
        raise CamscopeError(
            f"inconsistent counts: {n} samples but {images} per-image extremes, or "
            f"{int(analysis.values.count)} values but moments of {int(analysis.moments.count)}"
        )
    for name, matrix in (("im_sum", analysis.importance), ("im_all_sum", analysis.importance_all)):
        if matrix is not None and not bool(matrix.isfinite().all()):
            raise CamscopeError(f"{name} holds values too large for the (float32) importance matrix")
    if not all(math.isfinite(float(t)) for t in (analysis.moments.mean, analysis.moments.m2)):
        raise CamscopeError("the moments hold NaN or infinite values")
    profiles = analysis.profiles
    if profiles is not None:
        rows = checked_tensor(profiles, "profiles", [-1, k], torch.float32).shape[0]
        for name in ("profile_labels", "profile_predictions", "profile_ids"):
            checked_tensor(getattr(analysis, name), name, [rows], torch.int64)
