"""``repr(Explanation)`` is a short summary, never the tensors."""

from __future__ import annotations

import torch
from torch import nn

import camscope


def _tiny() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )


def test_repr_is_a_short_summary_with_method_layer_shapes_and_classes():
    torch.manual_seed(0)
    explanation = camscope.explain(_tiny(), torch.randn(2, 3, 16, 16), method="gradcam", layer="1", target=[2, 1])
    text = repr(explanation)
    assert len(text) < 300 and "\n" not in text and "tensor(" not in text
    for piece in ("method='gradcam'", "layer='1'", "batch=2", "raw=[2, 16, 16]", "maps=[2, 16, 16]", "classes=[2, 1]"):
        assert piece in text, (piece, text)


def test_repr_of_a_large_batch_stays_short():
    explanation = camscope.explain(_tiny(), torch.randn(20, 3, 8, 8), layer="1", target=0)
    text = repr(explanation)
    assert len(text) < 300 and "..." in text
