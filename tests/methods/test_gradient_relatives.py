"""Grad-CAM Element-Wise and ShapleyCAM against pytorch-grad-cam 1.5.7, brute-force Hessians and exact Shapley values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAMElementWise as PeerElementWise
from pytorch_grad_cam import ShapleyCAM as PeerShapleyCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget
from torch import nn

import camscope
from camscope.methods.shapley import ShapleyCAM, hessian_vector_product

# Small eigen-decompositions and element-wise ops: one thread is much faster on a shared machine.
pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = [0, 3, 4]


def _rel_error(actual: torch.Tensor, expected) -> float:
    """Largest absolute difference over the largest absolute expected value."""
    expected = torch.as_tensor(np.asarray(expected), dtype=torch.float64)
    actual = actual.detach().to(torch.float64)
    assert actual.shape == expected.shape
    return float((actual - expected).abs().max() / expected.abs().max().clamp(min=1e-12))


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _rest(classes: list[int]) -> camscope.ScoreTarget:
    """The paper's ReST utility ``y_c + log softmax(y)_c`` (pytorch-grad-cam's ClassifierOutputReST)."""
    index = torch.tensor(classes)

    def rest(outputs: torch.Tensor) -> torch.Tensor:
        picked = index.to(outputs.device)[:, None]
        return (outputs + outputs.log_softmax(dim=1)).gather(1, picked)[:, 0]

    return camscope.ScoreTarget(rest, name="ReST")


# --------------------------------------------------------------------------- Grad-CAM Element-Wise


@pytest.mark.parametrize("eigen_smooth", [False, True])
def test_elementwise_matches_pytorch_grad_cam(tiny_cnn, images, eigen_smooth):
    # features.0 is a convolution: signed activations, so the clipping of the products matters.
    layer = tiny_cnn.features[0]
    with PeerElementWise(model=tiny_cnn, target_layers=[layer]) as cam:
        targets = [ClassifierOutputTarget(c) for c in CLASSES]
        final = cam(input_tensor=images, targets=targets, eigen_smooth=eigen_smooth)
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(images, layer, targets, activations, grads, eigen_smooth)
    ours = camscope.explain(
        tiny_cnn, images, method="gradcam-elementwise", layer="features.0", target=CLASSES, eigen_smooth=eigen_smooth
    )
    if eigen_smooth:  # the sign of a principal component is arbitrary: camscope's follows the unsmoothed map
        raw = raw * np.sign((np.asarray(raw) * ours.raw.numpy()).sum(axis=(1, 2)))[:, None, None]
    else:
        assert _rel_error(ours.maps, final) < 1e-3  # the layer keeps the input size: no resizing between the maps
        assert bool((ours.raw >= 0).all()) and not bool((activations >= 0).all())
    assert _rel_error(ours.raw, raw) < 1e-4
    # The pixel-wise weights times A are the clipped products: their per-channel sums are the contributions.
    assert ours.contributions is not None and bool((ours.contributions >= 0).all())
    if not eigen_smooth:
        torch.testing.assert_close(ours.contributions.sum(dim=1), ours.raw.sum(dim=(1, 2)))


# --------------------------------------------------------------------------- ShapleyCAM


class _RecordingShapley(PeerShapleyCAM):
    """pytorch-grad-cam's ShapleyCAM that keeps its channel weights."""

    def get_cam_weights(self, input_tensor, target_layer, target_category, activations, grads):
        self.recorded = super().get_cam_weights(input_tensor, target_layer, target_category, activations, grads)
        return self.recorded


def test_shapleycam_matches_pytorch_grad_cam_with_the_rest_utility(tiny_cnn, images):
    with torch.no_grad():
        tiny_cnn.fc.weight.mul_(30)  # confident predictions: the softmax's curvature weighs in
    layer = tiny_cnn.features[0]
    with _RecordingShapley(model=tiny_cnn, target_layers=[layer]) as cam:
        final = cam(input_tensor=images, targets=[ClassifierOutputReST(c) for c in CLASSES])
        peer_weights = cam.recorded
    ours = camscope.explain(tiny_cnn, images, method="shapleycam", layer="features.0", target=_rest(CLASSES))
    assert _rel_error(ours.weights, peer_weights) < 1e-4
    assert _rel_error(ours.maps, final) < 1e-3
    # The Hessian term is not zero here (log-softmax): ShapleyCAM is not Grad-CAM of the same score.
    gradcam = camscope.explain(tiny_cnn, images, method="gradcam", layer="features.0", target=_rest(CLASSES))
    assert _rel_error(gradcam.weights, peer_weights) > 1e-2


def test_shapleycam_is_gradcam_where_the_score_is_piecewise_linear(tiny_cnn, images):
    """ReLU layers and a logit: ``H A = 0``, so the weights are Grad-CAM's."""
    ours = camscope.explain(tiny_cnn, images, method="shapleycam", layer="features.0", target=CLASSES)
    gradcam = camscope.explain(tiny_cnn, images, method="gradcam", layer="features.0", target=CLASSES)
    torch.testing.assert_close(ours.weights, gradcam.weights, rtol=1e-5, atol=1e-7)


class _SmoothHead(nn.Module):
    """A convolution (the explained layer, 4 channels of 3 x 3) and a smooth, curved head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.mix = nn.Linear(36, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.mix(self.conv(x).flatten(1))))


def test_shapleycam_against_a_brute_force_hessian():
    torch.manual_seed(0)
    model = _SmoothHead().double().eval()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    target = _rest([1, 2])
    ours = camscope.explain(model, x, method="shapleycam", layer="conv", target=target)
    expected = []
    for i in range(2):
        activations = model.conv(x[i : i + 1]).detach()

        def score(a: torch.Tensor, i: int = i) -> torch.Tensor:
            outputs = model.fc(torch.tanh(model.mix(a.reshape(1, -1))))
            return target(outputs.expand(2, -1))[i]  # the target picks sample i's class

        flat = activations.flatten()
        grad = torch.autograd.functional.jacobian(score, flat)
        hessian = torch.autograd.functional.hessian(score, flat)
        terms = (grad - 0.5 * hessian @ flat).reshape(activations.shape)
        expected.append(terms.mean(dim=(2, 3))[0])
    torch.testing.assert_close(ours.weights, torch.stack(expected), rtol=1e-9, atol=1e-12)


def test_shapley_terms_are_the_exact_shapley_values_of_a_quadratic_game():
    """Channels as players, ``v(S) = f(A with the channels outside S zeroed)``, ``f`` quadratic: exact."""
    generator = torch.Generator().manual_seed(3)
    channels, size = 5, 4
    activations = torch.randn(1, channels, size, dtype=torch.float64, generator=generator)
    linear = torch.randn(channels * size, dtype=torch.float64, generator=generator)
    half = torch.randn(channels * size, channels * size, dtype=torch.float64, generator=generator)
    quadratic = half + half.T

    def utility(a: torch.Tensor) -> torch.Tensor:
        flat = a.flatten(1)
        return flat @ linear + 0.5 * ((flat @ quadratic) * flat).sum(dim=1)

    with torch.enable_grad():
        leaf = activations.clone().requires_grad_(True)
        (grads,) = torch.autograd.grad(utility(leaf).sum(), leaf, create_graph=True)
        terms = grads - 0.5 * hessian_vector_product(grads, leaf, activations, lambda tensor: tensor)
    closed_form = (terms.detach() * activations).sum(dim=2)[0]
    exact = torch.zeros(channels, dtype=torch.float64)
    for player in range(channels):
        others = [k for k in range(channels) if k != player]
        for count in range(channels):
            for coalition in itertools.combinations(others, count):
                weight = math.factorial(count) * math.factorial(channels - count - 1) / math.factorial(channels)
                mask = torch.zeros(1, channels, 1, dtype=torch.float64)
                mask[0, list(coalition)] = 1
                without = utility(activations * mask)
                mask[0, player] = 1
                exact[player] += weight * (utility(activations * mask) - without)[0]
    torch.testing.assert_close(closed_form, exact, rtol=1e-10, atol=1e-10)
    # Efficiency: the values add up to f(A) - f(0).
    torch.testing.assert_close(closed_form.sum(), utility(activations)[0])


def test_shapleycam_finer_max_combines_the_per_reference_maps(tiny_cnn, images):
    finer = camscope.Finer(references=[1, 2], explained=0, gamma=0.6, aggregate="max-before-relu")
    ours = camscope.explain(tiny_cnn, images[:2], method="shapleycam", layer="features.0", target=finer)
    per_reference = [
        camscope.explain(
            tiny_cnn, images[:2], method="shapleycam", layer="features.0", target=camscope.ClassDifference(0, d, 0.6)
        ).raw
        for d in (1, 2)
    ]
    torch.testing.assert_close(ours.raw, torch.stack(per_reference).max(dim=0).values, rtol=1e-5, atol=1e-7)
    mean = camscope.explain(
        tiny_cnn,
        images[:2],
        method="shapleycam",
        layer="features.0",
        target=camscope.Finer(references=[1, 2], explained=0),
    )
    torch.testing.assert_close(mean.raw, torch.stack(per_reference).mean(dim=0), rtol=1e-5, atol=1e-7)


class _OwnPass(ShapleyCAM):
    """ShapleyCAM as a context without the engine's second-order pass sees it (a dataset analysis)."""

    second_order = False


def test_shapleycam_without_the_engines_graph_takes_its_own_pass(tiny_cnn, images):
    target = _rest(CLASSES)
    engine = camscope.explain(tiny_cnn, images, method="shapleycam", layer="features.0", target=target)
    own = camscope.explain(tiny_cnn, images, method=_OwnPass(), layer="features.0", target=target)
    torch.testing.assert_close(own.weights, engine.weights, rtol=1e-5, atol=1e-9)


def test_shapleycam_guarantees(strided_cnn, tiny_vit):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    strided_cnn.train()
    try:
        with torch.no_grad():
            explanation = camscope.explain(strided_cnn, x, method="shapleycam", layer="stage", target=_rest([0, 1]))
        assert torch.isfinite(explanation.maps).all() and explanation.weights.shape == (2, 12)
        assert strided_cnn.training and strided_cnn.stem[1].training and _hook_count(strided_cnn) == 0

        def broken(outputs: torch.Tensor) -> torch.Tensor:
            if outputs.requires_grad:  # the method's own pass, after the engine's
                raise RuntimeError("broken target")
            return outputs[:, 0]

        with pytest.raises(RuntimeError, match="broken target"):
            camscope.explain(strided_cnn, x, method="shapleycam", layer="stage", target=camscope.ScoreTarget(broken))
        assert strided_cnn.training and _hook_count(strided_cnn) == 0
    finally:
        strided_cnn.eval()
    # Tokens: the Hessian-vector product is taken on the layer's own [B, T, K] output, then laid out as a grid.
    tokens = camscope.explain(tiny_vit, x, method="shapleycam", layer="blocks.1.norm1", target=_rest([1, 2]))
    assert tokens.raw.shape == (2, 4, 4) and torch.isfinite(tokens.raw).all()
