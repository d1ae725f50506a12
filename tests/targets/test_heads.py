"""Head targets against pytorch-grad-cam 1.5.7's named targets (Grad-CAM and Score-CAM) and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM as PeerGradCAM
from pytorch_grad_cam import ScoreCAM as PeerScoreCAM
from pytorch_grad_cam.utils.model_targets import (
    BinaryClassifierOutputTarget,
    ClassifierOutputReST,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    RawScoresOutputTarget,
)
from torch import nn

import camscope
from camscope.errors import CamscopeError
from conftest import TinyCNN

LAYER = "features.3"  # keeps the input size: Score-CAM's masks need no resizing, so the peers agree exactly


def _peer_raw(peer_cls, model: nn.Module, images: torch.Tensor, targets: list) -> torch.Tensor:
    """pytorch-grad-cam's signed map (before the ReLU) for per-image targets."""
    layer = model.features[3]
    with peer_cls(model=model, target_layers=[layer]) as cam:
        cam(input_tensor=images, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients
        raw = cam.get_cam_image(images, layer, targets, activations, grads[0].numpy() if grads else None, False)
    model.zero_grad(set_to_none=True)
    return torch.as_tensor(np.asarray(raw))


def _one_output() -> nn.Module:
    torch.manual_seed(0)
    model = TinyCNN(classes=1).eval()
    with torch.no_grad():
        model.fc.bias.fill_(0.5)  # a positive logit for some images and a negative one for others
    return model


CASES = {
    "ClassifierOutputTarget": (lambda c: camscope.ClassTarget(c), ClassifierOutputTarget, [0, 3, 4]),
    "ClassifierOutputSoftmaxTarget": (lambda c: camscope.SoftmaxTarget(c), ClassifierOutputSoftmaxTarget, [1, 3, 2]),
    "ClassifierOutputReST": (lambda c: camscope.ReSTTarget(c), ClassifierOutputReST, [4, 0, 2]),
    "BinaryClassifierOutputTarget": (lambda c: camscope.BinaryTarget(c), BinaryClassifierOutputTarget, [1, 0, 1]),
    "RawScoresOutputTarget": (lambda c: camscope.RawScores(), lambda c: RawScoresOutputTarget(), [0, 0, 0]),
}


@pytest.mark.parametrize("method, peer_cls", [("gradcam", PeerGradCAM), ("scorecam", PeerScoreCAM)])
@pytest.mark.parametrize("name", sorted(CASES))
def test_head_targets_match_pytorch_grad_cam(name, method, peer_cls, tiny_cnn, images):
    ours_target, peer_target, classes = CASES[name]
    model = _one_output() if name in ("BinaryClassifierOutputTarget", "RawScoresOutputTarget") else tiny_cnn
    ours = camscope.explain(model, images, method=method, layer=LAYER, target=ours_target(classes))
    peer = _peer_raw(peer_cls, model, images, [peer_target(c) for c in classes])
    assert peer.abs().max() > 0
    # max abs difference: ~1e-9 of the map's scale for Grad-CAM, ~1e-6 for Score-CAM
    # (pytorch-grad-cam adds 1e-8 to the masks' range).
    torch.testing.assert_close(ours.raw, peer, atol=1e-5 * peer.abs().max(), rtol=0)


def test_binary_and_regression_targets_by_hand():
    model = _one_output()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    logits = model(x)[:, 0].detach()
    predicted = camscope.explain(model, x, layer=LAYER, target=camscope.BinaryTarget())
    assert predicted.classes.tolist() == (logits > 0).long().tolist()
    torch.testing.assert_close(predicted.scores, logits.abs())
    up = camscope.explain(model, x, layer=LAYER, target=camscope.RegressionTarget())
    down = camscope.explain(model, x, layer=LAYER, target=camscope.RegressionTarget(direction="decrease"))
    torch.testing.assert_close(down.raw, -up.raw)  # Grad-CAM is linear in the score
    torch.testing.assert_close(up.scores, logits)


def test_raw_scores_of_several_outputs_are_their_sum(tiny_cnn, images):
    ours = camscope.explain(tiny_cnn, images, layer=LAYER, target=camscope.RawScores())
    summed = camscope.explain(tiny_cnn, images, layer=LAYER, target=camscope.ScoreTarget(lambda y: y.sum(dim=1)))
    torch.testing.assert_close(ours.raw, summed.raw)


def test_multi_label_gives_one_map_per_class_in_one_batch(tiny_cnn, images):
    calls = []
    handle = tiny_cnn.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    try:
        ours = camscope.explain(tiny_cnn, images, layer=LAYER, target=camscope.MultiLabel([[1, 4], [2], []]))
    finally:
        handle.remove()
    assert calls == [3]  # one forward pass over the three (sample, class) rows
    assert ours.targets.samples().tolist() == [0, 0, 1] and ours.classes.tolist() == [1, 4, 2]
    single = camscope.explain(tiny_cnn, images[[0, 0, 1]], layer=LAYER, target=[1, 4, 2])
    torch.testing.assert_close(ours.raw, single.raw)
    peer = _peer_raw(PeerGradCAM, tiny_cnn, images[[0, 0, 1]], [ClassifierOutputTarget(c) for c in (1, 4, 2)])
    torch.testing.assert_close(ours.raw, peer, atol=1e-5 * peer.abs().max(), rtol=0)


def test_multi_label_from_a_threshold_and_a_multi_hot_matrix(tiny_cnn, images):
    probabilities = tiny_cnn(images).sigmoid().detach()
    threshold = float(probabilities.median())
    by_threshold = camscope.explain(tiny_cnn, images, layer=LAYER, target=camscope.MultiLabel(threshold=threshold))
    chosen = probabilities > threshold
    expected = chosen.nonzero()
    assert by_threshold.targets.samples().tolist() == expected[:, 0].tolist()
    assert by_threshold.classes.tolist() == expected[:, 1].tolist()
    by_matrix = camscope.explain(tiny_cnn, images, method="scorecam", layer=LAYER, target=camscope.MultiLabel(chosen))
    assert by_matrix.maps.shape == (int(chosen.sum()), 16, 16)


def test_head_target_mistakes_get_one_clear_error(tiny_cnn, images):
    with pytest.raises(CamscopeError, match="one output per sample"):
        camscope.explain(tiny_cnn, images, layer=LAYER, target=camscope.BinaryTarget(1))
    with pytest.raises(CamscopeError, match="out of range"):
        camscope.explain(_one_output(), images, layer=LAYER, target=camscope.BinaryTarget(2))
    with pytest.raises(CamscopeError, match="J > 7"):
        camscope.explain(tiny_cnn, images, layer=LAYER, target=camscope.RegressionTarget(7))
    with pytest.raises(CamscopeError, match="direction"):
        camscope.RegressionTarget(direction="up")
    with pytest.raises(CamscopeError, match="no class passes the threshold"):
        camscope.explain(tiny_cnn, images, layer=LAYER, target=camscope.MultiLabel(threshold=1.0))
    with pytest.raises(CamscopeError, match="one list per sample"):
        camscope.explain(tiny_cnn, images, layer=LAYER, target=camscope.MultiLabel([1, 2, 3]))
    with pytest.raises(CamscopeError, match="twice"):
        camscope.explain(tiny_cnn, images, layer=LAYER, target=camscope.MultiLabel([[1, 1], [], []]))
    with pytest.raises(CamscopeError, match="out of range"):
        camscope.explain(tiny_cnn, images, layer=LAYER, target=camscope.MultiLabel([[9], [], []]))
    with pytest.raises(CamscopeError, match="expanded by the explainer"):
        camscope.MultiLabel([[1]])(torch.zeros(1, 5))
