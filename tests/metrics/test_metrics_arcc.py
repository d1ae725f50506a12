"""ARCC and its parts (coherency, complexity) against grad-cam 1.5.7, closed forms and brute force.

Tolerances: complexity 1e-6; coherency and ARCC 1e-3 (the second map is camscope's Grad-CAM
against grad-cam's, which agree to 1e-3 relative; see tests/methods/test_gradient.py); ROAD
1e-5 (noiseless imputation).
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.metrics.arcc import ARCC, Coherency, Complexity
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import camscope
from camscope.engine.explainer import normalize_maps
from camscope.errors import CamscopeError
from camscope.metrics import arcc, coherency, complexity
from camscope.metrics.arcc import harmonic_mean

PERCENTILES = [20, 40, 60, 80]  # grad-cam's ARCC: shares of pixels kept by its ROAD


class EvidenceNet(nn.Module):
    """Positive filters summed into class 0: Grad-CAM marks the bright pixels, which carry the logit (ROAD > 0)."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.features[0].weight.copy_(torch.rand(4, 3, 3, 3, generator=generator) * 0.3)
            self.features[0].bias.zero_()
            self.fc.weight.copy_(torch.tensor([[0.4, 0.3, 0.2, 0.1], [-0.1, -0.1, -0.1, -0.1]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def _bright_squares(count: int) -> torch.Tensor:
    """Dim noise with one bright square per image."""
    images = 0.2 * torch.rand(count, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for i in range(count):
        images[i, :, 2 + 3 * i : 8 + 3 * i, 4:10] += 1.0
    return images


def _maps_without_ties(model: nn.Module, images: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Grad-CAM maps with a little noise (no plateaus: grad-cam's percentile masks and camscope's ranks agree), in [0, 1]."""
    gradcam = camscope.explain(model, images, "gradcam", layer="features.1", target=classes).maps
    jitter = torch.rand(gradcam.shape, generator=torch.Generator().manual_seed(0))
    return normalize_maps(0.9 * gradcam + 0.1 * jitter)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 warns inside grad-cam's np.percentile on tensors
def test_arcc_and_its_parts_match_grad_cam(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytorch_grad_cam.metrics import road as peer_road

    monkeypatch.setattr(peer_road.NoisyLinearImputer.__init__, "__defaults__", (0.0, peer_road.neighbors_weights))
    model, images, classes = EvidenceNet().eval(), _bright_squares(3), [0, 0, 0]
    maps = _maps_without_ties(model, images, classes)
    # grad-cam's ARCC explains and scores with the same targets: logits, as camscope's Grad-CAM explains them
    cams, targets = maps.numpy(), [ClassifierOutputTarget(c) for c in classes]
    removed = [int((cams[0] >= np.percentile(cams[0], q)).sum()) for q in PERCENTILES]
    fractions = [r / 256 for r in removed]

    options = dict(method="gradcam", layer="features.1", percentages=fractions, score="logit", noise=0.0, tie_break=0.0)
    ours = arcc(model, images, maps, classes, **options)
    with GradCAM(model=model, target_layers=[model.features[1]]) as base:
        peer_coherency = Coherency()(images, cams, targets, model, base)
        peer_arcc = ARCC(base, road_percentiles=PERCENTILES)(images, cams, targets, model)
    np.testing.assert_allclose(ours["complexity"].numpy(), Complexity()(cams), atol=1e-6)
    np.testing.assert_allclose(ours["coherency"].numpy(), peer_coherency, atol=1e-3)
    road = peer_road.ROADCombined(percentiles=PERCENTILES)(images, cams, targets, model)
    np.testing.assert_allclose(ours["road"].numpy(), road, atol=1e-5)
    assert bool(((ours["road_scaled"] > 0.05) & (ours["road_scaled"] < 1)).all())  # no part clipped: a real mean
    np.testing.assert_allclose(ours["arcc"].numpy(), peer_arcc, atol=1e-3)


def test_arcc_is_the_harmonic_mean_of_its_parts() -> None:
    """The paper's harmonic mean (not the geometric mean grad-cam's docstring names), from the result's own parts."""
    model, images = EvidenceNet().eval(), _bright_squares(3)
    explanation = camscope.explain(model, images, layer="features.1", target=0)
    result = arcc(model, images, explanation, score="logit", percentages=(0.25, 0.75))
    for i in range(len(images)):
        parts = [float(result["coherency"][i]), 1 - float(result["complexity"][i]), float(result["road_scaled"][i])]
        assert min(parts) > 0.05 and max(parts) - min(parts) > 0.1  # where the harmonic and geometric means differ
        assert float(result["arcc"][i]) == pytest.approx(statistics.harmonic_mean(parts), rel=1e-5)
        assert float(result["arcc"][i]) != pytest.approx(statistics.geometric_mean(parts), rel=1e-3)
    assert harmonic_mean(torch.tensor([[1.0, 0.5, 0.25]])).item() == pytest.approx(3 / 7)  # geometric: 0.5
    assert harmonic_mean(torch.tensor([[0.9, 0.0, 0.3]])).item() == 0.0
    assert result.params["method"] == "gradcam"


def test_coherency_brute_force_and_defaults(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    """ρ of the map and the map of the masked image, written out with numpy; maps=None explains first."""
    classes = [1, 0, 2]
    explanation = camscope.explain(tiny_cnn, images, "gradcampp", layer="features.3", target=classes)
    ours = coherency(tiny_cnn, images, explanation)  # the Explanation's method, layer and classes
    again = camscope.explain(
        tiny_cnn, images * explanation.maps[:, None], "gradcampp", layer="features.3", target=classes
    )
    for i in range(len(images)):
        rho = np.corrcoef(explanation.maps[i].flatten().numpy(), again.maps[i].flatten().numpy())[0, 1]
        assert float(ours["pearson"][i]) == pytest.approx(rho, abs=1e-5)
        assert float(ours["coherency"][i]) == pytest.approx((rho + 1) / 2, abs=1e-5)
    computed = coherency(tiny_cnn, images, None, classes, method="gradcampp", layer="features.3")
    torch.testing.assert_close(computed["coherency"], ours["coherency"])
    constant = coherency(tiny_cnn, images, torch.ones(3, 16, 16), classes, layer="features.3")
    assert torch.equal(constant["coherency"], torch.full((3,), 0.5))  # a constant map has no correlation


def test_complexity_closed_form() -> None:
    maps = torch.tensor([[[0.0, 1.0], [0.25, 0.75]], [[2.0, 2.0], [2.0, 6.0]]])
    torch.testing.assert_close(complexity(maps)["complexity"], torch.tensor([0.5, 0.25]))  # [0,1,.25,.75]; [0,0,0,1]
    torch.testing.assert_close(complexity(maps, normalize=False)["complexity"], torch.tensor([0.5, 3.0]))


def test_arcc_errors(tiny_cnn: nn.Module, images: torch.Tensor, tiny_3d: nn.Module) -> None:
    with pytest.raises(CamscopeError, match=r"mask images \[B, C, H, W\]"):
        coherency(tiny_3d, torch.randn(2, 1, 8, 8, 8), torch.rand(2, 8, 8, 8))
    with pytest.raises(CamscopeError, match="unknown method"):
        arcc(tiny_cnn, images, torch.rand(3, 16, 16), method="gradcamx")
    with pytest.raises(CamscopeError, match="percentages"):
        arcc(tiny_cnn, images, torch.rand(3, 16, 16), layer="features.3", percentages=(1.5,))
