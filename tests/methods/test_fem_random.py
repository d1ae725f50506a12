"""FEM and Random-CAM against pytorch-grad-cam 1.5.7 and brute-force loops."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import pytorch_grad_cam
import torch
from pytorch_grad_cam import RandomCAM as PeerRandomCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import camscope

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fem_summed_activations_matches_pytorch_grad_cam(tiny_cnn, images):
    layer = tiny_cnn.features[0]
    with pytorch_grad_cam.FEM(model=tiny_cnn, target_layers=[layer], k=1.5) as cam:
        final = cam(input_tensor=images, targets=None)
        activations = cam.activations_and_grads.activations[0].numpy()
        raw = cam.get_cam_image(images, layer, None, activations, None, False)
    ours = camscope.explain(tiny_cnn, images, method="fem", layer="features.0", k=1.5, summed="activations")
    torch.testing.assert_close(ours.raw, torch.as_tensor(raw, dtype=torch.float32), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.maps, torch.as_tensor(final, dtype=torch.float32), rtol=0, atol=1e-4)
    assert ours.weights.shape == (3, 8) and bool(((ours.weights >= 0) & (ours.weights <= 1)).all())


def _fem_loop(activations: torch.Tensor, k: float) -> torch.Tensor:
    """The paper's map, one image and one channel at a time: sum_k mu_k 1[A_k > mu_k + k sigma_k]."""
    maps = torch.zeros(activations.shape[0], *activations.shape[2:], dtype=activations.dtype)
    for b, image in enumerate(activations):
        for channel in image:
            values = channel.flatten().tolist()
            mean = sum(values) / len(values)
            std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
            maps[b] += mean * (channel > mean + k * std).to(channel.dtype)
    return maps


def test_fem_follows_the_paper_by_default(tiny_cnn, images, tiny_3d):
    ours = camscope.explain(tiny_cnn, images, method="fem", layer="features.0")
    torch.testing.assert_close(ours.raw, _fem_loop(ours.activations, 2.0), rtol=1e-5, atol=1e-6)
    assert ours.weights is None and ours.contributions is None
    # Class-agnostic: a Finer target does not change the map.
    finer = camscope.explain(tiny_cnn, images, method="fem", layer="features.0", target=camscope.Finer(references=2))
    torch.testing.assert_close(finer.raw, ours.raw)
    # A constant channel (here 5 everywhere) has no strong response: it adds nothing, and no NaN.
    with torch.no_grad():
        tiny_cnn.features[0].weight[0] = 0.0
        tiny_cnn.features[0].bias[0] = 5.0
    constant = camscope.explain(tiny_cnn, images, method="fem", layer="features.0")
    assert bool((constant.activations[:, 0] == 5.0).all()) and torch.isfinite(constant.raw).all()
    torch.testing.assert_close(constant.raw, _fem_loop(constant.activations[:, 1:], 2.0), rtol=1e-5, atol=1e-6)
    volume = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    explanation = camscope.explain(tiny_3d, volume, method="fem", layer="features.3", k=1.0)
    torch.testing.assert_close(explanation.raw, _fem_loop(explanation.activations, 1.0), rtol=1e-5, atol=1e-6)
    with pytest.raises(camscope.CamscopeError, match="summed"):
        camscope.explain(tiny_cnn, images, method="fem", summed="weights")
    with pytest.raises(camscope.CamscopeError, match="k must"):
        camscope.explain(tiny_cnn, images, method="fem", k=-1.0)


def test_randomcam_draws_uniform_weights_and_sums_them_like_the_peer(tiny_cnn, images):
    ours = camscope.explain(
        tiny_cnn, images, method="randomcam", layer="features.3", generator=torch.Generator().manual_seed(0)
    )
    again = camscope.explain(
        tiny_cnn, images, method="randomcam", layer="features.3", generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(again.weights, ours.weights)
    assert ours.weights.shape == (3, 16) and bool((ours.weights.abs() <= 1).all())
    # pytorch-grad-cam's map for the same weights (its own are drawn by NumPy's global generator).
    layer = tiny_cnn.features[3]
    with (
        mock.patch.object(np.random, "uniform", return_value=ours.weights.numpy()) as uniform,
        PeerRandomCAM(model=tiny_cnn, target_layers=[layer]) as cam,
    ):
        targets = [ClassifierOutputTarget(0)] * 3
        cam(input_tensor=images, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(images, layer, targets, activations, grads, False)
    assert uniform.call_args.kwargs["size"] == (3, 16) and uniform.call_args.args == (-1, 1)
    torch.testing.assert_close(ours.raw, torch.as_tensor(raw, dtype=torch.float32), rtol=1e-5, atol=1e-6)
    # The draws are uniform on [-1, 1]: mean 0, variance 1/3.
    many = camscope.methods.RandomCAM(generator=torch.Generator().manual_seed(1))
    weights = torch.cat(
        [camscope.explain(tiny_cnn, images, method=many, layer="features.3").weights.flatten() for _ in range(40)]
    )
    assert abs(float(weights.mean())) < 0.05 and abs(float(weights.var()) - 1 / 3) < 0.03
    # Without a generator, torch's global one: seeded runs repeat.
    torch.manual_seed(5)
    first = camscope.explain(tiny_cnn, images, method="randomcam", layer="features.3", target=2).weights
    torch.manual_seed(5)
    second = camscope.explain(tiny_cnn, images, method="randomcam", layer="features.3", target=0).weights
    torch.testing.assert_close(first, second)
