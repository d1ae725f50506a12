"""Detection targets: the score of a box, and comparisons on a box.

A detector's output is read into a fixed-shape tensor per image (every forward
pass, masked and ablated copies included, gives the same shape), by a reader:

* :class:`TorchvisionDetections` (the default): torchvision's list of dicts with
  ``boxes`` (``xyxy``), ``labels`` and ``scores`` (Faster R-CNN, RetinaNet, FCOS,
  SSD, Mask R-CNN), packed as ``[D, 6]`` rows ``(x0, y0, x1, y1, score, label)``,
  padded to ``max_detections`` rows (the model's own cap, read from it);
* :class:`YoloOutputs`: a raw YOLO-style head ``[B, N, 4 + C]`` (or ``[B, N, 5 + C]``
  with objectness, or ``[B, 4 + C, N]``), before non-maximum suppression, as
  ``[N, 4 + C]`` rows of ``xyxy`` boxes and class scores. Every prediction is a
  detection of every class, with that class's score.

The score of a query box ``q`` with label ``c`` (:func:`box_scores`): among the
detections, the one of highest IoU with ``q``; if its IoU exceeds ``iou_threshold``
and it is a detection of class ``c``, the score is ``IoU + score`` (or ``score``),
else 0. ``match="same-label"`` (default) looks only among the detections of class
``c``; ``match="any-label"`` among all of them, so a better-overlapping detection of
another class gives 0: pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` rule.

* :class:`BoxTarget` sums the scores of the given boxes (one map for all);
* :class:`OnBox` gives the class scores of one box per image, ``[B, C]`` (the score of
  each class's best-matching detection), to any class target: ``OnBox(box,
  Finer(explained=c, references=[d]))`` is "why is this box c and not d".

A query box that matches no detection on the explained inputs scores 0 (no gradient,
an empty map for that box): :class:`BoxTarget` warns (:class:`TargetWarning`) naming it.

Example:
    >>> import torch
    >>> detections = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1]),
    ...                "scores": torch.tensor([0.9])}]
    >>> target = BoxTarget(labels=[1], boxes=[[0.0, 0.0, 10.0, 8.0]], max_detections=4)
    >>> target(target.read(detections))  # IoU 0.8 + score 0.9
    tensor([1.7000])
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from camscope.errors import CamscopeError
from camscope.targets.base import ClassTarget, Target
from camscope.targets.outputs import TargetWarning, is_detections, output_tensor

__all__ = [
    "BOX_MATCHES",
    "BOX_SCORES",
    "BoxTarget",
    "DetectionReader",
    "OnBox",
    "TorchvisionDetections",
    "YoloOutputs",
    "box_iou",
    "box_pool",
    "box_scores",
    "model_detection_cap",
    "model_num_classes",
]

#: Which detections a query box is matched against.
BOX_MATCHES = ("same-label", "any-label")
#: What a matched box scores.
BOX_SCORES = ("iou+score", "score")
#: Rows of packed detections when the model does not say how many it keeps.
DEFAULT_MAX_DETECTIONS = 100


def box_iou(queries: Tensor, boxes: Tensor) -> Tensor:
    """IoU of ``xyxy`` boxes ``[B, M, 4]`` with ``[B, D, 4]``, ``[B, M, D]``.

    The formula of ``torchvision.ops.box_iou``, batched (differentiable in both sets).

    Example:
        >>> import torch
        >>> box_iou(torch.tensor([[[0.0, 0.0, 2.0, 2.0]]]), torch.tensor([[[1.0, 0.0, 3.0, 2.0]]]))
        tensor([[[0.3333]]])
    """
    area1 = (queries[..., 2] - queries[..., 0]) * (queries[..., 3] - queries[..., 1])
    area2 = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    lt = torch.max(queries[..., :, None, :2], boxes[..., None, :, :2])
    rb = torch.min(queries[..., :, None, 2:], boxes[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[..., :, None] + area2[..., None, :] - inter)


class DetectionReader(Protocol):
    """Reads a detector's outputs into a fixed-shape tensor per image and finds the detections of a class."""

    def read(self, outputs: Any) -> Tensor:
        """``[N, D, F]``: ``D`` detections (padded) of ``F`` numbers per image, the same shape on every pass."""
        ...

    def candidates(self, packed: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """For query labels ``[B, M]``: boxes ``[B, D, 4]``, the detections' labels ``[B, D]``, their scores
        for each query's label ``[B, M, D]`` and whether each is a detection of that label ``[B, M, D]``."""
        ...

    def prepare(self, model: nn.Module) -> DetectionReader:
        """The reader with what it needs from the model (its cap on detections)."""
        ...


def model_detection_cap(model: nn.Module) -> int | None:
    """How many detections per image a torchvision detector keeps (``detections_per_img``), if it says.

    Example:
        >>> from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn
        >>> model_detection_cap(fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
        ...                                                           num_classes=3, box_detections_per_img=7))
        7
    """
    for owner in (getattr(model, "roi_heads", None), model):
        cap = getattr(owner, "detections_per_img", None)
        if isinstance(cap, int) and cap > 0:
            return cap
    return None


class TorchvisionDetections:
    """torchvision's detections, a list of dicts ``boxes`` ``[n, 4]`` (``xyxy``), ``labels``, ``scores``.

    Packed as ``[D, 6]`` rows ``(x0, y0, x1, y1, score, label)`` per image, the best
    ``D = max_detections`` by score; missing rows have label -1 and match nothing.

    Args:
        max_detections: rows per image; None: the model's ``detections_per_img`` (read
            by :meth:`prepare`), else 100.

    Example:
        >>> import torch
        >>> reader = TorchvisionDetections(max_detections=3)
        >>> reader.read([{"boxes": torch.ones(1, 4), "labels": torch.tensor([2]), "scores": torch.tensor([0.5])}])
        tensor([[[ 1.0000,  1.0000,  1.0000,  1.0000,  0.5000,  2.0000],
                 [ 0.0000,  0.0000,  0.0000,  0.0000,  0.0000, -1.0000],
                 [ 0.0000,  0.0000,  0.0000,  0.0000,  0.0000, -1.0000]]])
    """

    def __init__(self, max_detections: int | None = None) -> None:
        if max_detections is not None and (isinstance(max_detections, bool) or max_detections < 1):
            raise CamscopeError(f"max_detections must be a positive int, got {max_detections!r}")
        self.max_detections = max_detections

    def prepare(self, model: nn.Module) -> TorchvisionDetections:
        if self.max_detections is not None:
            return self
        return TorchvisionDetections(model_detection_cap(model) or DEFAULT_MAX_DETECTIONS)

    def read(self, outputs: Any) -> Tensor:
        if not is_detections(outputs):
            raise CamscopeError(
                "BoxTarget reads torchvision detections, a list of dicts with 'boxes', 'labels' and 'scores', but the "
                f"model returned {type(outputs).__name__}: for a raw YOLO-style tensor pass detections=YoloOutputs(...)"
            )
        rows = self.max_detections or DEFAULT_MAX_DETECTIONS
        packed = []
        for item in outputs:
            boxes, scores = item["boxes"], item["scores"]
            labels = item.get("labels", torch.zeros_like(scores, dtype=torch.long))
            if scores.shape[0] > rows:  # torchvision sorts by score; keep the best rows
                keep = scores.topk(rows).indices
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            table = torch.cat([boxes, scores[:, None], labels[:, None].to(boxes.dtype)], dim=1)
            padding = table.new_zeros(rows - table.shape[0], 6)
            padding[:, 5] = -1
            packed.append(torch.cat([table, padding]))
        return torch.stack(packed)

    def candidates(self, packed: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        own = packed[..., 5].round().long()
        present = own >= 0
        valid = (own[:, None, :] == labels[:, :, None]) & present[:, None, :]
        scores = packed[..., 4][:, None, :].expand(-1, labels.shape[1], -1)
        return packed[..., :4], torch.where(present, own, -1), scores, valid

    def __repr__(self) -> str:
        return f"TorchvisionDetections(max_detections={self.max_detections})"


class YoloOutputs:
    """A raw YOLO-style head: ``[B, N, 4 + C]`` (boxes and class scores per prediction), before NMS.

    Args:
        box_format: ``"cxcywh"`` (YOLOv5/v8), ``"xyxy"`` or ``"xywh"`` (corner, width, height),
            in input pixels.
        objectness: the rows are ``[4 box, objectness, C classes]``; a class's score is
            ``objectness * class score`` (YOLOv5's confidence).
        channels_last: ``[B, N, F]`` (True, YOLOv5) or ``[B, F, N]`` (False, YOLOv8's head).
        activation: ``None`` (scores are probabilities already) or ``"sigmoid"`` (logits).

    Every prediction counts as a detection of every class, with that class's score; the
    packed tensor is ``[N, 4 + C]`` per image (``xyxy`` boxes and scores).

    Example:
        >>> import torch
        >>> raw = torch.tensor([[[5.0, 5.0, 10.0, 10.0, 0.2, 0.7]]])  # one prediction, two classes
        >>> YoloOutputs().read(raw)
        tensor([[[ 0.0000,  0.0000, 10.0000, 10.0000,  0.2000,  0.7000]]])
    """

    def __init__(
        self,
        box_format: str = "cxcywh",
        objectness: bool = False,
        channels_last: bool = True,
        activation: str | None = None,
    ) -> None:
        if box_format not in ("cxcywh", "xyxy", "xywh"):
            raise CamscopeError(f"box_format must be 'cxcywh', 'xyxy' or 'xywh', got {box_format!r}")
        if activation not in (None, "sigmoid"):
            raise CamscopeError(f"activation must be None or 'sigmoid', got {activation!r}")
        self.box_format = box_format
        self.objectness = bool(objectness)
        self.channels_last = bool(channels_last)
        self.activation = activation

    def prepare(self, model: nn.Module) -> YoloOutputs:
        del model  # the layout is given, not read from the model
        return self

    def read(self, outputs: Any) -> Tensor:
        raw = output_tensor(outputs)
        if not self.channels_last and raw.ndim == 3:
            raw = raw.transpose(1, 2)
        extra = 5 if self.objectness else 4
        if raw.ndim != 3 or raw.shape[2] <= extra:
            raise CamscopeError(
                f"YoloOutputs reads [B, N, {extra} + C] predictions (channels_last=False: [B, {extra} + C, N]), "
                f"got {list(output_tensor(outputs).shape)}"
            )
        boxes = _to_xyxy(raw[..., :4], self.box_format)
        scores = raw[..., extra:]
        if self.activation == "sigmoid":
            scores = scores.sigmoid()
        if self.objectness:
            objectness = raw[..., 4:5].sigmoid() if self.activation == "sigmoid" else raw[..., 4:5]
            scores = objectness * scores
        return torch.cat([boxes, scores], dim=2)

    def candidates(self, packed: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        class_scores = packed[..., 4:]
        if bool((labels >= class_scores.shape[2]).any()):
            raise CamscopeError(
                f"label {int(labels.max())} is out of range for a head of {class_scores.shape[2]} classes"
            )
        index = labels.clamp(min=0)[:, None, :].expand(-1, class_scores.shape[1], -1)
        scores = class_scores.gather(2, index).transpose(1, 2)
        valid = (labels >= 0)[:, :, None].expand_as(scores)
        return packed[..., :4], class_scores.argmax(dim=2), scores, valid

    def __repr__(self) -> str:
        return (
            f"YoloOutputs(box_format={self.box_format!r}, objectness={self.objectness}, "
            f"channels_last={self.channels_last}, activation={self.activation!r})"
        )


def _to_xyxy(boxes: Tensor, box_format: str) -> Tensor:
    if box_format == "xyxy":
        return boxes
    if box_format == "xywh":
        return torch.cat([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], dim=-1)
    half = boxes[..., 2:] / 2
    return torch.cat([boxes[..., :2] - half, boxes[..., :2] + half], dim=-1)


def box_scores(
    reader: DetectionReader,
    packed: Tensor,
    queries: Tensor,
    labels: Tensor,
    iou_threshold: float = 0.5,
    match: str = "same-label",
    score: str = "iou+score",
) -> Tensor:
    """The score of each query box, ``[B, M]``, from packed detections ``[B, D, F]``.

    For query ``m`` (box ``queries[b, m]``, label ``labels[b, m]``; label -1: no query,
    score 0), the detection ``d*`` of highest IoU (among those of the query's label with
    ``match="same-label"``, among all with ``"any-label"``, first on ties) scores
    ``IoU(q, d*) + s(d*)`` (``score="iou+score"``) or ``s(d*)`` (``"score"``) when
    ``IoU > iou_threshold`` and ``d*`` is a detection of the label; else 0.
    Differentiable through the detections' boxes and scores.
    """
    boxes, own, scores, valid = reader.candidates(packed, labels)
    iou = box_iou(queries.to(boxes), boxes)  # [B, M, D]
    if match == "same-label":
        best = torch.where(valid, iou, torch.full_like(iou, -1.0)).argmax(dim=2, keepdim=True)
        matched = valid.gather(2, best)
    else:
        # pytorch-grad-cam: the box of highest IoU among all detections, then its label must be the query's.
        best = torch.where(own[:, None, :] >= 0, iou, torch.full_like(iou, -1.0)).argmax(dim=2, keepdim=True)
        matched = (own[:, None, :].expand_as(iou).gather(2, best) == labels[:, :, None]) & valid.gather(2, best)
    best_iou = iou.gather(2, best)
    value = scores.gather(2, best) + (best_iou if score == "iou+score" else 0)
    hit = matched & (best_iou > iou_threshold) & (labels[:, :, None] >= 0)
    return torch.where(hit, value, torch.zeros_like(value))[..., 0]


class BoxTarget(Target):
    """The score of given boxes in a detector's outputs, summed: one map for all of them.

    Each box ``q`` with label ``c`` scores as :func:`box_scores` says (the detection of
    label ``c`` of highest IoU with ``q``: ``IoU + score`` if the IoU exceeds
    ``iou_threshold``, else 0); the target is the sum over the boxes. With
    ``match="any-label"`` it equals pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``
    (``iou_threshold``, boxes and labels alike).

    A box that matches no detection on the explained inputs scores 0, so it adds nothing
    to the map; a :class:`TargetWarning` names it (an image whose boxes all fail has an
    empty map).

    Args:
        labels: one label per box: ``[M]`` (the same boxes for every image), ``[B, M]``, or
            one list per image.
        boxes: ``xyxy`` boxes in input pixels: ``[M, 4]`` (every image), ``[B, M, 4]``, or one
            ``[M_b, 4]`` list per image (lengths may differ).
        iou_threshold: the IoU a detection must exceed to match (0.5, as pytorch-grad-cam).
        match: ``"same-label"`` (default) or ``"any-label"`` (see :func:`box_scores`).
        score: ``"iou+score"`` (default, pytorch-grad-cam's) or ``"score"`` (the class score only).
        detections: the reader of the model's outputs: :class:`TorchvisionDetections`
            (default) or :class:`YoloOutputs`.
        max_detections: rows kept per image by the default reader (None: the model's cap).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn
        >>> model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=3,
        ...                                               min_size=128, max_size=128, box_score_thresh=0.0).eval()
        >>> x = torch.rand(1, 3, 128, 128)
        >>> found = model(x)[0]
        >>> target = BoxTarget(labels=found["labels"][:1], boxes=found["boxes"][:1])
        >>> e = camscope.explain(model, x, layer="backbone.fpn.layer_blocks.0", target=target)
        >>> e.maps.shape, bool(e.scores[0] > 1)  # IoU 1 with itself + its score
        (torch.Size([1, 128, 128]), True)
    """

    def __init__(
        self,
        labels: Any,
        boxes: Any,
        iou_threshold: float = 0.5,
        *,
        match: str = "same-label",
        score: str = "iou+score",
        detections: DetectionReader | None = None,
        max_detections: int | None = None,
    ) -> None:
        self.labels, self.boxes, self.shared = _query_tensors(labels, boxes)
        self.iou_threshold = _check_threshold(iou_threshold)
        self.match = _check_choice(match, BOX_MATCHES, "match")
        self.score = _check_choice(score, BOX_SCORES, "score")
        self.reader: DetectionReader = detections if detections is not None else TorchvisionDetections(max_detections)
        self._batch: int | None = None

    def _copy(self, **changes: Any) -> BoxTarget:
        copy = object.__new__(BoxTarget)
        copy.__dict__.update(self.__dict__, **changes)
        return copy

    def prepare(self, model: nn.Module) -> BoxTarget:
        return self._copy(reader=self.reader.prepare(model))

    def read(self, outputs: Any) -> Tensor:
        return self.reader.read(outputs)

    def queries(self, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The query labels ``[B, M]`` and boxes ``[B, M, 4]`` for a batch of ``batch`` images."""
        if self.shared:
            labels, boxes = self.labels.expand(batch, -1), self.boxes.expand(batch, -1, -1)
        elif self.labels.shape[0] != batch:
            raise CamscopeError(
                f"BoxTarget has boxes for {self.labels.shape[0]} images but the batch has {batch}: "
                "give one list of boxes per image, or [M, 4] boxes for all"
            )
        else:
            labels, boxes = self.labels, self.boxes
        return labels.to(device), boxes.to(device=device, dtype=dtype)

    def box_scores(self, packed: Tensor) -> Tensor:
        """The score of each box, ``[B, M]`` (0 for padding of per-image lists)."""
        labels, boxes = self.queries(packed.shape[0], packed.device, packed.dtype)
        return box_scores(self.reader, packed, boxes, labels, self.iou_threshold, self.match, self.score)

    def resolve(self, outputs: Tensor) -> BoxTarget:
        scores = self.box_scores(outputs.detach())
        labels, _ = self.queries(outputs.shape[0], outputs.device, outputs.dtype)
        missed = ((scores == 0) & (labels >= 0)).nonzero().tolist()
        if missed:
            shown = ", ".join(f"image {b} box {m}" for b, m in missed[:6]) + (" ..." if len(missed) > 6 else "")
            warnings.warn(
                f"{len(missed)} box(es) match no detection of their label with IoU > {self.iou_threshold} "
                f"({shown}): they score 0 and add nothing to the map",
                TargetWarning,
                stacklevel=2,
            )
        return self._copy(_batch=outputs.shape[0])

    def __call__(self, outputs: Tensor) -> Tensor:
        return self.box_scores(outputs).sum(dim=1)

    def classes(self) -> Tensor | None:
        """The box's label per image, when there is one box per image."""
        if self._batch is None or self.labels.shape[-1] != 1:
            return None
        return self.labels.reshape(-1).expand(self._batch) if self.shared else self.labels[:, 0]

    def __repr__(self) -> str:
        count = self.labels.shape[-1]
        return f"BoxTarget({count} box{'es' if count != 1 else ''}, iou_threshold={self.iou_threshold}, match={self.match!r})"


def model_num_classes(model: nn.Module) -> int | None:
    """The number of classes of a detector (background included), where it says.

    Read from torchvision's Faster R-CNN (its box predictor), RetinaNet and FCOS (their
    classification head), else from an int attribute ``num_classes`` of the model (camscope's
    :class:`~camscope.models.scene_models.SceneDetector`).
    """
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    cls_score = getattr(predictor, "cls_score", None)
    if isinstance(cls_score, nn.Linear):
        return cls_score.out_features
    head = getattr(getattr(model, "head", None), "classification_head", None)
    for count in (getattr(head, "num_classes", None), getattr(model, "num_classes", None)):
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            return count
    return None


class OnBox(Target):
    """The class scores of one box per image, ``[B, C]``, explained by any class target.

    Class ``c``'s score is that of the detection of class ``c`` of highest IoU with the
    box, if the IoU exceeds ``iou_threshold``, else 0 (:func:`box_scores` with
    ``match="same-label"``). ``OnBox(box, camscope.Finer(explained=c, references=[d]))``
    explains ``y_c(box) - gamma y_d(box)``: why this box is ``c`` and not ``d``.
    torchvision's detectors give a box several classes' detections when their score
    passes ``box_score_thresh`` (lower it so that the compared classes have theirs).

    Args:
        boxes: one ``xyxy`` box for every image (``[4]``) or one per image (``[B, 4]``).
        target: the class target on the box's class scores (default: its top class).
        iou_threshold: as :class:`BoxTarget`.
        score: ``"score"`` (default: the class score) or ``"iou+score"``.
        num_classes: ``C``; None reads it from a torchvision detector (or from the head of
            :class:`YoloOutputs`).
        detections: the reader, as :class:`BoxTarget`.
        max_detections: as :class:`BoxTarget`.

    Example:
        >>> import torch
        >>> detections = [{"boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 7.0]]),
        ...                "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.6, 0.3])}]
        >>> target = OnBox([0.0, 0.0, 8.0, 8.0], num_classes=3, max_detections=4)
        >>> target.class_scores(target.read(detections))
        tensor([[0.0000, 0.6000, 0.3000]])
    """

    def __init__(
        self,
        boxes: Any,
        target: Target | None = None,
        *,
        iou_threshold: float = 0.5,
        score: str = "score",
        num_classes: int | None = None,
        detections: DetectionReader | None = None,
        max_detections: int | None = None,
    ) -> None:
        tensor = _box_tensor(boxes, per_image=True)
        if tensor is None:  # a single box [4], for every image
            tensor = _box_tensor([boxes] if not isinstance(boxes, Tensor) else boxes.reshape(1, -1), per_image=True)
        if tensor is None or tensor.shape[0] == 0:
            raise CamscopeError(f"OnBox takes one box [4] for every image or one per image [B, 4], got {boxes!r}")
        self.boxes = tensor
        self.inner = target if target is not None else ClassTarget()
        self.aggregate = self.inner.aggregate
        self.iou_threshold = _check_threshold(iou_threshold)
        self.score = _check_choice(score, BOX_SCORES, "score")
        if num_classes is not None and (isinstance(num_classes, bool) or num_classes < 2):
            raise CamscopeError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.reader: DetectionReader = detections if detections is not None else TorchvisionDetections(max_detections)

    def _copy(self, **changes: Any) -> OnBox:
        copy = object.__new__(OnBox)
        copy.__dict__.update(self.__dict__, **changes)
        return copy

    def prepare(self, model: nn.Module) -> OnBox:
        count = self.num_classes if self.num_classes is not None else model_num_classes(model)
        return self._copy(reader=self.reader.prepare(model), num_classes=count, inner=self.inner.prepare(model))

    def read(self, outputs: Any) -> Tensor:
        return self.reader.read(outputs)

    def class_scores(self, packed: Tensor) -> Tensor:
        """``[B, C]``: the score of each class for the box."""
        batch = packed.shape[0]
        count = self.num_classes if self.num_classes is not None else _dense_classes(self.reader, packed)
        if self.boxes.shape[0] not in (1, batch):
            raise CamscopeError(f"OnBox has {self.boxes.shape[0]} boxes for a batch of {batch}: give one per image")
        boxes = self.boxes.to(device=packed.device, dtype=packed.dtype).expand(batch, 4)
        labels = torch.arange(count, device=packed.device).expand(batch, count)
        return box_scores(
            self.reader,
            packed,
            boxes[:, None, :].expand(batch, count, 4),
            labels,
            self.iou_threshold,
            "same-label",
            self.score,
        )

    def resolve(self, outputs: Tensor) -> OnBox:
        return self._copy(inner=self.inner.resolve(self.class_scores(outputs.detach())))

    def __call__(self, outputs: Tensor) -> Tensor:
        return self.inner(self.class_scores(outputs))

    def baseline_scores(self, outputs: Tensor) -> Tensor:
        return self.inner.baseline_scores(self.class_scores(outputs))

    def classes(self) -> Tensor | None:
        return self.inner.classes()

    def pool(self, activations: Tensor, size: Sequence[int]) -> Tensor:
        """The box's embedding, the mean of ``activations`` ``[B, K, h, w]`` over the box (:func:`box_pool`).

        DiffCAM compares it with its references: with a group of other classes' box
        embeddings (:func:`camscope.engine.regions.box_embeddings`, passed as a
        ``ReferenceGroup``), what sets this box apart. Reference *images* given to DiffCAM
        as a tensor are embedded whole, not by box.
        """
        boxes = self.boxes.to(device=activations.device).expand(activations.shape[0], 4)
        return box_pool(activations, boxes, size)

    def __repr__(self) -> str:
        return f"OnBox({self.boxes.tolist()}, {self.inner!r})"


def _dense_classes(reader: DetectionReader, packed: Tensor) -> int:
    if isinstance(reader, YoloOutputs):
        return packed.shape[-1] - 4
    raise CamscopeError(
        "OnBox needs the number of classes: pass num_classes= (it is read from torchvision's Faster R-CNN, "
        "RetinaNet and FCOS when explained through camscope.explain)"
    )


def box_pool(activations: Tensor, boxes: Tensor, size: Sequence[int]) -> Tensor:
    """The mean of a layer's activations over a box of the input: ``[B, K, h, w]``, ``[B, 4]`` -> ``[B, K]``.

    The layer's grid is taken to cover the input of size ``size`` (``(H, W)``) evenly;
    each cell weighs by the area of its overlap with the box, so the embedding of a box
    is ``sum_ij a_ij A_ij / sum_ij a_ij`` (DiffCAM's spatial mean, restricted to the box).

    Example:
        >>> import torch
        >>> activations = torch.arange(4.0).reshape(1, 1, 2, 2)  # cells 0 1 / 2 3 of a 4 x 4 input
        >>> box_pool(activations, torch.tensor([[0.0, 0.0, 4.0, 2.0]]), (4, 4))  # the top row of cells
        tensor([[0.5000]])
    """
    if activations.ndim != 4 or boxes.ndim != 2 or boxes.shape != (activations.shape[0], 4):
        raise CamscopeError(
            f"box_pool takes activations [B, K, h, w] and one box per image [B, 4], "
            f"got {list(activations.shape)} and {list(boxes.shape)}"
        )
    height, width = activations.shape[2:]
    boxes = boxes.to(device=activations.device, dtype=torch.float64)

    def overlap(low: Tensor, high: Tensor, cells: int, extent: float) -> Tensor:
        edges = torch.linspace(0, float(extent), cells + 1, dtype=torch.float64, device=activations.device)
        return (torch.minimum(high[:, None], edges[None, 1:]) - torch.maximum(low[:, None], edges[None, :-1])).clamp(
            min=0
        )

    rows = overlap(boxes[:, 1], boxes[:, 3], height, float(size[0]))  # [B, h]
    cols = overlap(boxes[:, 0], boxes[:, 2], width, float(size[1]))  # [B, w]
    weights = rows[:, :, None] * cols[:, None, :]
    total = weights.flatten(1).sum(dim=1)
    if bool((total <= 0).any()):
        raise CamscopeError("a box lies outside the input: box_pool needs boxes that overlap the image")
    weights = (weights / total[:, None, None]).to(activations.dtype)
    return torch.einsum("bkhw,bhw->bk", activations, weights)


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise CamscopeError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _check_threshold(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise CamscopeError(f"iou_threshold must be a number in [0, 1), got {value!r}")
    return float(value)


def _query_tensors(labels: Any, boxes: Any) -> tuple[Tensor, Tensor, bool]:
    """Labels ``[M]`` or ``[B, M]`` and boxes ``[M, 4]`` or ``[B, M, 4]`` (shared: True for the first form).

    Per-image lists of different lengths are padded with label -1 (no query).
    """
    regular = _box_tensor(boxes)
    if regular is not None and regular.ndim == 2:
        label_tensor = _label_tensor(labels)
        if label_tensor.ndim != 1 or label_tensor.numel() != regular.shape[0]:
            raise CamscopeError(
                f"labels must give one label per box: {regular.shape[0]} boxes, labels of shape {list(label_tensor.shape)}"
            )
        return label_tensor, regular, True
    rows = list(regular) if regular is not None else [_box_tensor(row, per_image=True) for row in _rows(boxes)]
    label_rows = [_label_tensor(row) for row in _rows(labels)]
    if len(label_rows) != len(rows) or any(row is None for row in rows):
        raise CamscopeError(
            "boxes must be [M, 4] (the same boxes for every image), [B, M, 4], or one [M_b, 4] list per image, "
            "with labels [M], [B, M] or one list per image"
        )
    width = max(1, *(row.shape[0] for row in rows if row is not None))
    padded_boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64).repeat(len(rows), width, 1)
    padded_labels = torch.full((len(rows), width), -1, dtype=torch.long)
    for b, (row, label_row) in enumerate(zip(rows, label_rows)):
        assert row is not None
        if label_row.ndim != 1 or label_row.numel() != row.shape[0]:
            raise CamscopeError(
                f"image {b} has {row.shape[0]} boxes and {label_row.numel()} labels: give one label per box"
            )
        padded_boxes[b, : row.shape[0]] = row
        padded_labels[b, : row.shape[0]] = label_row
    return padded_labels, padded_boxes, False


def _rows(value: Any) -> list[Any]:
    if isinstance(value, (Tensor, np.ndarray)) or (isinstance(value, Sequence) and not isinstance(value, str)):
        return list(value)
    raise CamscopeError(f"expected one entry per image, got {type(value).__name__}")


def _box_tensor(value: Any, per_image: bool = False) -> Tensor | None:
    """``xyxy`` boxes as float64 ``[..., 4]``; None when they are not one regular array of boxes."""
    if isinstance(value, Tensor):
        tensor = value.detach().cpu()
    else:
        try:
            tensor = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError):
            return None
    if per_image and tensor.numel() == 0:
        return torch.zeros(0, 4, dtype=torch.float64)
    if tensor.ndim not in ((2,) if per_image else (2, 3)) or tensor.shape[-1] != 4 or tensor.dtype == torch.bool:
        return None
    tensor = tensor.to(torch.float64)
    if not bool(torch.isfinite(tensor).all()):
        raise CamscopeError("boxes contain NaN or infinite values")
    if bool(((tensor[..., 2] <= tensor[..., 0]) | (tensor[..., 3] <= tensor[..., 1])).any()):
        raise CamscopeError("boxes must be (x0, y0, x1, y1) in input pixels, with x1 > x0 and y1 > y0")
    return tensor


def _label_tensor(value: Any) -> Tensor:
    if isinstance(value, (bool, np.bool_)):
        raise CamscopeError("labels must be class indices (ints), got a bool")
    try:
        tensor = value.detach().cpu() if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as error:
        raise CamscopeError(f"labels must be class indices: {error}") from error
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise CamscopeError(f"labels must be integer class indices, got dtype {tensor.dtype}")
    if bool((tensor < 0).any()):
        raise CamscopeError("labels must be class indices >= 0")
    return tensor.long().reshape(-1) if tensor.ndim == 0 else tensor.long()
