"""Eigen-CAM and Eigen-Grad-CAM against pytorch-grad-cam 1.5.7 and a reduced SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import EigenCAM as PeerEigenCAM
from pytorch_grad_cam import EigenGradCAM as PeerEigenGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn

import camscope
from camscope.methods.projection import first_component_projection


def _close_up_to_sign(actual: torch.Tensor, expected, rtol: float = 1e-4) -> None:
    """Per image: ``actual == +-expected`` to ``rtol`` of the largest entry."""
    expected = torch.as_tensor(np.asarray(expected), dtype=torch.float64)
    actual = actual.to(torch.float64)
    assert actual.shape == expected.shape
    for a, e in zip(actual, expected):
        scale = e.abs().max().clamp(min=1e-12)
        error = min((a - e).abs().max(), (a + e).abs().max()) / scale
        assert error < rtol, f"relative error {float(error):.3g}"


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1)


class _WideHead(nn.Module):
    """More channels (64) than positions (3 x 3): the P x P side of the decomposition."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 64, 3, stride=5, padding=1), nn.ReLU())
        self.fc = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_eigencam_matches_pytorch_grad_cam(tiny_cnn, images):
    ours = camscope.explain(tiny_cnn, images, method="eigencam", layer="features.3")
    with PeerEigenCAM(model=tiny_cnn, target_layers=[tiny_cnn.features[3]]) as cam:
        cam(input_tensor=images, targets=None)
        activations = cam.activations_and_grads.activations[0].numpy()
    _close_up_to_sign(ours.raw, get_2d_projection(activations))
    assert ours.weights is None and ours.contributions is None


def test_eigencam_more_channels_than_positions():
    torch.manual_seed(0)
    model = _WideHead().eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    ours = camscope.explain(model, x, method="eigencam", layer="features.1")
    assert ours.raw.shape == (2, 3, 3)
    _close_up_to_sign(ours.raw, get_2d_projection(model.features(x).detach().numpy()))


def test_eigengradcam_matches_pytorch_grad_cam(tiny_cnn, images):
    classes = [1, 0, 4]
    ours = camscope.explain(tiny_cnn, images, method="eigengradcam", layer="features.3", target=classes)
    layer = tiny_cnn.features[3]
    with PeerEigenGradCAM(model=tiny_cnn, target_layers=[layer]) as cam:
        targets = [ClassifierOutputTarget(c) for c in classes]
        cam(input_tensor=images, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(images, layer, targets, activations, grads, False)
    _close_up_to_sign(ours.raw, raw)
    # The sign follows the gradient-weighted activations (the HiResCAM map).
    hires = camscope.explain(tiny_cnn, images, method="hirescam", layer="features.3", target=classes)
    assert (_correlation(ours.raw, hires.raw) > 0).all()


def test_uncentred_projection_is_the_reduced_svd():
    features = torch.randn(3, 10, 6, 5, generator=torch.Generator().manual_seed(0)).relu()
    ours = first_component_projection(features, center=False)
    matrix = features.flatten(2).transpose(1, 2).double()
    _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    expected = (matrix @ vh[:, 0, :, None]).squeeze(-1).reshape(3, 6, 5)
    _close_up_to_sign(ours, expected)


@pytest.mark.parametrize("center", [True, False])
def test_sign_correlates_with_the_mean_activation(center):
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        features = torch.randn(4, 8, 7, 7, generator=generator)
        flipped = first_component_projection(-features, center=center)
        ours = first_component_projection(features, center=center)
        assert (_correlation(ours, features.mean(dim=1)) >= 0).all()
        assert (_correlation(flipped, -features.mean(dim=1)) >= 0).all()
        # Flipping the activations flips the map: the sign is not LAPACK's choice.
        torch.testing.assert_close(flipped, -ours, rtol=1e-5, atol=1e-5)


def test_no_position_by_position_decomposition_at_a_large_layer(monkeypatch):
    """A 112 x 112 layer with 64 channels decomposes a 64 x 64 Gram matrix, not a 12544 x 12544 one."""
    shapes = []
    eigh = torch.linalg.eigh

    def recording(matrix, *args, **kwargs):
        shapes.append(tuple(matrix.shape))
        return eigh(matrix, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", recording)
    features = torch.rand(2, 64, 112, 112, generator=torch.Generator().manual_seed(0))
    projection = first_component_projection(features)
    assert shapes == [(2, 64, 64)]
    assert projection.shape == (2, 112, 112) and projection.dtype == features.dtype
    # The reduced SVD of the centred matrix agrees.
    matrix = features[:1].flatten(2).transpose(1, 2).double()
    matrix = matrix - matrix.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    _close_up_to_sign(projection[:1], (matrix @ vh[:, 0, :, None]).reshape(1, 112, 112))


def test_degenerate_activations_give_finite_maps(tiny_cnn, images):
    zeros = first_component_projection(torch.zeros(2, 4, 3, 3))
    assert torch.equal(zeros, torch.zeros(2, 3, 3))
    nans = torch.rand(1, 4, 3, 3)
    nans[0, 1, 1, 1] = float("nan")
    assert torch.isfinite(first_component_projection(nans)).all()
    explanation = camscope.explain(tiny_cnn, images, method="eigencam", layer="features.3", center=False)
    assert torch.isfinite(explanation.maps).all()
    with pytest.raises(camscope.CamscopeError, match="no option"):
        camscope.explain(tiny_cnn, images, method="eigencam", layer="features.3", centre=False)


def test_volumes_and_tokens(tiny_3d, tiny_vit):
    volume = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    assert camscope.explain(tiny_3d, volume, method="eigencam", layer="features.3").raw.shape == (2, 4, 4, 4)
    image = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    explanation = camscope.explain(tiny_vit, image, method="eigengradcam", layer="blocks.1.norm1", target=1)
    assert explanation.raw.shape == (2, 4, 4) and torch.isfinite(explanation.maps).all()
