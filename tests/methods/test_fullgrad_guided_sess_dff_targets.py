"""FullGrad, Guided Grad-CAM, SESS and DFF with every kind of target: closed forms where the score is linear."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import box_convert

import camscope
from camscope.errors import CamscopeError
from conftest import TinyCNN

METHODS = ["fullgrad", "guided-gradcam", "sess", "dff"]
OPTIONS = {"sess": {"num_scales": 2}, "dff": {"components": 3, "iterations": 30}}


class Segmenter(nn.Module):
    """Per-pixel logits ``[B, 3, H, W]``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1))
        self.classifier = nn.Conv2d(6, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.features(x)))


class Yolo(nn.Module):
    """A YOLO-style head on a 4 x 4 grid: ``[B, 16, 4 + 3]`` (cx, cy, w, h, class scores)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1))
        self.head = nn.Conv2d(8, 7, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(torch.relu(self.features(x))).flatten(2)
        size = x.shape[-1]
        boxes = torch.cat([out[:, :2].sigmoid() * size, out[:, 2:4].sigmoid() * size / 2 + 2], dim=1)
        return torch.cat([boxes, out[:, 4:].sigmoid()], dim=1).transpose(1, 2)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))


@pytest.mark.parametrize("method", METHODS)
def test_regions_and_boxes(one_thread, images, method) -> None:
    segmenter, yolo = Segmenter().eval(), Yolo().eval()
    with torch.no_grad():  # a box the model predicts (one per image), explained as class 2
        predicted = box_convert(yolo(images)[:, 5, :4], "cxcywh", "xyxy")
    boxes = camscope.BoxTarget([2, 2], predicted[:, None], detections=camscope.YoloOutputs())
    mask = torch.zeros(16, 16)
    mask[4:12, 2:9] = 1
    region = camscope.SegmentationTarget(1, mask)
    if method == "sess":  # crops move every place in the image
        for model, target in ((segmenter, region), (yolo, boxes)):
            with pytest.raises(CamscopeError, match="refers to places in the whole image"):
                camscope.explain(model, images, method=method, layer="features.2", target=target)
        return
    for model, target in ((segmenter, region), (yolo, boxes)):
        explanation = camscope.explain(
            model, images, method=method, layer="features.2", target=target, **OPTIONS.get(method, {})
        )
        assert explanation.maps.shape == (2, 16, 16) and bool(torch.isfinite(explanation.maps).all())
        assert float(explanation.maps.amax()) == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_heads_and_comparisons(one_thread, images, method) -> None:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    options = {"layer": "features.3", **OPTIONS.get(method, {})}
    targets = [
        camscope.SoftmaxTarget([1, 2]),
        camscope.RegressionTarget(3, direction="decrease"),
        camscope.ScoreTarget(lambda y: y[:, 0] * y[:, 1]),
        camscope.MultiLabel([[0, 2], [1]]),
    ]
    for target in targets:
        explanation = camscope.explain(model, images, method=method, target=target, **options)
        assert bool(torch.isfinite(explanation.maps).all()) and explanation.maps.shape[1:] == (16, 16)
    difference = camscope.explain(model, images, method=method, target=camscope.ClassDifference(1, 3, 0.5), **options)
    if method == "fullgrad":  # completeness: the terms and the head's biases add up to y_1 - 0.5 y_3
        expected = model(images)[:, 1] - 0.5 * model(images)[:, 3] - model.fc.bias[1] + 0.5 * model.fc.bias[3]
        torch.testing.assert_close(difference.extras["term_sums"].sum(dim=1), expected.detach(), rtol=1e-4, atol=1e-6)
    if method == "dff":  # linear in the score
        one = camscope.explain(model, images, method=method, target=1, **options).extras["concept_scores"]
        three = camscope.explain(model, images, method=method, target=3, **options).extras["concept_scores"]
        torch.testing.assert_close(difference.extras["concept_scores"], one - 0.5 * three, rtol=1e-4, atol=1e-7)
    if method == "guided-gradcam":
        gradcam = camscope.explain(model, images, target=camscope.ClassDifference(1, 3, 0.5), **options)
        torch.testing.assert_close(difference.extras["gradcam"], gradcam.maps)
