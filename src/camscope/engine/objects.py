"""The objects a detector or a segmenter finds in an image, each with its own map.

:func:`find_objects` runs the model once and lists what it found: a detector's boxes
(torchvision-style detections) with their labels and scores, or a segmenter's regions, one
per predicted class (the pixels whose most likely class it is, the background class 0 left
out) with the class's mean probability over the region as its score.
:func:`explain_objects` then explains each object alone, as one batch (the image repeated
once per object): a box by :class:`camscope.BoxTarget` (its label, its box), a region by
:class:`camscope.SegmentationTarget` (its class, its pixels). So every box or region gets its
own map, with each method.

Example:
    >>> import torch
    >>> from camscope.data.small_models import scene_data
    >>> from camscope.models.scene_zoo import load_scene_model
    >>> detector = load_scene_model("scenes-detector")
    >>> found = explain_objects(detector, scene_data("scenes-detector", limit=1).images, ["gradcam"])
    >>> found.task, found.maps["gradcam"].maps.shape[0] == len(found)
    ('detect', True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.capture import model_state
from camscope.engine.explanation import Explanation
from camscope.errors import CamscopeError
from camscope.targets.base import Target

__all__ = ["TASKS", "FoundObjects", "explain_objects", "find_objects", "model_task", "object_target"]

#: What a model does: its outputs are detections (``detect``) or logits per pixel (``segment``).
TASKS = ("detect", "segment")


def model_task(model: nn.Module, inputs: Tensor) -> str:
    """``"detect"`` when the model returns torchvision-style detections, ``"segment"`` when it returns logits per
    pixel (a tensor ``[B, C, H, W]``, ``out`` of a dict or ``.logits``); else a :class:`CamscopeError`.

    Example:
        >>> import torch
        >>> from camscope.models.scene_models import SceneSegmenter
        >>> model_task(SceneSegmenter(num_classes=3), torch.rand(1, 3, 32, 32))
        'segment'
    """
    from camscope.targets.outputs import is_detections, output_tensor

    with torch.no_grad(), model_state(model, True):
        outputs = model(inputs[:1])
    if is_detections(outputs):
        return "detect"
    try:
        logits = output_tensor(outputs)
    except CamscopeError:
        logits = None
    if isinstance(logits, Tensor) and logits.ndim == 4:
        return "segment"
    shape = list(logits.shape) if isinstance(logits, Tensor) else type(outputs).__name__
    raise CamscopeError(
        f"the model returns {shape}: boxes and regions need a detector (a list of dicts with boxes, labels and "
        "scores) or a segmenter (logits per pixel [B, C, H, W])"
    )


def object_target(
    task: str, labels: Tensor, boxes: Tensor, masks: Tensor, iou_threshold: float = 0.5, score: str = "score"
) -> Target:
    """The target of one object per image: labels ``[B]``, boxes ``[B, 4]`` (``xyxy``), masks ``[B, H, W]``.

    ``detect``: ``BoxTarget(labels[:, None], boxes[:, None], score=score)``: the detection of the
    label that best overlaps the box (IoU above ``iou_threshold``), scoring its class score
    (``score="score"``, the default) or ``IoU + score`` (``"iou+score"``, pytorch-grad-cam's
    ``FasterRCNNBoxScoreTarget``). For a detection's own box the IoU is 1, at the IoU's kink:
    its gradient there is a one-sided ``+-1 / side`` per coordinate chosen by the rounding of the
    coordinates, so a detection's own box is best explained by its score alone.
    ``segment``: ``SegmentationTarget(labels, mask=masks)`` (the class's logits summed over the mask).

    Example:
        >>> import torch
        >>> object_target("detect", torch.tensor([2]), torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.ones(1, 8, 8))
        BoxTarget(1 box, iou_threshold=0.5, match='same-label')
    """
    from camscope.targets.detection import BoxTarget
    from camscope.targets.segmentation import SegmentationTarget

    if task == "detect":
        return BoxTarget(labels[:, None], boxes[:, None].double(), iou_threshold=iou_threshold, score=score)
    if task == "segment":
        return SegmentationTarget(labels.tolist(), mask=masks.float())
    raise CamscopeError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


@dataclass
class FoundObjects:
    """What a model found in one image, and (after :func:`explain_objects`) one map per object and method.

    Attributes:
        task: ``"detect"`` or ``"segment"``.
        labels: ``[M]`` each object's class.
        scores: ``[M]`` a detection's score, or a region's mean probability of its class.
        boxes: ``[M, 4]`` ``xyxy`` input pixels (a region's tight box for segmenters).
        regions: ``[M, H, W]`` bool, the region of each class (segmenters; None for detectors).
        maps: method -> :class:`~camscope.engine.explanation.Explanation` with one map per object.
    """

    task: str
    labels: Tensor
    scores: Tensor
    boxes: Tensor
    regions: Tensor | None = None
    maps: dict[str, Explanation] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def target(self, iou_threshold: float = 0.5) -> Target:
        """The target explaining object ``m`` in row ``m`` of a batch of copies of the image (:func:`object_target`:
        a box's detection score, a region's class logits)."""
        regions = self.regions if self.regions is not None else torch.zeros(len(self), 1, 1, dtype=torch.bool)
        return object_target(self.task, self.labels, self.boxes, regions, iou_threshold)


def _image(inputs: Tensor) -> Tensor:
    if not isinstance(inputs, Tensor) or inputs.ndim not in (3, 4) or (inputs.ndim == 4 and inputs.shape[0] != 1):
        shape = list(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise CamscopeError(f"give one image, [C, H, W] or [1, C, H, W], got {shape}")
    return inputs if inputs.ndim == 4 else inputs[None]


def find_objects(
    model: nn.Module,
    image: Tensor,
    *,
    task: str | None = None,
    score_threshold: float = 0.5,
    max_objects: int = 4,
    classes: Sequence[int] | None = None,
    min_pixels: int = 16,
) -> FoundObjects:
    """The objects ``model`` finds in ``image`` (``[C, H, W]`` or ``[1, C, H, W]``), best first.

    Args:
        model: a detector (torchvision-style detections) or a segmenter (logits per pixel).
        image: one image on the model's device.
        task: ``"detect"`` or ``"segment"``; None: read from the outputs.
        score_threshold: the least score of an object (a detection's score; a region's mean
            probability of its class).
        max_objects: the most objects kept (the best by score).
        classes: keep only objects of these classes.
        min_pixels: a region's least size in pixels (segmenters).
    """
    from camscope.targets.outputs import is_detections, output_tensor

    image = _image(image)
    if max_objects < 1:
        raise CamscopeError(f"max_objects must be at least 1, got {max_objects}")
    task = task or model_task(model, image)
    if task not in TASKS:
        raise CamscopeError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    with torch.no_grad(), model_state(model, True):
        outputs = model(image)
    if task == "detect":
        if not is_detections(outputs):
            raise CamscopeError(
                f"task 'detect' needs detections (a list of dicts with boxes, labels and scores), but the model "
                f"returns {type(outputs).__name__}: for logits per pixel use task 'segment'"
            )
        found = outputs[0]
        labels, scores, boxes = found["labels"].long(), found["scores"].float(), found["boxes"].float()
        regions = None
    else:
        if is_detections(outputs):
            raise CamscopeError("task 'segment' needs logits per pixel, but the model returns detections: use 'detect'")
        labels, scores, boxes, regions = _regions(output_tensor(outputs)[0], min_pixels, tuple(image.shape[2:]))
    keep = scores >= score_threshold
    if classes is not None:
        keep &= torch.isin(labels, torch.as_tensor(list(classes), device=labels.device))
    order = torch.nonzero(keep).flatten()[scores[keep].argsort(descending=True, stable=True)][:max_objects]
    return FoundObjects(
        task=task,
        labels=labels[order].cpu(),
        scores=scores[order].cpu(),
        boxes=boxes[order].cpu(),
        regions=None if regions is None else regions[order].cpu(),
    )


def _regions(logits: Tensor, min_pixels: int, size: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per predicted class but the background (0): label, mean probability over its pixels, tight box, pixels.

    Logits at a fraction of the input's resolution (Hugging Face's) give regions brought to the
    input's size (nearest), which :class:`~camscope.targets.segmentation.SegmentationTarget` averages back.
    """
    from camscope.data.scenes import mask_boxes

    if logits.ndim != 3:
        raise CamscopeError(f"a segmenter's logits must be [C, H, W] per image, got {list(logits.shape)}")
    predicted = logits.argmax(dim=0)
    classes = torch.arange(1, logits.shape[0], device=logits.device)
    regions = predicted[None] == classes[:, None, None]  # [C - 1, h, w]
    sizes = regions.flatten(1).sum(dim=1)
    probability = logits.softmax(dim=0)[1:]
    scores = (probability * regions).flatten(1).sum(dim=1) / sizes.clamp(min=1)
    if tuple(regions.shape[1:]) != size:
        regions = torch.nn.functional.interpolate(regions[None].float(), size=size, mode="nearest")[0] > 0.5
        sizes = regions.flatten(1).sum(dim=1)
    present = sizes >= min_pixels
    return classes[present], scores[present].float(), mask_boxes(regions[present]).float(), regions[present]


def explain_objects(
    model: nn.Module,
    image: Tensor,
    methods: Sequence[str] = ("gradcam",),
    *,
    objects: FoundObjects | None = None,
    layer: Any = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    **find: Any,
) -> FoundObjects:
    """The objects of one image (:func:`find_objects` with ``**find``, or ``objects``), each with its map per method.

    Each method explains the objects as one batch: row ``m`` is the image with object ``m``'s
    target, so ``result.maps[method].maps[m]`` is object ``m``'s map.

    Args:
        model: a detector or a segmenter.
        image: one image, ``[C, H, W]`` or ``[1, C, H, W]``, on the model's device.
        methods: camscope method names.
        objects: the objects to explain (default: those :func:`find_objects` finds).
        layer: the layer (default: the model's ``cam_layer``, else the default layer).
        method_options: options per method.
        **find: options of :func:`find_objects` (``task``, ``score_threshold``, ``max_objects``, ``classes``).
    """
    from camscope.engine.explainer import explain

    image = _image(image)
    found = objects if objects is not None else find_objects(model, image, **find)
    if len(found) == 0:
        return found
    layer = layer if layer is not None else getattr(model, "cam_layer", None)
    batch = image.expand(len(found), *image.shape[1:])
    target = found.target()
    for method in methods:
        options = dict((method_options or {}).get(method, {}))
        found.maps[method] = explain(model, batch, method=method, layer=layer, target=target, **options)
    return found
