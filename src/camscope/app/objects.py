"""The explorer's detectors and segmenters: the boxes or regions of an image, and the map of the one clicked.

A model whose outputs are detections (a list of dicts with boxes, labels and scores) or
logits per pixel is offered as it is: instead of the top-5 classes the page gets the objects
:func:`camscope.engine.objects.find_objects` finds (at most :data:`MAX_OBJECTS`, scores of at
least :data:`SCORE_THRESHOLD`), draws their boxes over the image, and a click explains one:

* a box: ``camscope.BoxTarget([label], [box], score="score")``, the score of the detection of
  that label that best overlaps the box (the box is a detection: its IoU with itself, 1, would add
  a gradient set by rounding, see :func:`camscope.engine.objects.object_target`); the request
  carries the box and its label (``target``);
* a region: ``camscope.SegmentationTarget(label)``, the class's logits summed over the pixels
  predicted as that class.

Each panel is exactly ``camscope.Explainer(model, layer, method)(x, target=...)`` for that
target. The comparison methods (Finer-CAM, DiffCAM) and S-CAMs are refused for these models:
the page offers them for classifiers.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from camscope.errors import CamscopeError

__all__ = ["MAX_OBJECTS", "SCORE_THRESHOLD", "object_request_target", "objects_found"]

#: The most boxes or regions the page shows.
MAX_OBJECTS = 8
#: The least score of a box shown (a region: its mean class probability).
SCORE_THRESHOLD = 0.3


def objects_found(network: nn.Module, task: str, x: Tensor, names: list[str]) -> list[dict[str, Any]]:
    """The objects the page shows: index, class, name, score and box ``[x0, y0, x1, y1]`` in input pixels."""
    from camscope.engine.objects import find_objects

    found = find_objects(network, x, task=task, score_threshold=SCORE_THRESHOLD, max_objects=MAX_OBJECTS)
    return [
        {
            "index": index,
            "class": int(label),
            "name": names[int(label)] if 0 <= int(label) < len(names) else f"class {int(label)}",
            "score": float(score),
            "box": [round(float(v), 2) for v in box],
        }
        for index, (label, score, box) in enumerate(zip(found.labels, found.scores, found.boxes))
    ]


def object_request_target(
    network: nn.Module, task: str, x: Tensor, request: Any, names: list[str]
) -> tuple[Any, dict[str, Any], str]:
    """The target of the clicked box or region, what it explains (class, name, score) and a caption.

    The box must be one of the detections of its label (IoU above 0.5), and a region's class
    must be predicted somewhere; otherwise a :class:`CamscopeError` says so.
    """
    from camscope.engine.objects import find_objects
    from camscope.targets.detection import BoxTarget, box_iou
    from camscope.targets.segmentation import SegmentationTarget

    refused = [m for m in request.methods if m.startswith("finer-") or m == "diffcam"]
    if refused or request.scaled:
        shown = ", ".join(refused + (["S-CAM"] if request.scaled else []))
        raise CamscopeError(
            f"{shown} compare classes of a classifier: choose gradient, projection or perturbation methods"
        )
    if request.target is None:
        raise CamscopeError("click a box or a region to explain it")
    label = int(request.target)
    found = find_objects(network, x, task=task, score_threshold=0.0, max_objects=10_000, classes=[label])
    name = names[label] if 0 <= label < len(names) else f"class {label}"
    if task == "segment":
        if len(found) == 0:
            raise CamscopeError(f"no pixel is predicted as {name}: choose a region the page shows")
        explained = {"class": label, "name": name, "probability": float(found.scores[0])}
        pixels = int(found.regions[0].sum()) if found.regions is not None else 0
        return SegmentationTarget(label), explained, f"region of {name} ({pixels} pixels)"
    if request.box is None:
        raise CamscopeError("a detector's map needs the box: click one of the boxes")
    box = found.boxes.new_tensor(request.box)[None]
    overlaps = box_iou(box[None], found.boxes[None])[0, 0] if len(found) else box.new_zeros(0)
    if overlaps.numel() == 0 or float(overlaps.max()) <= 0.5:
        raise CamscopeError(
            f"the box {request.box} is not a detection of {name}: click one of the boxes the page shows"
        )
    score = float(found.scores[int(overlaps.argmax())])
    explained = {"class": label, "name": name, "probability": score}
    shown = ", ".join(f"{v:.0f}" for v in request.box)
    return BoxTarget([label], [list(request.box)], score="score"), explained, f"box [{shown}]: its detection's score"
