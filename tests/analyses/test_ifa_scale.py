"""The common intensity scale of S-CAMs: TanhScale, Analysis.scale, explain(scale=...), consistency."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import camscope
from camscope.analyses.ifa import TanhScale
from camscope.errors import CamscopeError
from camscope.metrics import consistency
from camscope.metrics.consistency import correlate


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dataset(batches: int = 3, batch: int = 6, classes: int = 5, size: int = 16, seed: int = 0):
    g = _generator(seed)
    return [
        (torch.randn(batch, 3, size, size, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(batches)
    ]


def test_tanh_scale_is_exact_at_the_references_and_monotonic():
    scale = TanhScale.fit(-0.3, 2.0)
    values = scale(torch.tensor([-0.3, 2.0], dtype=torch.float64))
    torch.testing.assert_close(values, torch.tensor([0.1, 0.9], dtype=torch.float64), rtol=0, atol=1e-12)
    # b as METHODS.md restates it: (P90 atanh(0.1) - P10 atanh(0.9)) / (P90 - P10).
    assert scale.b == pytest.approx((2.0 * math.atanh(0.1) - (-0.3) * math.atanh(0.9)) / 2.3)
    grid = torch.linspace(-50, 50, 10_001, dtype=torch.float64)
    mapped = scale(grid)
    assert bool((mapped[1:] >= mapped[:-1]).all()) and bool((mapped.abs() < 1).all() | (mapped.abs() == 1).any())
    assert bool((mapped[4000:6001].diff() > 0).all())  # strictly increasing where tanh is not saturated
    torch.testing.assert_close(scale.inverse(scale(grid[4000:6001])), grid[4000:6001])
    other = TanhScale.fit(1.0, 5.0, 0.05, 0.95)
    torch.testing.assert_close(
        other(torch.tensor([1.0, 5.0], dtype=torch.float64)), torch.tensor([0.05, 0.95], dtype=torch.float64)
    )
    with pytest.raises(CamscopeError, match="distinct"):
        TanhScale.fit(1.0, 1.0)
    with pytest.raises(CamscopeError, match="targets"):
        TanhScale.fit(0.0, 1.0, 0.9, 0.1)


def test_analysis_scales_use_the_percentiles_and_the_image_extremes(tiny_cnn):
    data = _dataset()
    analysis = camscope.analyze(tiny_cnn, data, layer="features.2")
    raws = torch.cat([camscope.explain(tiny_cnn, x, layer="features.2").raw for x, _ in data])
    p10, p90 = np.percentile(raws.double().numpy(), [10, 90])
    scale = analysis.scale()
    assert (scale.low, scale.high) == pytest.approx((p10, p90), abs=1e-3 * float(raws.max() - raws.min()))
    torch.testing.assert_close(
        scale(torch.tensor([scale.low, scale.high], dtype=torch.float64)), torch.tensor([0.1, 0.9], dtype=torch.float64)
    )
    extremes = analysis.scale("image-extremes")
    maxima, minima = raws.flatten(1).amax(1).double().numpy(), raws.flatten(1).amin(1).double().numpy()
    span = float(raws.max() - raws.min())
    assert extremes.high == pytest.approx(np.percentile(maxima, 90), abs=1e-3 * span)
    assert extremes.low == pytest.approx(np.percentile(minima, 50), abs=1e-3 * span)
    assert (extremes.low_target, extremes.high_target, extremes.kind) == (0.05, 0.95, "image-extremes")
    custom = analysis.scale(percentiles=(25, 75), targets=(0.2, 0.8))
    assert custom.low == pytest.approx(np.percentile(raws.double().numpy(), 25), abs=1e-3 * span)
    with pytest.raises(CamscopeError, match="kind"):
        analysis.scale("minmax")


def test_explain_with_scale_gives_signed_s_cams(strided_cnn, images):
    data = _dataset(classes=4)
    analysis = camscope.analyze(strided_cnn, data, layer="stage")
    scale = analysis.scale()
    explanation = camscope.explain(strided_cnn, images, layer="stage", scale=analysis)
    expected = torch.tanh(scale.a * camscope.engine.explainer.upsample(explanation.raw, images.shape[2:]) + scale.b)
    torch.testing.assert_close(explanation.maps, expected)
    # Signed, in (-1, 1), comparable across images; negative evidence is kept below sigma(0) = tanh(b).
    up = camscope.engine.explainer.upsample(explanation.raw, images.shape[2:])
    assert bool((explanation.maps.abs() < 1).all()) and bool((up < 0).any())
    assert bool((explanation.maps[up < 0] < math.tanh(scale.b)).all())
    # A scale object works too; FS and S combine (FS-S-Grad-CAM).
    mask = analysis.principal_features(0.25, cls=explanation.classes)
    both = camscope.explain(strided_cnn, images, layer="stage", scale=scale, features=mask)
    fs = camscope.explain(strided_cnn, images, layer="stage", features=mask)
    torch.testing.assert_close(both.raw, fs.raw)
    torch.testing.assert_close(both.maps, scale(camscope.engine.explainer.upsample(fs.raw, images.shape[2:])))
    # The plain explanation is unchanged by the new keyword.
    torch.testing.assert_close(
        camscope.explain(strided_cnn, images, layer="stage").maps,
        camscope.explain(strided_cnn, images, layer="stage", scale=None).maps,
    )
    with pytest.raises(CamscopeError, match="method"):
        camscope.explain(strided_cnn, images, method="gradcampp", layer="stage", scale=analysis)
    with pytest.raises(CamscopeError, match="layer"):
        camscope.explain(strided_cnn, images, layer="stem", scale=analysis)
    with pytest.raises(CamscopeError, match="single layer"):
        camscope.explain(strided_cnn, images, layer=["stem", "stage"], scale=TanhScale.fit(0, 1))
    with pytest.raises(CamscopeError, match="scale="):
        camscope.explain(strided_cnn, images, layer="stage", scale="p90")


class BlobNet(nn.Module):
    """Positive filters, ReLU, global pooling: the class-0 logit grows with the blob's contrast."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.rand(4, 1, 3, 3, generator=_generator(10)) / 9)
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[1.0, 0.5, 2.0, 1.5], [-1.0, -0.5, -2.0, -1.5]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def _blobs(n: int, seed: int) -> torch.Tensor:
    """One Gaussian blob per image at a random place, contrast U(0.2, 2), on faint noise."""
    g = _generator(seed)
    grid = torch.arange(16.0)
    centre = 4 + 8 * torch.rand(n, 2, generator=g)
    amplitude = 0.2 + 1.8 * torch.rand(n, generator=g)
    yy = (grid[None, :, None] - centre[:, 0, None, None]) ** 2
    xx = (grid[None, None, :] - centre[:, 1, None, None]) ** 2
    blob = amplitude[:, None, None] * torch.exp(-(yy + xx) / 8)
    return (blob + 0.05 * torch.randn(n, 16, 16, generator=g))[:, None]


def test_s_gradcam_is_more_consistent_with_the_logits_than_gradcam():
    # What this shows, honestly: per-image min-max scaling removes the activation
    # level, so the sum of a Grad-CAM map hardly depends on how strongly the model
    # responds; a common tanh scale keeps the level. On this dataset the class-0
    # logit is a monotone function of each image's blob contrast and the blob's
    # shape does not change, which is the situation where the paper's claim should
    # hold. It is a check of the mechanism, not evidence on natural images.
    model = BlobNet().eval()
    calibration = _blobs(200, seed=11)
    analysis = camscope.analyze(model, calibration, layer="conv", batch_size=50)
    test = _blobs(150, seed=12)
    plain, scaled = consistency(model, test, layer="conv", target=0, scale=[None, analysis], batch_size=50)
    assert plain.name == "gradcam" and scaled.name == "S-gradcam"
    assert torch.equal(plain.logits, scaled.logits) and plain.logits.numel() == 150
    assert scaled.coefficient > 0.9
    assert scaled.coefficient > plain.coefficient + 0.5  # Grad-CAM sums even fall as the contrast rises (noise share)
    assert scaled.probability.coefficient > plain.probability.coefficient
    # The reported coefficient is the one the normality test chose.
    expected = correlate(scaled.cam_sums, scaled.logits)
    assert scaled.logit.coefficient == expected.coefficient
    # FS-S variant: the principal features of a single-class problem.
    mask = analysis.principal_features(0.5)
    fs = consistency(model, test, layer="conv", target=0, scale=analysis, features=mask, batch_size=50)
    assert fs.name == "FS-S-gradcam" and fs.coefficient > 0.9
