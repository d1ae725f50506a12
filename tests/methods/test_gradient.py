"""The gradient CAM family against pytorch-grad-cam 1.5.7, torchcam 0.5.0 and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchcam import methods as torchcam_methods

import camscope
from camscope.engine.explainer import normalize_maps
from camscope.errors import CamscopeError

GRADCAM_PEERS = {
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
}


def _rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    expected = torch.as_tensor(np.asarray(expected), dtype=actual.dtype)
    scale = expected.abs().max().clamp(min=1e-12)
    assert (actual - expected).abs().max() / scale < rtol


def _gradcam_raw(peer_cls, model, layer, images, classes):
    """pytorch-grad-cam's signed map (before ReLU and scaling) and its final normalised map."""
    with peer_cls(model=model, target_layers=[layer]) as cam:
        targets = [ClassifierOutputTarget(int(c)) for c in classes]
        final = cam(input_tensor=images, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(images, layer, targets, activations, grads, False)
    return raw, final


@pytest.mark.parametrize("method", sorted(GRADCAM_PEERS))
def test_matches_pytorch_grad_cam(method, tiny_cnn, images):
    # Larger head weights keep g^2 far above the eps = 1e-6 that pytorch-grad-cam adds to
    # Grad-CAM++'s denominator (camscope follows the paper and adds none).
    with torch.no_grad():
        tiny_cnn.fc.weight.mul_(3000)
    classes = [0, 3, 4]
    ours = camscope.explain(tiny_cnn, images, method=method, layer="features.3", target=classes)
    raw, final = _gradcam_raw(GRADCAM_PEERS[method], tiny_cnn, tiny_cnn.features[3], images, classes)
    _rel_close(ours.raw, raw)
    # The layer keeps the input size, so no resizing separates the normalised maps.
    _rel_close(ours.maps, final, rtol=1e-3)


@pytest.mark.parametrize(
    "method, peer",
    [("gradcam", "GradCAM"), ("xgradcam", "XGradCAM"), ("layercam", "LayerCAM")],
)
def test_matches_torchcam(method, peer, tiny_cnn, images):
    classes = [1, 2, 0]
    with getattr(torchcam_methods, peer)(tiny_cnn, target_layer="features.3", input_shape=(3, 16, 16)) as extractor:
        scores = tiny_cnn(images)
        (raw,) = extractor(class_idx=classes, scores=scores, normalized=False)
    ours = camscope.explain(tiny_cnn, images, method=method, layer="features.3", target=classes)
    # torchcam applies the ReLU to its raw maps.
    _rel_close(ours.raw.clamp(min=0), raw.detach())


def test_cam_closed_form_and_gradcam_relation(tiny_cnn, images):
    classes = torch.tensor([2, 0, 4])
    cam = camscope.explain(tiny_cnn, images, method="cam", layer="features.3", target=classes)
    activations = tiny_cnn.features(images)
    expected = torch.einsum("bk,bkhw->bhw", tiny_cnn.fc.weight[classes], activations)
    _rel_close(cam.raw, expected.detach())
    torch.testing.assert_close(cam.weights, tiny_cnn.fc.weight[classes].detach())
    # At the last conv layer of a pooling + linear model, Grad-CAM = CAM / Z.
    grad = camscope.explain(tiny_cnn, images, method="gradcam", layer="features.3", target=classes)
    _rel_close(grad.raw * (16 * 16), cam.raw)
    with torchcam_methods.CAM(tiny_cnn, target_layer="features.3", fc_layer="fc", input_shape=(3, 16, 16)) as extractor:
        (peer,) = extractor(class_idx=classes.tolist(), scores=tiny_cnn(images), normalized=False)
    _rel_close(cam.raw, peer)


def test_cam_of_a_class_difference(tiny_cnn, images):
    target = camscope.ClassDifference(1, 3, gamma=0.6)
    cam = camscope.explain(tiny_cnn, images, method="cam", layer="features.3", target=target)
    expected = tiny_cnn.fc.weight[1] - 0.6 * tiny_cnn.fc.weight[3]
    torch.testing.assert_close(cam.weights, expected.detach().expand(3, -1))


def test_hirescam_sums_to_the_logit_change(tiny_cnn, images):
    """HiResCAM at the last layer: sum_ij M = sum_k w_k... = y_c - b_c for a linear head on mean pooling."""
    classes = torch.tensor([0, 1, 2])
    explanation = camscope.explain(tiny_cnn, images, method="hirescam", layer="features.3", target=classes)
    logits = tiny_cnn(images).gather(1, classes[:, None])[:, 0] - tiny_cnn.fc.bias[classes]
    _rel_close(explanation.raw.sum(dim=(1, 2)), logits.detach())
    _rel_close(explanation.contributions.sum(dim=1), logits.detach())


def test_smooth_gradcampp_against_a_brute_force_loop(tiny_cnn, images):
    samples, std = 3, 0.2
    explanation = camscope.explain(
        tiny_cnn,
        images,
        method="smoothgradcampp",
        layer="features.3",
        target=1,
        samples=samples,
        std=std,
        generator=torch.Generator().manual_seed(5),
    )
    generator = torch.Generator().manual_seed(5)
    noises = [torch.randn(images.shape, generator=generator) for _ in range(samples)]
    expected = []
    for i in range(images.shape[0]):
        activations = tiny_cnn.features(images[i : i + 1]).detach()
        g1 = g2 = g3 = 0
        for noise in noises:
            x = images[i : i + 1] + std * noise[i : i + 1]
            feats = tiny_cnn.features(x)
            score = tiny_cnn.fc(feats.mean(dim=(2, 3)))[0, 1]
            (g,) = torch.autograd.grad(score, feats)
            g1, g2, g3 = g1 + g / samples, g2 + g**2 / samples, g3 + g**3 / samples
        alpha = g2 / (2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g3)
        alpha = torch.where(g2 != 0, alpha, torch.zeros_like(alpha))
        weights = (alpha * g1.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
        expected.append((weights * activations).sum(dim=1)[0])
    _rel_close(explanation.raw, torch.stack(expected))


def test_maps_are_relu_then_upsampled_then_minmax(strided_cnn):
    x = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(3))
    explanation = camscope.explain(strided_cnn, x, layer="stage")
    assert explanation.raw.shape == (2, 5, 5)

    def up(raw):
        return torch.nn.functional.interpolate(raw[:, None], size=(20, 20), mode="bilinear", align_corners=False)[:, 0]

    torch.testing.assert_close(explanation.maps, normalize_maps(up(explanation.raw.clamp(min=0))))
    assert explanation.maps.min() >= 0 and explanation.maps.max() <= 1
    old = camscope.explain(strided_cnn, x, layer="stage", map_order="upsample-first")
    torch.testing.assert_close(old.maps, normalize_maps(up(explanation.raw)))
    torch.testing.assert_close(old.raw, explanation.raw)
    with pytest.raises(CamscopeError, match="map_order"):
        camscope.explain(strided_cnn, x, layer="stage", map_order="relu-last")


def test_final_maps_match_pytorch_grad_cam_at_a_strided_layer(strided_cnn):
    # pytorch-grad-cam applies the ReLU and min-max at the layer's resolution, then resizes;
    # camscope min-max scales after the resize, so its maps are the peer's up to that rescaling.
    x = torch.randn(3, 3, 20, 20, generator=torch.Generator().manual_seed(5))
    classes = [0, 1, 2]
    ours = camscope.explain(strided_cnn, x, layer="stage", target=classes)
    _, final = _gradcam_raw(GradCAM, strided_cnn, strided_cnn.stage, x, classes)
    torch.testing.assert_close(ours.maps, normalize_maps(torch.as_tensor(final)), atol=1e-5, rtol=0)


def test_constant_map_gives_zeros_not_nan():
    maps = normalize_maps(torch.zeros(2, 4, 4))
    assert torch.equal(maps, torch.zeros(2, 4, 4))
    maps = normalize_maps(torch.full((1, 3, 3), -2.0))
    assert torch.equal(maps, torch.zeros(1, 3, 3))


def test_predicted_class_is_the_default_target(tiny_cnn, images):
    explanation = camscope.explain(tiny_cnn, images, layer="features.3")
    assert torch.equal(explanation.classes, tiny_cnn(images).argmax(1))
    assert torch.equal(explanation.logits, tiny_cnn(images).detach())
