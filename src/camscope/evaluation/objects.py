"""Per-object evaluation on scenes with ground truth: each object's map against its box and mask.

For every object of every scene, each method explains that object alone: a detector's box
(:class:`camscope.BoxTarget` with the object's label and its ground-truth box: the detection of
that label that best overlaps it scores ``IoU + score``, ``box_score="iou+score"``, as
pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``; the IoU is below 1 and its gradient says how the
detection's box would move towards the object's) or a segmenter's region
(:class:`camscope.SegmentationTarget` with the object's label and visible pixels: the
class's logits summed over them). The map is then measured against the object:

* ``box_pointing`` (:func:`camscope.metrics.objects.box_pointing`): ``hit``, the map's peak
  in the object's box; ``on_object``, on its visible pixels; for a detector also
  ``detected``, whether a detection of the object's label overlaps its box by more than
  ``iou_threshold`` (the box has a score; objects the detector missed have no map and get
  NaN in the other values);
* ``mask_iou`` (:func:`camscope.metrics.objects.mask_iou`): the IoU of the map at 0.5 with
  the object's visible pixels, and the curve over thresholds.

The results are an :class:`~camscope.evaluation.report.EvaluationReport` with one sample
per object (``scene 3 object 1 (NAME)``), written as ``camscope.evaluate``'s are.

Example:
    >>> from camscope.data.small_models import scene_data
    >>> from camscope.models.scene_zoo import load_scene_model
    >>> report = evaluate_objects(load_scene_model("scenes-detector"), scene_data("scenes-detector", limit=2),
    ...                           methods=["gradcam"])
    >>> report.metrics, len(report.samples) == int(scene_data("scenes-detector", limit=2).counts.sum())
    (['box_pointing', 'mask_iou'], True)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.objects import TASKS, model_task, object_target
from camscope.errors import CamscopeError
from camscope.evaluation.report import EvaluationReport, json_ready
from camscope.evaluation.results import EvaluationResults
from camscope.metrics.common import MetricResult, progress_option
from camscope.metrics.objects import box_pointing, mask_iou
from camscope.passes.distributed import is_main_process
from camscope.progress import ProgressBar

__all__ = ["OBJECT_METRICS", "evaluate_objects"]

#: The per-object metrics, in the order they are reported.
OBJECT_METRICS = ("box_pointing", "mask_iou")


def _objects(scenes: Any, limit: int | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Flattened objects: scene index ``[M]``, slot ``[M]``, labels ``[M]``, boxes ``[M, 4]``; and the images."""
    for name in ("images", "labels", "boxes"):
        if not isinstance(getattr(scenes, name, None), Tensor):
            raise CamscopeError(
                "scenes must hold images [N, 3, H, W], labels [N, K] (-1: none), boxes [N, K, 4] and object_masks() "
                f"[N, K, H, W], as camscope.data.scenes.SceneBatch does; {name} is missing"
            )
    images, labels = scenes.images, scenes.labels
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    scene, slot = torch.nonzero(labels >= 0, as_tuple=True)
    if scene.numel() == 0:
        raise CamscopeError("the scenes hold no objects to evaluate")
    return scene, slot, labels[scene, slot], scenes.boxes[scene, slot].float(), images


def _measure(
    explainer: Any,
    task: str,
    inputs: Tensor,
    objects: tuple[Tensor, Tensor, Tensor],
    iou_threshold: float,
    box_score: str,
) -> dict[str, MetricResult]:
    """One method's maps of a chunk of objects (labels, boxes, masks), measured."""
    labels, boxes, masks = objects
    target = object_target(task, labels, boxes, masks, iou_threshold, box_score)
    with warnings.catch_warnings():  # objects the detector missed are counted below, not warned about one by one
        warnings.simplefilter("ignore", category=UserWarning)
        explanation = explainer(inputs, target=target)
    masks = masks.to(explanation.maps.device)
    pointing = box_pointing(explanation, boxes=boxes, masks=masks)
    overlap = mask_iou(explanation, masks=masks)
    if task == "detect":
        found = (explanation.scores.detach().cpu() > 0).float()
        missed = found == 0
        for result in (pointing, overlap):
            result.values = {k: torch.where(missed, float("nan"), v.cpu().float()) for k, v in result.values.items()}
            result.curves = {k: torch.where(missed[:, None], float("nan"), v.cpu()) for k, v in result.curves.items()}
        pointing.values["detected"] = found
        pointing.higher_is_better["detected"] = True
    return {"box_pointing": pointing, "mask_iou": overlap}


def evaluate_objects(
    model: nn.Module,
    scenes: Any,
    methods: Sequence[str] = ("gradcam",),
    *,
    task: str | None = None,
    layer: Any = None,
    batch_size: int = 16,
    iou_threshold: float = 0.5,
    box_score: str = "iou+score",
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    class_names: Sequence[str] | None = None,
    model_name: str | None = None,
    limit: int | None = None,
    out: str | os.PathLike[str] | None = None,
    plots: bool = True,
    progress: bool | None = None,
) -> EvaluationReport:
    """Explain every object of ``scenes`` with each method and measure box pointing and mask IoU.

    Args:
        model: a detector (torchvision-style detections) or a segmenter (logits per pixel).
        scenes: a :class:`~camscope.data.scenes.SceneBatch` (or any object with ``images``,
            ``labels``, ``boxes`` and ``object_masks()`` as it has them), on the CPU.
        methods: camscope method names.
        task: ``"detect"`` or ``"segment"``; None: read from the model's outputs (:func:`model_task`).
        layer: the layer explained (None: the model's ``cam_layer``, else the default layer).
        batch_size: objects explained together (each is one copy of its scene).
        iou_threshold: the IoU a detection must exceed to match an object's box.
        box_score: what a matched detection scores: ``"iou+score"`` (its IoU with the object's
            box plus its score, pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``) or ``"score"``.
        method_options: options per method, e.g. ``{"scorecam": {"batch_size": 8}}``.
        class_names: names of the labels (default: the model's ``class_names``), for the sample names.
        model_name: the model's name in the report (default: its class name).
        limit: only the first ``limit`` scenes.
        out: a folder for ``summary.csv``, ``per_sample.csv``, ``results.json`` and the IoU curve plot.
        plots: write the plot with ``out``.
        progress: a progress bar on stderr (None: when stderr is a terminal).

    Returns:
        An :class:`~camscope.evaluation.report.EvaluationReport`: ``results[method]["box_pointing"]``
        and ``["mask_iou"]``, one value per object.
    """
    import camscope
    from camscope.engine.method import canonical_method_name

    names = list(dict.fromkeys(canonical_method_name(str(m)) for m in methods))
    if not names:
        raise CamscopeError("give at least one method")
    options = {canonical_method_name(str(k)): dict(v) for k, v in (method_options or {}).items()}
    if set(options) - set(names):
        raise CamscopeError(
            f"options were given for methods {sorted(set(options) - set(names))}, which are not evaluated"
        )
    if batch_size < 1:
        raise CamscopeError(f"batch_size must be a positive number of objects, got {batch_size}")
    scene, slot, labels, boxes, images = _objects(scenes, limit)
    masks_all = scenes.object_masks()
    device = next(model.parameters()).device
    task = task or model_task(model, images[:1].to(device))
    if task not in TASKS:
        raise CamscopeError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    layer = layer if layer is not None else getattr(model, "cam_layer", None)
    explainers = {m: camscope.Explainer(model, layer=layer, method=m, **options.get(m, {})) for m in names}
    label_names = list(class_names or getattr(model, "class_names", None) or [])
    results = EvaluationResults(names, list(OBJECT_METRICS))
    shown = progress_option(progress, None, "evaluate_objects")
    with ProgressBar(len(labels) * len(names), "explaining objects", enabled=shown, delay=1.0) as bar:
        for start in range(0, len(labels), batch_size):
            rows = slice(start, start + batch_size)
            inputs = images[scene[rows]].to(device)
            masks = masks_all[scene[rows], slot[rows]]
            measured = {}
            for method, explainer in explainers.items():
                chunk = (labels[rows], boxes[rows], masks)
                measured[method] = _measure(explainer, task, inputs, chunk, iou_threshold, box_score)
                bar.advance(inputs.shape[0])
            results.update(_sample_names(scene[rows], slot[rows], labels[rows], label_names), measured, start=start)
    params = {
        "task": task,
        "layer": layer if layer is None or isinstance(layer, str) else str(layer),
        "iou_threshold": iou_threshold,
        "box_score": box_score,
        "scenes": int(images.shape[0]),
        "objects": int(labels.shape[0]),
        "method_options": json_ready(options),
    }
    joined = results.joined()
    report = EvaluationReport(
        methods=names,
        metrics=list(OBJECT_METRICS),
        results=joined,
        dataset={m: {} for m in names},
        samples=results.samples,
        model=model_name or type(model).__name__,
        params=params,
    )
    if out is not None and is_main_process():
        report.save(out, plots=plots)
    return report


def _sample_names(scene: Tensor, slot: Tensor, labels: Tensor, names: Sequence[str]) -> list[str]:
    def named(label: int) -> str:
        return names[label] if 0 <= label < len(names) else f"class {label}"

    return [f"scene {int(i)} object {int(k)} ({named(int(c))})" for i, k, c in zip(scene, slot, labels)]
