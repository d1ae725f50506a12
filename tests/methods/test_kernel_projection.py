"""KPCA-CAM and Seg-Eigen-CAM against pytorch-grad-cam 1.5.7 (scikit-learn's KernelPCA, NumPy's SVD) and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam
import torch
from pytorch_grad_cam import SegEigenCAM as PeerSegEigenCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

import camscope
from camscope.methods.kpca import KERNELS, kernel_pca_projection

# Small eigen-decompositions and element-wise ops: one thread is much faster on a shared machine.
pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = [1, 0, 4]


def _error_up_to_sign(actual: torch.Tensor, expected) -> float:
    """Per image, ``min |actual -+ expected|`` over the largest ``|expected|``; the worst image."""
    expected = torch.as_tensor(np.asarray(expected), dtype=torch.float64)
    actual = actual.to(torch.float64)
    assert actual.shape == expected.shape
    errors = [
        min((a - e).abs().max(), (a + e).abs().max()) / e.abs().max().clamp(min=1e-12) for a, e in zip(actual, expected)
    ]
    return float(max(errors))


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1)


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_pca_projection_matches_scikit_learn(kernel):
    features = torch.rand(2, 10, 6, 5, generator=torch.Generator().manual_seed(0)) - 0.3
    peer = get_2d_projection_kernel(features.numpy(), kernel)
    assert _error_up_to_sign(kernel_pca_projection(features, kernel), peer) < 1e-4
    scaled = get_2d_projection_kernel(features.numpy(), kernel, gamma=0.3)
    assert _error_up_to_sign(kernel_pca_projection(features, kernel, gamma=0.3), scaled) < 1e-4


def test_kpcacam_matches_pytorch_grad_cam(tiny_cnn, images):
    # 256 positions: scikit-learn switches to ARPACK above 200, camscope's batched eigh is exact.
    ours = camscope.explain(tiny_cnn, images, method="kpcacam", layer="features.3")
    with pytorch_grad_cam.KPCA_CAM(model=tiny_cnn, target_layers=[tiny_cnn.features[3]]) as cam:
        cam(input_tensor=images, targets=None)
        activations = cam.activations_and_grads.activations[0].numpy()
    assert _error_up_to_sign(ours.raw, get_2d_projection_kernel(activations)) < 1e-4
    assert ours.weights is None and ours.contributions is None
    # Class-agnostic: the target does not change the map; the sign follows the mean activation.
    other = camscope.explain(tiny_cnn, images, method="kpcacam", layer="features.3", target=camscope.Finer())
    torch.testing.assert_close(other.raw, ours.raw)
    assert (_correlation(ours.raw, ours.activations.mean(dim=1)) > 0).all()


def test_linear_kernel_pca_is_eigencam(tiny_cnn, images):
    kpca = camscope.explain(tiny_cnn, images, method="kpcacam", layer="features.2", kernel="linear")
    eigencam = camscope.explain(tiny_cnn, images, method="eigencam", layer="features.2")
    torch.testing.assert_close(kpca.raw, eigencam.raw, rtol=1e-4, atol=1e-5)


def test_kpcacam_options_and_shapes(tiny_3d, tiny_vit):
    volume = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    assert camscope.explain(tiny_3d, volume, method="kpcacam", layer="features.3").raw.shape == (2, 4, 4, 4)
    image = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    explanation = camscope.explain(tiny_vit, image, method="kpcacam", layer="blocks.1.norm1", kernel="cosine")
    assert explanation.raw.shape == (2, 4, 4) and torch.isfinite(explanation.maps).all()
    with pytest.raises(camscope.CamscopeError, match="kernel"):
        camscope.explain(tiny_vit, image, method="kpcacam", kernel="laplacian")
    with pytest.raises(camscope.CamscopeError, match="gamma"):
        camscope.explain(tiny_vit, image, method="kpcacam", gamma=0.0)
    zeros = kernel_pca_projection(torch.zeros(1, 3, 2, 2), "cosine")
    assert torch.equal(zeros, torch.zeros(1, 2, 2))


def _peer_segeigen_raw(model, layer, images, classes):
    with PeerSegEigenCAM(model=model, target_layers=[layer]) as cam:
        targets = [ClassifierOutputTarget(c) for c in classes]
        cam(input_tensor=images, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        return cam.get_cam_image(images, layer, targets, activations, grads, False)


def test_segeigencam_matches_pytorch_grad_cam_sign_included(tiny_cnn, images):
    ours = camscope.explain(tiny_cnn, images, method="segeigencam", layer="features.0", target=CLASSES)
    raw = torch.as_tensor(_peer_segeigen_raw(tiny_cnn, tiny_cnn.features[0], images, CLASSES))
    torch.testing.assert_close(ours.raw, raw, rtol=1e-4, atol=1e-4 * float(raw.abs().max()))
    # Eq. 13: the strongest response is positive.
    flat = ours.raw.flatten(1)
    assert (flat.amax(dim=1) >= flat.amin(dim=1).abs()).all()


def test_segeigencam_with_a_finer_target_combines_the_comparisons(tiny_cnn, images):
    finer = camscope.Finer(references=[2, 3], explained=0, gamma=0.6, aggregate="mean-after-relu")
    ours = camscope.explain(tiny_cnn, images, method="segeigencam", layer="features.0", target=finer)
    per_reference = [
        camscope.explain(
            tiny_cnn, images, method="segeigencam", layer="features.0", target=camscope.ClassDifference(0, d, 0.6)
        ).raw
        for d in (2, 3)
    ]
    torch.testing.assert_close(ours.raw, torch.stack(per_reference).clamp(min=0).mean(dim=0))
