"""A model that produces NaN after the layer never yields a map: every method says so or stays exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camscope
from camscope.errors import CamscopeError
from camscope.methods.attention import AttentionMethod

# The attention methods need a transformer: tests/methods/test_attention_robustness.py poisons one.
CNN_METHODS = sorted(name for name, cls in camscope.available_methods().items() if not issubclass(cls, AttentionMethod))


class _NaNAfterTheLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        return self.fc((a / (a - a)).mean(dim=(2, 3)))  # 0 / 0 after the layer


@pytest.mark.parametrize("method", CNN_METHODS)
def test_nan_after_the_layer_is_an_error_or_an_exact_map(method: str) -> None:
    torch.manual_seed(0)
    model = _NaNAfterTheLayer().eval()
    x = torch.rand(2, 3, 8, 8)
    options: dict = {"reference": torch.rand(4, 3, 8, 8)} if method == "diffcam" else {}
    if method.startswith("finer"):
        options["references"] = [1]
    if method in {"cam", "eigencam", "diffcam", "kpcacam", "fem", "randomcam"}:
        # These read the activations (and CAM the classifier's weights), not the NaN scores: exact maps.
        explanation = camscope.explain(model, x, method=method, layer="conv", target=[0, 2], **options)
    else:
        with pytest.raises(CamscopeError, match="not finite"):
            camscope.explain(model, x, method=method, layer="conv", target=[0, 2], **options)
        return
    assert bool(torch.isfinite(explanation.raw).all()) and bool(torch.isfinite(explanation.maps).all())
