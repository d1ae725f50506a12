"""A small detector and a small segmenter of the synthetic species scenes (:mod:`camscope.data.scenes`).

Both share :class:`SceneFeatures`, a four-stage CNN (strides 2, 4, 8, 16) whose stages
are joined top-down as in a feature pyramid (Lin et al., "Feature Pyramid Networks for
Object Detection", arXiv:1612.03144) into one grid at stride 4: ``model.features``, the
layer camscope explains (:attr:`SceneDetector.cam_layer`).

* :class:`SceneDetector` is anchor-free in the manner of CenterNet (Zhou et al., "Objects
  as Points", arXiv:1904.07850): per class a heatmap of object centres, and per position
  the box's size and the centre's sub-cell offset. Its output is torchvision's: one dict
  per image with ``boxes`` (``xyxy`` input pixels), ``labels`` (1 to C; 0 is the
  background) and ``scores``, the best ``detections_per_img`` peaks above ``score_thresh``
  in decreasing score, so :class:`camscope.BoxTarget` and :class:`camscope.OnBox` read it
  as they read torchvision's detectors, and the scores and boxes stay differentiable.
* :class:`SceneSegmenter` gives ``{"out": logits}`` ``[B, C + 1, H, W]`` (channel 0 the
  background), as torchvision's FCN and DeepLabV3, for :class:`camscope.SegmentationTarget`.

Their losses (:meth:`SceneDetector.loss`, :meth:`SceneSegmenter.loss`) and the test
scores (:func:`detection_average_precision`, :func:`segmentation_iou`) are here too, so
that ``scripts/train_scene_models.py`` and a user fine-tuning them share one definition.

Example:
    >>> import torch
    >>> detector = SceneDetector(num_classes=5).eval()
    >>> found = detector(torch.rand(2, 3, 96, 96))
    >>> sorted(found[0]), found[0]["boxes"].shape[1]
    (['boxes', 'labels', 'scores'], 4)
    >>> SceneSegmenter(num_classes=5)(torch.rand(1, 3, 96, 96))["out"].shape
    torch.Size([1, 5, 96, 96])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.errors import CamscopeError

__all__ = [
    "SIDE_MULTIPLE",
    "SceneDetector",
    "SceneFeatures",
    "SceneSegmenter",
    "detection_average_precision",
    "segmentation_iou",
]


def _block(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU()
    )


class SceneFeatures(nn.Module):
    """Four stages of two 3x3 conv blocks (the first of each with stride 2), joined top-down at stride 4.

    ``p4 = top(c4)``, ``p3 = lateral3(c3) + up(p4)``, ``p2 = lateral2(c2) + up(p3)`` (1x1
    convolutions, nearest upsampling by 2), then a conv block: ``[B, out_channels, H/4, W/4]``.

    Args:
        widths: the four stages' channels.
        out_channels: channels of the joined grid.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 48, 64), out_channels: int = 32) -> None:
        super().__init__()
        if len(widths) != 4 or min(widths) < 1 or out_channels < 1:
            raise CamscopeError(f"widths must be four positive channel counts, got {list(widths)}")
        channels = [3, *widths]
        self.stages = nn.ModuleList(
            nn.Sequential(_block(channels[i], channels[i + 1], stride=2), _block(channels[i + 1], channels[i + 1]))
            for i in range(4)
        )
        self.top = nn.Conv2d(widths[3], out_channels, 1)
        self.lateral3 = nn.Conv2d(widths[2], out_channels, 1)
        self.lateral2 = nn.Conv2d(widths[1], out_channels, 1)
        self.smooth = _block(out_channels, out_channels)

    def forward(self, images: Tensor) -> Tensor:
        outputs = []
        x = images
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        _, c2, c3, c4 = outputs
        p3 = self.lateral3(c3) + F.interpolate(self.top(c4), size=c3.shape[2:], mode="nearest")
        p2 = self.lateral2(c2) + F.interpolate(p3, size=c2.shape[2:], mode="nearest")
        return self.smooth(p2)


#: The scene models' image sides are multiples of this (the backbone's total stride).
SIDE_MULTIPLE = 16


def _check_images(images: Any) -> Tensor:
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, Tensor) for i in images):
        images = torch.stack(list(images))
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise CamscopeError(f"the scene models take RGB images [B, 3, H, W] in [0, 1], got {shape}")
    if images.shape[2] % SIDE_MULTIPLE or images.shape[3] % SIDE_MULTIPLE:
        raise CamscopeError(f"image sides must be multiples of {SIDE_MULTIPLE} pixels, got {list(images.shape[2:])}")
    return images


class SceneDetector(nn.Module):
    """A CenterNet-style detector with torchvision's output (see :mod:`camscope.models.scene_models`).

    The head (a conv block, then a 1x1 convolution) gives per position of the stride-4 grid
    ``C`` centre logits, the box's log width and height in grid cells and the centre's
    offset within the cell. Decoding: ``p = sigmoid(logits)``; a peak is a position equal to
    the 3x3 maximum of its class's map; the ``detections_per_img`` best peaks with
    ``p > score_thresh`` are the detections, with score ``p``, label ``class + 1`` and box
    centre ``(cell + offset) * 4``, size ``exp(log size) * 4``.

    Args:
        num_classes: classes including the background (labels 1 to ``num_classes - 1``), as torchvision.
        widths, channels: of :class:`SceneFeatures`.
        detections_per_img: the most detections per image.
        score_thresh: the least score of a detection.

    Attributes:
        features: the :class:`SceneFeatures` (``cam_layer``).
        stride: 4, input pixels per grid cell.
    """

    cam_layer: str = "features"
    stride: int = 4

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = (16, 32, 48, 64),
        channels: int = 32,
        detections_per_img: int = 20,
        score_thresh: float = 0.05,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise CamscopeError(f"num_classes counts the background too: at least 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.detections_per_img = int(detections_per_img)
        self.score_thresh = float(score_thresh)
        self.config = {"num_classes": self.num_classes, "widths": [int(w) for w in widths], "channels": int(channels)}
        self.features = SceneFeatures(widths, channels)
        block, output = _block(channels, channels), nn.Conv2d(channels, num_classes - 1 + 4, 1)
        with torch.no_grad():  # CenterNet's prior: every position starts as an object centre with p = 0.1
            assert output.bias is not None
            output.bias[: num_classes - 1].fill_(-2.19)
        self.head = nn.Sequential(block, output)

    def raw(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The head's maps: centre logits ``[B, C, h, w]``, log sizes ``[B, 2, h, w]``, offsets ``[B, 2, h, w]``."""
        out = self.head(self.features(_check_images(images)))
        classes = self.num_classes - 1
        return out[:, :classes], out[:, classes : classes + 2], out[:, classes + 2 :]

    def forward(self, images: Tensor) -> list[dict[str, Tensor]]:
        logits, log_size, offset = self.raw(images)
        batch, classes, height, width = logits.shape
        heat = logits.sigmoid()
        with torch.no_grad():
            peaks = (heat == F.max_pool2d(heat, 3, stride=1, padding=1)).to(heat.dtype)
        count = min(self.detections_per_img, classes * height * width)
        scores, index = (heat * peaks).flatten(1).topk(count, dim=1)
        position = index % (height * width)
        cells = torch.stack([position % width, position // width], dim=1).to(heat.dtype)  # [B, 2, n] (x, y)
        gathered = position[:, None, :].expand(-1, 2, -1)
        centre = (cells + offset.flatten(2).gather(2, gathered)) * self.stride
        half = log_size.flatten(2).gather(2, gathered).clamp(max=8.0).exp() * (self.stride / 2)
        boxes = torch.cat([centre - half, centre + half], dim=1).transpose(1, 2)  # [B, n, 4]
        labels = index // (height * width) + 1
        keep = scores > self.score_thresh
        return [
            {"boxes": boxes[b][keep[b]], "labels": labels[b][keep[b]], "scores": scores[b][keep[b]]}
            for b in range(batch)
        ]

    def loss(self, images: Tensor, labels: Tensor, boxes: Tensor) -> dict[str, Tensor]:
        """CenterNet's training losses for objects ``labels`` ``[B, K]`` (1 to C, -1: none) and ``boxes`` ``[B, K, 4]``.

        ``heatmap``: the penalty-reduced focal loss (alpha 2, beta 4) against Gaussians at
        the centres (standard deviations a sixth of the box's sides, at least half a cell),
        per object; ``size`` and ``offset``: L1 at the centre cells, per object.
        """
        logits, log_size, offset = self.raw(images)
        target, cells, wanted_size, wanted_offset, present = self._targets(labels, boxes, logits.shape[2:])
        p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
        positive = target == 1
        focal = torch.where(positive, (1 - p) ** 2 * p.log(), (1 - target) ** 4 * p**2 * (1 - p).log())
        objects = present.sum().clamp(min=1)
        flat = cells[:, None, :].expand(-1, 2, -1)
        size_error = (log_size.flatten(2).gather(2, flat) - wanted_size).abs().sum(dim=1)
        offset_error = (offset.flatten(2).gather(2, flat) - wanted_offset).abs().sum(dim=1)
        return {
            "heatmap": -focal.sum() / objects,
            "size": (size_error * present).sum() / objects,
            "offset": (offset_error * present).sum() / objects,
        }

    def _targets(self, labels: Tensor, boxes: Tensor, grid: Sequence[int]) -> tuple[Tensor, ...]:
        height, width = grid
        device = labels.device
        present = labels >= 1
        boxes = boxes.to(device=device, dtype=torch.float32) / self.stride
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # [B, K, 2] in cells
        cell = centre.floor().clamp(min=0)
        cell = torch.minimum(cell, torch.tensor([width - 1.0, height - 1.0], device=device))
        sides = (boxes[..., 2:] - boxes[..., :2]).clamp(min=1e-3)
        sigma = (sides / 6).clamp(min=0.5)
        xs = torch.arange(width, dtype=torch.float32, device=device)
        ys = torch.arange(height, dtype=torch.float32, device=device)
        gx = ((xs[None, None, :] - cell[..., 0:1]) / sigma[..., 0:1]) ** 2  # [B, K, w]
        gy = ((ys[None, None, :] - cell[..., 1:2]) / sigma[..., 1:2]) ** 2  # [B, K, h]
        gauss = torch.exp(-(gy[..., :, None] + gx[..., None, :]) / 2) * present[..., None, None]  # [B, K, h, w]
        one_hot = F.one_hot((labels - 1).clamp(min=0), self.num_classes - 1).float() * present[..., None]
        target = (gauss[:, :, None] * one_hot[..., None, None]).amax(dim=1)  # [B, C, h, w]
        index = (cell[..., 1] * width + cell[..., 0]).long()
        return target, index, sides.log().transpose(1, 2), (centre - cell).transpose(1, 2), present.float()


class SceneSegmenter(nn.Module):
    """A small semantic segmenter: :class:`SceneFeatures`, a conv block, a 1x1 classifier, bilinear upsampling by 4.

    Returns ``{"out": logits}`` ``[B, num_classes, H, W]`` (channel 0 the background), as
    torchvision's segmentation models.

    Args:
        num_classes: classes including the background.
        widths, channels: of :class:`SceneFeatures`.
    """

    cam_layer: str = "features"
    stride: int = 4

    def __init__(self, num_classes: int, widths: Sequence[int] = (16, 32, 48, 64), channels: int = 32) -> None:
        super().__init__()
        if num_classes < 2:
            raise CamscopeError(f"num_classes counts the background too: at least 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.config = {"num_classes": self.num_classes, "widths": [int(w) for w in widths], "channels": int(channels)}
        self.features = SceneFeatures(widths, channels)
        self.classifier = nn.Sequential(_block(channels, channels), nn.Conv2d(channels, num_classes, 1))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        images = _check_images(images)
        logits = self.classifier(self.features(images))
        return {"out": F.interpolate(logits, size=images.shape[2:], mode="bilinear", align_corners=False)}

    def loss(self, images: Tensor, semantic: Tensor) -> dict[str, Tensor]:
        """Pixel cross-entropy against the classes ``semantic`` ``[B, H, W]`` (0 the background)."""
        return {"pixels": F.cross_entropy(self(images)["out"], semantic.long())}


def detection_average_precision(
    detections: Sequence[dict[str, Tensor]], labels: Tensor, boxes: Tensor, iou_threshold: float = 0.5
) -> dict[int, float]:
    """Average precision per class at an IoU threshold (PASCAL VOC 2010+: the area under the interpolated curve).

    Detections of a class, over all images in decreasing score, are true positives when
    their IoU with a not yet matched ground-truth box of the class exceeds ``iou_threshold``
    (the best-overlapping one), else false positives; AP is the area under precision
    (made non-increasing from the right) against recall. Classes without ground truth are
    left out.

    Args:
        detections: torchvision-style dicts, one per image.
        labels: ``[N, K]`` ground-truth labels (-1: none).
        boxes: ``[N, K, 4]`` ground-truth ``xyxy`` boxes.

    Example:
        >>> import torch
        >>> found = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1]),
        ...           "scores": torch.tensor([0.9, 0.8])}]
        >>> detection_average_precision(found, torch.tensor([[1, 1]]), torch.tensor([[[0, 0, 10, 10], [50, 50, 60, 60]]]))
        {1: 0.5}
    """
    from torchvision.ops import box_iou

    results: dict[int, float] = {}
    for c in sorted({int(v) for v in labels.flatten().tolist() if v >= 1}):
        truth = [boxes[i][labels[i] == c].float() for i in range(len(detections))]
        total = sum(t.shape[0] for t in truth)
        found = [
            (float(s), i, box)
            for i, d in enumerate(detections)
            for s, box in zip(d["scores"][d["labels"] == c], d["boxes"][d["labels"] == c])
        ]
        found.sort(key=lambda item: -item[0])
        used = [torch.zeros(t.shape[0], dtype=torch.bool) for t in truth]
        hits = []
        for _, i, box in found:
            hit = False
            if truth[i].shape[0]:
                overlaps = box_iou(box[None].detach().float(), truth[i])[0]
                best = int(overlaps.argmax())
                if float(overlaps[best]) > iou_threshold and not bool(used[i][best]):
                    used[i][best] = hit = True
            hits.append(hit)
        results[c] = _area(torch.tensor(hits, dtype=torch.bool), total)
    return results


def _area(hits: Tensor, total: int) -> float:
    """The area under the interpolated precision-recall curve of ranked hits against ``total`` positives."""
    if hits.numel() == 0 or total == 0:
        return 0.0
    true = hits.double().cumsum(0)
    precision = true / torch.arange(1, hits.numel() + 1, dtype=torch.float64)
    recall = true / total
    precision = precision.flip(0).cummax(0).values.flip(0)
    steps = torch.cat([recall.new_zeros(1), recall]).diff()
    return float((steps * precision).sum())


def segmentation_iou(logits: Tensor, semantic: Tensor, num_classes: int) -> Tensor:
    """``[num_classes]`` IoU of the predicted classes (``argmax``) with ``semantic`` per class (NaN: absent in both).

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # predicts class 0 then 1
        >>> segmentation_iou(logits, torch.tensor([[[0, 0]]]), 2)
        tensor([0.5000, 0.0000], dtype=torch.float64)
    """
    predicted = logits.argmax(dim=1).flatten()
    truth = semantic.flatten().long()
    classes = torch.arange(num_classes, device=predicted.device)
    p, t = predicted[None] == classes[:, None], truth[None] == classes[:, None]
    intersection = (p & t).sum(dim=1).double()
    union = (p | t).sum(dim=1).double()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, float("nan")))
