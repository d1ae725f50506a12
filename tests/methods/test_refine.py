"""RefineCAM against pytorch-grad-cam 1.5.7, torchcam 0.5.0 and the product of the per-layer maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import RefineCAM as PeerRefineCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchcam.methods import GradCAM as TorchcamGradCAM
from torchcam.methods import RefineCAM as TorchcamRefineCAM

import camscope
from camscope.engine.maps import normalize_maps

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = [0, 3, 1]


def _as_tensor(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float32)


def test_refinecam_matches_pytorch_grad_cam_at_layers_of_two_resolutions(strided_cnn):
    # Larger head weights keep Grad-CAM++'s g^2 far above the eps = 1e-6 that pytorch-grad-cam adds.
    with torch.no_grad():
        strided_cnn.head[2].weight.mul_(3000)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    peer = PeerRefineCAM(strided_cnn, [strided_cnn.stem, strided_cnn.stage])
    try:
        expected = peer(x, [ClassifierOutputTarget(c) for c in CLASSES])
    finally:
        for cam in peer.base_cam_per_layer:
            cam.activations_and_grads.release()
    ours = camscope.explain(strided_cnn, x, method="refinecam", layer=["stem", "stage"], target=CLASSES)
    torch.testing.assert_close(ours.maps, _as_tensor(expected), rtol=0, atol=1e-4)
    # The closed form: the product of the per-layer Grad-CAM++ maps (8 x 8 and 4 x 4, upsampled), normalised.
    per_layer = [
        camscope.explain(strided_cnn, x, method="gradcampp", layer=name, target=CLASSES).maps
        for name in ("stem", "stage")
    ]
    product = per_layer[0] * per_layer[1]
    torch.testing.assert_close(ours.raw, product)
    torch.testing.assert_close(ours.maps, normalize_maps(product))
    torch.testing.assert_close(ours.layers["stage"].maps, per_layer[1])


def test_refinecam_matches_torchcam_where_the_layers_share_a_resolution(tiny_cnn, images):
    extractor = TorchcamRefineCAM(
        tiny_cnn, ["features.1", "features.3"], input_shape=(3, 16, 16), base_method=TorchcamGradCAM
    )
    with extractor:
        (expected,) = extractor(class_idx=CLASSES, scores=tiny_cnn(images))
    ours = camscope.explain(
        tiny_cnn, images, method="refinecam", base="gradcam", layer=["features.1", "features.3"], target=CLASSES
    )
    torch.testing.assert_close(ours.maps, expected.detach(), rtol=0, atol=1e-5)


def test_refinecam_options_targets_and_fusion(tiny_cnn, images):
    layers = ["features.1", "features.3"]
    refined = camscope.explain(tiny_cnn, images, method="refinecam", base="layercam", layer=layers, target=CLASSES)
    fused = camscope.explain(tiny_cnn, images, method="layercam", layer=layers, target=CLASSES, fuse="product")
    torch.testing.assert_close(refined.maps, fused.maps)
    mean = camscope.explain(tiny_cnn, images, method="refinecam", base="layercam", layer=layers, fuse="mean")
    assert not torch.allclose(mean.maps, refined.maps)
    # A Finer target compares the classes at every layer.
    finer = camscope.Finer(references=[2, 4], explained=0)
    ours = camscope.explain(tiny_cnn, images, method="refinecam", layer=layers, target=finer)
    per_layer = [camscope.explain(tiny_cnn, images, method="gradcampp", layer=n, target=finer).maps for n in layers]
    torch.testing.assert_close(ours.maps, normalize_maps(per_layer[0] * per_layer[1]))
    # One layer: the base method's map.
    one = camscope.explain(tiny_cnn, images, method="refinecam", layer="features.3", target=CLASSES)
    base = camscope.explain(tiny_cnn, images, method="gradcampp", layer="features.3", target=CLASSES)
    torch.testing.assert_close(one.maps, base.maps)
    # The base decides whether gradients are computed; a base with its own options.
    assert not camscope.methods.RefineCAM(base="eigencam").uses_gradients
    assert camscope.methods.RefineCAM().uses_gradients and not camscope.methods.RefineCAM().linear_in_gradient
    assert camscope.methods.RefineCAM(base="gradcam").linear_in_gradient
    scorecam = camscope.methods.get_method("scorecam", batch_size=4)
    perturbed = camscope.explain(tiny_cnn, images[:1], method="refinecam", base=scorecam, layer=layers, target=1)
    assert perturbed.maps.shape == (1, 16, 16) and torch.isfinite(perturbed.maps).all()
    with pytest.raises(camscope.CamscopeError, match="cannot be refinecam"):
        camscope.explain(tiny_cnn, images, method="refinecam", base="refinecam", layer=layers)
    with pytest.raises(camscope.CamscopeError, match="unknown method"):
        camscope.explain(tiny_cnn, images, method="refinecam", base="gradcamm", layer=layers)
    with pytest.raises(camscope.CamscopeError, match="fuse must be one of"):
        camscope.explain(tiny_cnn, images, layer=layers, fuse="sum")
