"""Box targets on a torchvision detector with random weights: parity with pytorch-grad-cam 1.5.7, brute force."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from detectors import SIZE, tiny_detector
from pytorch_grad_cam import AblationCAM as PeerAblationCAM
from pytorch_grad_cam import EigenCAM as PeerEigenCAM
from pytorch_grad_cam import GradCAM as PeerGradCAM
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn
from torchvision.ops import box_convert, box_iou

import camscope
from camscope.engine.regions import box_embeddings
from camscope.errors import CamscopeError
from camscope.stats.reference_group import ReferenceGroup
from camscope.targets.detection import TorchvisionDetections, box_scores

LAYER = "backbone.fpn.layer_blocks.0"


@pytest.fixture(scope="module")
def detector() -> nn.Module:
    return tiny_detector()


@pytest.fixture(scope="module")
def scene(detector):
    """Two images and their detections (boxes, labels, scores), computed once."""
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        detections = detector(x)
    return x, detections


def _layer_hook(module: nn.Module):
    """Record a layer's output (kept in the graph) during a forward pass."""
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, output):
        store["a"] = output

    return store, module.register_forward_hook(hook)


def test_box_target_gradcam_matches_fasterrcnn_box_score_target(detector, scene):
    x, detections = scene
    labels = [d["labels"][:3] for d in detections]
    boxes = [d["boxes"][:3] for d in detections]
    ours = camscope.explain(detector, x, layer=LAYER, target=camscope.BoxTarget(labels, boxes, match="any-label"))
    layer = detector.backbone.fpn.layer_blocks[0]
    targets = [FasterRCNNBoxScoreTarget(lab.numpy(), box.numpy()) for lab, box in zip(labels, boxes)]
    with PeerGradCAM(model=detector, target_layers=[layer]) as cam:
        final = cam(input_tensor=x, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = torch.as_tensor(cam.get_cam_image(x, layer, targets, activations, grads, False))
    detector.zero_grad(set_to_none=True)
    # Each box is a detection itself (IoU 1): both matching rules find it, scores are 3 x (1 + score).
    same = camscope.BoxTarget(labels, boxes)
    torch.testing.assert_close(same(same.read(detections)), ours.scores)
    assert bool((ours.scores > 3).all())
    assert raw.abs().max() > 1e-3  # the boxes' scores depend on this level
    torch.testing.assert_close(ours.raw, raw, atol=1e-6 * raw.abs().max(), rtol=0)  # max abs diff ~1e-8
    torch.testing.assert_close(
        ours.maps, camscope.engine.maps.normalize_maps(torch.as_tensor(final)), atol=1e-5, rtol=0
    )


def test_box_target_ablationcam_matches_pytorch_grad_cam(detector, scene):
    x = scene[0][:1]
    detection = scene[1][0]
    labels, boxes = detection["labels"][:2], detection["boxes"][:2]
    layer = detector.backbone.body["1"].block[0]  # after a ReLU: pytorch-grad-cam ablates with 0 there
    ours = camscope.explain(
        detector,
        x,
        method="ablationcam",
        layer="backbone.body.1.block.0",
        target=camscope.BoxTarget(labels, boxes, match="any-label"),
        batch_size=16,
        recompute="always",  # every ablated copy through the whole detector, as pytorch-grad-cam
    )
    targets = [FasterRCNNBoxScoreTarget(labels.numpy(), boxes.numpy())]
    with PeerAblationCAM(model=detector, target_layers=[layer], batch_size=16) as cam:
        cam(input_tensor=x, targets=targets)
        activations = cam.activations_and_grads.activations[0]
        assert activations.min() == 0
        weights = torch.as_tensor(cam.get_cam_weights(x, layer, targets, activations, None))
    torch.testing.assert_close(ours.weights, weights, atol=1e-5, rtol=1e-4)
    assert weights.abs().max() > 1e-3


def test_feature_levels_to_one_grid_match_the_peer_reshape_transform(detector, scene):
    x, detections = scene
    target = camscope.BoxTarget(detections[0]["labels"][:1], detections[0]["boxes"][:1])
    ours = camscope.explain(
        detector, x[:1], method="eigencam", layer="backbone", levels=fasterrcnn_reshape_transform, target=target
    )
    peer_target = [FasterRCNNBoxScoreTarget(detections[0]["labels"][:1].numpy(), detections[0]["boxes"][:1].numpy())]
    with PeerEigenCAM(detector, [detector.backbone], reshape_transform=fasterrcnn_reshape_transform) as cam:
        cam(input_tensor=x[:1], targets=peer_target)
        expected = torch.as_tensor(get_2d_projection(cam.activations_and_grads.activations[0].numpy()))
    assert ours.raw.shape == expected.shape == (1, 2, 2)  # the 'pool' level's grid
    error = min((ours.raw - expected).abs().max(), (ours.raw + expected).abs().max())  # an eigenvector's sign
    assert error < 1e-4 * expected.abs().max()


def test_feature_levels_one_grid_or_each_with_gradients(detector, scene):
    x, detections = scene
    target = camscope.BoxTarget(detections[0]["labels"][:2], detections[0]["boxes"][:2])
    grid = camscope.explain(detector, x[:1], layer="backbone", target=target)
    each = camscope.explain(detector, x[:1], layer="backbone", levels="each", target=target)
    # The default grid is the smallest level's; 'each' explains every level as its own layer.
    assert grid.raw.shape == (1, 2, 2) and grid.activations.shape[1] == 3 * 256
    assert each.layer == ["backbone[0]", "backbone[1]", "backbone[pool]"]
    exact = camscope.explain(detector, x[:1], layer=LAYER, target=target)
    # Level 0 comes out of layer_blocks.0: its own map is that layer's Grad-CAM.
    torch.testing.assert_close(each.layers["backbone[0]"].raw, exact.raw)


def _box_score_by_hand(detection: dict, box: torch.Tensor, label: int, threshold: float = 0.5) -> torch.Tensor:
    """Score of one box for one class: the detection of that class of highest IoU, its score if IoU > threshold."""
    best, best_iou = None, -1.0
    for i in range(detection["boxes"].shape[0]):
        if int(detection["labels"][i]) != label:
            continue
        iou = float(box_iou(box[None], detection["boxes"][i : i + 1].detach())[0, 0])
        if iou > best_iou:
            best, best_iou = i, iou
    if best is None or best_iou <= threshold:
        return torch.zeros(())
    return detection["scores"][best]


def test_why_this_box_and_not_another_class_matches_brute_force(detector, scene):
    x, detections = scene
    box = detections[0]["boxes"][0]
    explained = int(detections[0]["labels"][0])
    versus = next(c for c in (1, 2, 3) if c != explained)
    target = camscope.OnBox(box, camscope.Finer(explained=explained, references=[versus], gamma=0.6))
    ours = camscope.explain(detector, x[:1], layer=LAYER, target=target)

    store, handle = _layer_hook(detector.backbone.fpn.layer_blocks[0])
    try:
        detection = detector(x[:1])[0]
    finally:
        handle.remove()
    score = _box_score_by_hand(detection, box, explained) - 0.6 * _box_score_by_hand(detection, box, versus)
    (grads,) = torch.autograd.grad(score, store["a"])
    expected = (grads.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(dim=1).detach()
    assert float(_box_score_by_hand(detection, box, versus).detach()) > 0  # the compared class has a detection there
    torch.testing.assert_close(ours.scores, score.detach().reshape(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.raw, expected, atol=1e-6 * expected.abs().max(), rtol=0)
    assert ours.classes.tolist() == [explained] and ours.targets.inner.references().tolist() == [[versus]]


def _pooled_by_hand(activations: torch.Tensor, box: list[int]) -> torch.Tensor:
    """The mean of the activations over the box's pixels, each pixel taking its cell's values."""
    up = F.interpolate(activations, size=(SIZE, SIZE), mode="nearest")
    x0, y0, x1, y1 = box
    return up[:, :, y0:y1, x0:x1].mean(dim=(2, 3))


def test_diffcam_of_a_box_against_boxes_of_other_classes_matches_brute_force(detector, scene):
    x, detections = scene
    explained = int(detections[0]["labels"][0])
    box = [int(v) for v in detections[0]["boxes"][0].round().tolist()]
    bank_boxes, bank_images = [], []
    for image, detection in enumerate(detections):
        for b, label in zip(detection["boxes"], detection["labels"]):
            if int(label) != explained and len(bank_boxes) < 12:
                bank_boxes.append([int(v) for v in b.round().tolist()])
                bank_images.append(image)
    assert len(bank_boxes) >= 4
    images = x[bank_images]
    bank = box_embeddings(detector, images, torch.tensor(bank_boxes, dtype=torch.float64), LAYER)
    group = ReferenceGroup.from_embeddings(bank.double())
    ours = camscope.explain(
        detector,
        x[:1],
        method="diffcam",
        layer=LAYER,
        reference=group,
        regularization=1.0,
        target=camscope.OnBox(torch.tensor(box, dtype=torch.float64)),
    )

    store, handle = _layer_hook(detector.backbone.fpn.layer_blocks[0])
    try:
        with torch.no_grad():
            detector(x)
            activations = store["a"].double()
            detector(images)
            bank_activations = store["a"].double()
    finally:
        handle.remove()
    expected_bank = torch.cat([_pooled_by_hand(bank_activations[i : i + 1], b) for i, b in enumerate(bank_boxes)])
    torch.testing.assert_close(bank.double(), expected_bank, atol=1e-5, rtol=1e-5)
    z = _pooled_by_hand(activations[:1], box)[0]
    mu = expected_bank.mean(dim=0)
    centred = expected_bank - mu
    covariance = centred.T @ centred / len(bank_boxes)
    regularised = covariance + torch.trace(covariance) / covariance.shape[0] * torch.eye(covariance.shape[0])
    w = torch.linalg.solve(regularised, z - mu)
    expected = torch.einsum("k,khw->hw", w, activations[0])[None]
    torch.testing.assert_close(ours.raw.double(), expected, atol=1e-4 * expected.abs().max(), rtol=0)


def test_a_box_without_a_matching_detection_scores_zero_and_warns(detector, scene):
    x, detections = scene
    box = detections[0]["boxes"][:1]
    with pytest.warns(camscope.TargetWarning, match="image 0 box 1"):
        e = camscope.explain(
            detector,
            x[:1],
            layer=LAYER,
            target=camscope.BoxTarget([int(detections[0]["labels"][0]), 0], box.repeat(2, 1)),
        )
    # Label 0 (background) is never detected: that box adds nothing, the other still explains.
    assert float(e.scores[0]) > 1
    with pytest.warns(camscope.TargetWarning):
        empty = camscope.explain(detector, x[:1], layer=LAYER, target=camscope.BoxTarget([0], box))
    assert float(empty.scores[0]) == 0 and float(empty.maps.abs().max()) == 0


def test_gradient_free_scorecam_runs_on_a_detector(detector, scene):
    x, detections = scene
    target = camscope.BoxTarget(detections[0]["labels"][:1], detections[0]["boxes"][:1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", camscope.TargetWarning)  # masked copies may lose the box: score 0 there
        e = camscope.explain(
            detector, x[:1], method="scorecam", layer="backbone.body.1.block.0", target=target, channels=4, batch_size=4
        )
    assert e.maps.shape == (1, SIZE, SIZE) and int((e.weights > 0).sum()) == 4


def test_detector_mistakes_get_one_clear_error(detector, scene):
    x, detections = scene
    target = camscope.BoxTarget(detections[0]["labels"][:1], detections[0]["boxes"][:1])
    with pytest.raises(CamscopeError, match="BoxTarget"):
        camscope.explain(detector, x[:1], layer=LAYER)  # a class target on detections
    with pytest.raises(CamscopeError, match="regions or proposals"):
        camscope.explain(detector, x[:1], layer="roi_heads.box_roi_pool", target=target)
    with pytest.raises(CamscopeError, match="dict of feature levels"):
        camscope.explain(detector, x[:1], method="ablationcam", layer="backbone", target=target)
    with pytest.raises(CamscopeError, match="x1 > x0"):
        camscope.BoxTarget([1], [[10.0, 10.0, 5.0, 20.0]])
    with pytest.raises(CamscopeError, match="integer"):
        camscope.BoxTarget([1.5], [[0.0, 0.0, 5.0, 5.0]])
    with pytest.raises(CamscopeError, match="one label per box"):
        camscope.BoxTarget([1, 2], [[0.0, 0.0, 5.0, 5.0]])
    per_image = camscope.BoxTarget([[1]] * 3, [[[0.0, 0.0, 5.0, 5.0]]] * 3, max_detections=5)
    with pytest.raises(CamscopeError, match="3 images but the batch has 1"):
        per_image(per_image.read(detections[:1]))
    with pytest.raises(CamscopeError, match="levels"):
        camscope.Explainer(detector, layer="backbone", levels="pyramid")


def test_matching_rules_on_detections_of_two_classes():
    # Two detections of one object: class 2 overlaps the query best, class 1 a little less.
    detections = [
        {
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0]]),
            "labels": torch.tensor([2, 1]),
            "scores": torch.tensor([0.7, 0.6]),
        }
    ]
    reader = TorchvisionDetections(max_detections=3)
    packed = reader.read(detections)
    query, labels = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]]), torch.tensor([[1]])
    same = box_scores(reader, packed, query, labels, match="same-label")
    peer_rule = box_scores(reader, packed, query, labels, match="any-label")
    assert same[0, 0].item() == pytest.approx(0.9 + 0.6) and peer_rule.tolist() == [[0.0]]
    peer = FasterRCNNBoxScoreTarget(labels=[1], bounding_boxes=query[0].numpy())(detections[0])
    assert float(peer) == 0.0
    assert box_scores(reader, packed, query, labels, score="score")[0, 0].item() == pytest.approx(0.6)


class TinyYolo(nn.Module):
    """A YOLO-style head: one prediction per cell of a 4 x 4 grid, ``[B, 16, 4 + 3]`` (cx, cy, w, h, classes)."""

    def __init__(self, channels_last: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()
        )
        self.head = nn.Conv2d(8, 7, 1)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x)).flatten(2)  # [B, 7, 16]
        size = x.shape[-1]
        boxes = torch.cat([out[:, :2].sigmoid() * size, out[:, 2:4].sigmoid() * size / 2 + 2], dim=1)
        raw = torch.cat([boxes, out[:, 4:].sigmoid()], dim=1)
        return raw.transpose(1, 2) if self.channels_last else raw


@pytest.mark.parametrize("channels_last", [True, False])
def test_yolo_style_outputs_through_the_adapter_match_brute_force(channels_last):
    model = TinyYolo(channels_last).eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = model(x)
    predictions = raw if channels_last else raw.transpose(1, 2)
    query = box_convert(predictions[0, 5, :4], "cxcywh", "xyxy")
    reader = camscope.YoloOutputs(channels_last=channels_last)
    ours = camscope.explain(
        model, x, layer="features.3", target=camscope.BoxTarget([2], query[None], detections=reader)
    )

    store, handle = _layer_hook(model.features[3])
    try:
        out = model(x)
    finally:
        handle.remove()
    out = out if channels_last else out.transpose(1, 2)
    ious = box_iou(query[None], box_convert(out[0, :, :4], "cxcywh", "xyxy"))[0]
    best = int(ious.argmax())
    score = ious[best] + out[0, best, 4 + 2]  # every prediction is a detection of every class
    (grads,) = torch.autograd.grad(score, store["a"])
    expected = (grads.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(dim=1).detach()
    torch.testing.assert_close(ours.scores, score.detach().reshape(1))
    torch.testing.assert_close(ours.raw, expected, atol=1e-6, rtol=1e-5)


def test_yolo_reader_formats_and_objectness():
    raw = torch.tensor([[[1.0, 2.0, 4.0, 6.0, 0.5, 0.2, 0.8]]])
    packed = camscope.YoloOutputs(box_format="xywh", objectness=True).read(raw)
    torch.testing.assert_close(packed, torch.tensor([[[1.0, 2.0, 5.0, 8.0, 0.1, 0.4]]]))
    logits = camscope.YoloOutputs(box_format="xyxy", activation="sigmoid").read(
        torch.tensor([[[0.0, 0.0, 1.0, 1.0, 0.0]]])
    )
    assert logits[0, 0, 4] == 0.5
    with pytest.raises(CamscopeError, match="predictions"):
        camscope.YoloOutputs().read(torch.zeros(2, 4))
    with pytest.raises(CamscopeError, match="box_format"):
        camscope.YoloOutputs(box_format="yxyx")
