"""The eigen_smooth and aug_smooth options against pytorch-grad-cam 1.5.7."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import camscope
from camscope.engine.augmentation import AUGMENTATIONS, augment

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = [2, 0, 4]
#: Channel weights linear and not linear in the gradient, pixel-wise weights, perturbation weights (the engine
#: projects every method's weighted activations alike).
PEERS = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "layercam": LayerCAM, "scorecam": ScoreCAM}


def _peer_raw(peer_cls, model, layer, images, eigen_smooth):
    with peer_cls(model=model, target_layers=[layer]) as cam:
        targets = [ClassifierOutputTarget(c) for c in CLASSES]
        cam(input_tensor=images, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy() if cam.activations_and_grads.gradients else None
        return np.asarray(cam.get_cam_image(images, layer, targets, activations, grads, eigen_smooth))


@pytest.mark.parametrize("method", sorted(PEERS))
def test_eigen_smooth_matches_pytorch_grad_cam_up_to_the_sign(method, tiny_cnn, images):
    with torch.no_grad():
        tiny_cnn.fc.weight.mul_(3000)  # Grad-CAM++: keep g^2 far above pytorch-grad-cam's eps
    layer = tiny_cnn.features[3]
    expected = _peer_raw(PEERS[method], tiny_cnn, layer, images, eigen_smooth=True)
    ours = camscope.explain(tiny_cnn, images, method=method, layer="features.3", target=CLASSES, eigen_smooth=True)
    plain = camscope.explain(tiny_cnn, images, method=method, layer="features.3", target=CLASSES)
    for got, want, unsmoothed in zip(ours.raw.double(), torch.as_tensor(expected).double(), plain.raw.double()):
        error = min((got - want).abs().max(), (got + want).abs().max()) / want.abs().max()
        assert error < 1e-4
        # The sign follows the unsmoothed map (pytorch-grad-cam keeps LAPACK's).
        assert float(((got - got.mean()) * (unsmoothed - unsmoothed.mean())).sum()) >= 0
    # The weights and contributions are the method's; only the sum over channels became a projection.
    torch.testing.assert_close(ours.contributions, plain.contributions)


def test_eigen_smooth_needs_weights_and_a_bool(tiny_cnn, images):
    with pytest.raises(camscope.CamscopeError, match="no channel weights, so eigen_smooth cannot apply"):
        camscope.explain(tiny_cnn, images, method="eigencam", layer="features.3", eigen_smooth=True)
    with pytest.raises(camscope.CamscopeError, match="eigen_smooth must be True or False"):
        camscope.explain(tiny_cnn, images, layer="features.3", eigen_smooth="yes")


@pytest.mark.parametrize(("method", "eigen_smooth"), [("gradcam", False), ("layercam", True)])
def test_aug_smooth_matches_pytorch_grad_cam(strided_cnn, method, eigen_smooth):
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    peer_cls = {"gradcam": GradCAM, "layercam": LayerCAM}[method]
    with peer_cls(model=strided_cnn, target_layers=[strided_cnn.stage]) as cam:
        targets = [ClassifierOutputTarget(c) for c in (0, 3, 1)]
        expected = torch.as_tensor(cam(input_tensor=x, targets=targets, aug_smooth=True, eigen_smooth=eigen_smooth))
    ours = camscope.explain(
        strided_cnn, x, method=method, layer="stage", target=[0, 3, 1], aug_smooth=True, eigen_smooth=eigen_smooth
    )
    if eigen_smooth:  # each augmentation's projection has its own sign in pytorch-grad-cam: compare without them
        assert ours.maps.shape == expected.shape and torch.isfinite(ours.maps).all()
        return
    torch.testing.assert_close(ours.maps, expected, rtol=0, atol=1e-5)
    assert ours.weights is None and ours.contributions is None and ours.raw.shape == (3, 4, 4)


def test_aug_smooth_is_the_mean_of_the_flipped_back_maps_of_the_clean_prediction(tiny_cnn, images):
    ours = camscope.explain(tiny_cnn, images, method="gradcampp", layer="features.2", aug_smooth=True)
    predicted = tiny_cnn(images).argmax(dim=1)
    assert torch.equal(ours.classes, predicted)  # resolved once, on the clean inputs
    maps, raws = [], []
    for flip, factor in AUGMENTATIONS:
        e = camscope.explain(
            tiny_cnn, augment(images, flip, factor), method="gradcampp", layer="features.2", target=predicted
        )
        maps.append(e.maps.flip(-1) if flip else e.maps)
        raws.append(e.raw.flip(-1) if flip else e.raw)
    torch.testing.assert_close(ours.maps, torch.stack(maps).mean(dim=0))
    torch.testing.assert_close(ours.raw, torch.stack(raws).mean(dim=0))
    # A Finer target keeps its references under every augmentation; a method without weights works too.
    finer = camscope.explain(tiny_cnn, images, method="finer-gradcam", layer="features.2", aug_smooth=True)
    assert finer.targets.references().shape == (3, 3)
    eigen = camscope.explain(tiny_cnn, images, method="eigencam", layer=["features.1", "features.3"], aug_smooth=True)
    assert eigen.maps.shape == (3, 16, 16) and float(eigen.maps.max()) <= 1.0
    with pytest.raises(camscope.CamscopeError, match="aug_smooth must be True or False"):
        camscope.explain(tiny_cnn, images, aug_smooth=1)
