"""Region targets on torchvision FCN / DeepLabV3 with random weights: pytorch-grad-cam 1.5.7 and brute force."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import AblationCAM as PeerAblationCAM
from pytorch_grad_cam import GradCAM as PeerGradCAM
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
from torch import nn
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large, fcn_resnet50

import camscope
from camscope.errors import CamscopeError

SIZE = 64


class OutOnly(nn.Module):
    """pytorch-grad-cam's tutorial wrapper: the segmentation logits of torchvision's ``{"out": ...}``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _calibrated(model: nn.Module) -> nn.Module:
    """Batch-norm statistics from one pass over random images (random weights otherwise shrink the signal),
    and class biases that centre the logits, so that every class wins somewhere."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))  # the test images
    model.train()
    with torch.no_grad():
        model(images)
        model.eval()
        model.classifier[-1].bias -= model(images)["out"].mean(dim=(0, 2, 3))
    return model


@pytest.fixture(scope="module")
def fcn() -> nn.Module:
    torch.manual_seed(0)
    return fcn_resnet50(weights=None, weights_backbone=None, num_classes=3, aux_loss=False).eval()


@pytest.fixture(scope="module")
def deeplab() -> nn.Module:
    torch.manual_seed(0)
    return _calibrated(deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3, aux_loss=False))


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _peer_gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: list) -> torch.Tensor:
    with PeerGradCAM(model=model, target_layers=[layer]) as cam:
        cam(input_tensor=x, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(x, layer, targets, activations, grads, False)
    model.zero_grad(set_to_none=True)
    return torch.as_tensor(raw)


def test_segmentation_target_matches_pytorch_grad_cam_on_fcn(fcn):
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        predicted = fcn(image)["out"].argmax(dim=1)
    category = int(predicted.flatten()[0])
    mask = (predicted[0] == category).float().numpy()
    assert 0 < mask.sum() < 32 * 32
    ours = camscope.explain(fcn, image, layer="backbone.layer4", target=camscope.SegmentationTarget(category))
    peer = _peer_gradcam(OutOnly(fcn), fcn.backbone.layer4, image, [SemanticSegmentationTarget(category, mask)])
    assert peer.abs().max() > 1e-4
    torch.testing.assert_close(ours.raw, peer, atol=1e-5 * peer.abs().max(), rtol=0)  # max abs diff ~1e-9
    torch.testing.assert_close(ours.targets.region(), torch.as_tensor(mask)[None])  # the predicted region
    assert ours.classes.tolist() == [category] and ours.logits.shape == (1, 3, 32, 32)


def test_segmentation_target_ablationcam_matches_pytorch_grad_cam_on_deeplabv3(deeplab, x):
    image = x[:1]
    with torch.no_grad():
        logits = deeplab(image)["out"]
    mask = (logits.argmax(dim=1)[0] == 2).float()
    assert 0 < mask.sum() < SIZE * SIZE
    target = camscope.SegmentationTarget(2, mask)
    layer = deeplab.backbone["1"].block[0]  # after a ReLU
    ours = camscope.explain(
        deeplab, image, method="ablationcam", layer="backbone.1.block.0", target=target, batch_size=16
    )
    targets = [SemanticSegmentationTarget(2, mask.numpy())]
    with PeerAblationCAM(model=OutOnly(deeplab), target_layers=[layer], batch_size=16) as cam:
        cam(input_tensor=image, targets=targets)
        activations = cam.activations_and_grads.activations[0]
        assert activations.min() == 0
        weights = torch.as_tensor(cam.get_cam_weights(image, layer, targets, activations, None))
    assert weights.abs().max() > 1e-4
    torch.testing.assert_close(ours.weights, weights, atol=1e-5, rtol=1e-4)


def test_why_this_region_is_one_class_and_not_another_matches_brute_force(deeplab, x):
    mask = torch.zeros(SIZE, SIZE)
    mask[8:40, 16:56] = 1
    target = camscope.OnRegion(mask, camscope.Finer(explained=1, references=[2], gamma=0.6))
    ours = camscope.explain(deeplab, x, layer="backbone.4", target=target)

    store = {}
    handle = deeplab.backbone["4"].register_forward_hook(lambda _m, _i, out: store.update(a=out))
    try:
        logits = deeplab(x)["out"]
    finally:
        handle.remove()
    score = (logits[:, 1] * mask).sum(dim=(1, 2)) - 0.6 * (logits[:, 2] * mask).sum(dim=(1, 2))
    (grads,) = torch.autograd.grad(score.sum(), store["a"])
    expected = (grads.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(dim=1).detach()
    torch.testing.assert_close(ours.scores, score.detach())
    torch.testing.assert_close(ours.raw, expected, atol=1e-6 * expected.abs().max(), rtol=0)


class QuarterLogits(nn.Module):
    """A Hugging Face-style segmenter: ``.logits`` at a quarter of the input's resolution."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.decoder = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.decoder(self.encoder(pixel_values)), hidden_states=None)


def test_hugging_face_style_logits_and_a_mask_at_the_input_resolution():
    model = QuarterLogits().eval()
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[2:9, 3:14] = True  # not aligned with the 4 x 4 cells: fractions of cells
    ours = camscope.explain(model, image, layer="encoder.1", target=camscope.SegmentationTarget(3, mask))

    store = {}
    handle = model.encoder[1].register_forward_hook(lambda _m, _i, out: store.update(a=out))
    try:
        logits = model(image).logits
    finally:
        handle.remove()
    coverage = F.avg_pool2d(mask.float()[None, None], 4)[0, 0]  # the fraction of each logit cell in the mask
    score = (logits[0, 3] * coverage).sum()
    (grads,) = torch.autograd.grad(score, store["a"])
    expected = (grads.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(dim=1).detach()
    torch.testing.assert_close(ours.scores, score.detach().reshape(1))
    torch.testing.assert_close(ours.raw, expected)


class TinySegmenter3D(nn.Module):
    """A volume segmenter (Conv3d), logits per voxel."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv3d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv3d(6, 8, 3, padding=1), nn.ReLU()
        )
        self.classifier = nn.Conv3d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def test_volumes_match_pytorch_grad_cam():
    model = TinySegmenter3D().eval()
    volume = torch.rand(2, 1, 6, 8, 8, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(6, 8, 8)
    mask[1:4, 2:6, 3:7] = 1
    ours = camscope.explain(model, volume, layer="features.3", target=camscope.SegmentationTarget([0, 2], mask))
    peer = _peer_gradcam(
        model,
        model.features[3],
        volume,
        [SemanticSegmentationTarget(0, mask.numpy()), SemanticSegmentationTarget(2, mask.numpy())],
    )
    assert ours.raw.shape == ours.maps.shape == (2, 6, 8, 8)
    torch.testing.assert_close(ours.raw, peer, atol=1e-6 * peer.abs().max(), rtol=0)


def test_region_mistakes_get_one_clear_error_and_an_empty_region_warns():
    model = TinySegmenter3D().eval()
    volume = torch.rand(1, 1, 6, 8, 8)
    with pytest.raises(CamscopeError, match="integer multiple"):
        camscope.explain(model, volume, layer="features.3", target=camscope.SegmentationTarget(0, torch.ones(5, 8, 8)))
    with pytest.raises(CamscopeError, match="needs the class"):
        camscope.SegmentationTarget(None)
    with pytest.raises(CamscopeError, match="out of range"):
        camscope.explain(model, volume, layer="features.3", target=camscope.SegmentationTarget(7))
    with pytest.raises(CamscopeError, match="logits per position"):
        camscope.SegmentationTarget(0)(torch.zeros(2, 3))
    with pytest.raises(CamscopeError, match="NaN"):
        camscope.SegmentationTarget(0, torch.full((8, 8), float("nan")))
    never = QuarterLogits().eval()
    with torch.no_grad():
        never.decoder[2].bias[3] = -100.0  # class 3 is predicted nowhere
    with pytest.warns(camscope.TargetWarning, match="empty"):
        e = camscope.explain(never, torch.rand(1, 3, 16, 16), layer="encoder.1", target=camscope.SegmentationTarget(3))
    assert float(e.scores[0]) == 0 and float(e.maps.abs().max()) == 0
