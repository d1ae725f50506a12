"""Comparing two analyses whose classes differ: the absent classes are named, never printed as a wall of NaN."""

from __future__ import annotations

import math

import torch

from camscope.analyses.ifa import Analysis


def _synthetic(matrix: torch.Tensor, counts: list[int]) -> Analysis:
    features, classes = matrix.shape
    analysis = Analysis(method="gradcam", layer="layer", num_features=features, num_classes=classes)
    analysis.class_counts = torch.tensor(counts)
    analysis.im_sum = matrix.double() * analysis.class_counts
    return analysis


def test_classes_present_on_one_side_only_are_named_and_left_out():
    matrix = torch.rand(4, 1000, generator=torch.Generator().manual_seed(0))
    train_counts, test_counts = [0] * 1000, [0] * 1000
    for c in (3, 5, 7):
        train_counts[c] = test_counts[c] = 2
    train_counts[11] = 1  # only in the first
    test_counts[13] = test_counts[17] = 1  # only in the second
    comparison = _synthetic(matrix, train_counts).compare(_synthetic(matrix * 0.9, test_counts))
    assert comparison.classes.tolist() == [3, 5, 7]
    assert comparison.only_first.tolist() == [11] and comparison.only_second.tolist() == [13, 17]
    assert sorted(comparison.by_class()) == [3, 5, 7]
    assert all(math.isfinite(d) and math.isfinite(r) for d, r in comparison.by_class().values())
    for text in (repr(comparison), str(comparison)):
        assert "nan" not in text.lower() and len(text) < 400, text
    assert "only in the first=1, only in the second=2" in repr(comparison)
    assert "1 class only in the first dataset, not compared: 11" in str(comparison)
    assert "2 classes only in the second dataset, not compared: 13, 17" in str(comparison)
