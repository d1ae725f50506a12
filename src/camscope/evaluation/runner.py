"""Dataset runner: every method explained and every metric measured over a dataset, with reports.

``camscope.evaluate(model, data, methods=[...], metrics=[...])`` explains each batch with
each method, measures each metric on the maps, joins the per-sample results over the
dataset, and (with ``out=``) writes a CSV and a JSON report and plots of the mean
curves. ``camscope evaluate`` is its command line.

Ground truth for the localisation and part metrics comes from JSON sidecars next to
the images (see :mod:`camscope.evaluation.sidecars`) or from ``annotations=``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camscope.errors import CamscopeError
from camscope.evaluation.report import EvaluationReport, json_ready
from camscope.evaluation.sidecars import GroundTruth, ground_truth, load_sidecar, parts_of, regions_of, sidecar_masks
from camscope.metrics import (
    MetricResult,
    auprc,
    average_drop,
    deletion,
    energy_pointing_game,
    entropy,
    increase_in_confidence,
    insertion,
    iou,
    part_scores,
    pointing_game,
    relative_drop,
    road,
    sanity_check,
    sparseness,
)

__all__ = ["METRICS", "evaluate"]

# name -> (kind, function); kinds: "model", "regions", "maps", "parts", "sanity", "consistency"
METRICS: dict[str, tuple[str, Callable[..., MetricResult] | None]] = {
    "deletion": ("model", deletion),
    "insertion": ("model", insertion),
    "road": ("model", road),
    "average_drop": ("model", average_drop),
    "increase_in_confidence": ("model", increase_in_confidence),
    "relative_drop": ("model", relative_drop),
    "iou": ("regions", iou),
    "auprc": ("regions", auprc),
    "pointing_game": ("regions", pointing_game),
    "energy_pointing_game": ("regions", energy_pointing_game),
    "part_scores": ("parts", part_scores),
    "sanity_check": ("sanity", sanity_check),
    "sparseness": ("maps", sparseness),
    "entropy": ("maps", entropy),
    "consistency": ("consistency", None),
}
"""The metrics the runner knows, by name (see also the aliases)."""

_ALIASES = {
    "rd": "relative_drop",
    "ad": "average_drop",
    "avg_drop": "average_drop",
    "ic": "increase_in_confidence",
    "pointing": "pointing_game",
    "energy_pointing": "energy_pointing_game",
    "ebpg": "energy_pointing_game",
    "parts": "part_scores",
    "sanity": "sanity_check",
    "gini": "sparseness",
}


def _metric_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in METRICS:
        known = ", ".join(sorted(set(METRICS) | set(_ALIASES)))
        raise CamscopeError(f"unknown metric {name!r}; known metrics: {known}")
    return key


# ----------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _batches(
    data: Any,
    batch_size: int,
    size: int,
    device: torch.device,
    config: Any,
    annotations: Sequence[Any] | None,
    limit: int | None,
) -> tuple[Iterable[tuple[Tensor, Tensor, list[str], list[GroundTruth]]], int | None, list[str] | None]:
    """``(inputs, labels, names, truths)`` batches, the number of samples when known, and folder class names."""
    from camscope.data.folders import ImageFolderData
    from camscope.passes.batches import iter_batches

    if isinstance(data, (str, os.PathLike)):
        from camscope.models.loading import load_image

        data = ImageFolderData(data, transform=lambda path: load_image(path, size=size, config=config)[0][0], size=size)
    if isinstance(data, ImageFolderData):
        folder = data
        masks = sidecar_masks(folder.samples)
        if masks:
            folder.samples = [(path, label) for path, label in folder.samples if path.resolve() not in masks]
        count = len(folder) if limit is None else min(limit, len(folder))
        crop_pct = getattr(config, "crop_pct", 0.875)

        def folder_batches() -> Iterable[tuple[Tensor, Tensor, list[str], list[GroundTruth]]]:
            for start in range(0, count, batch_size):
                chunk = folder.samples[start : min(count, start + batch_size)]
                images = torch.stack([folder.transform(path) for path, _ in chunk]).to(device)
                labels = torch.tensor([label for _, label in chunk], dtype=torch.long, device=device)
                truths = [ground_truth(load_sidecar(path, size, crop_pct), (size, size)) for path, _ in chunk]
                yield images, labels, [str(path) for path, _ in chunk], truths

        return folder_batches(), count, folder.class_names or None

    def other_batches() -> Iterable[tuple[Tensor, Tensor, list[str], list[GroundTruth]]]:
        seen = 0
        for inputs, labels in iter_batches(data, batch_size=batch_size, device=device, size=size):
            if limit is not None and seen >= limit:
                return
            if limit is not None:
                inputs, labels = inputs[: limit - seen], labels[: limit - seen]
            names = [str(seen + i) for i in range(inputs.shape[0])]
            specs = [
                annotations[seen + i] if annotations is not None and seen + i < len(annotations) else None
                for i in range(inputs.shape[0])
            ]
            truths = [ground_truth(spec, inputs.shape[2:]) for spec in specs]
            seen += inputs.shape[0]
            yield inputs, labels, names, truths

    total = len(data) if isinstance(data, Tensor) else None
    if total is not None and limit is not None:
        total = min(total, limit)
    return other_batches(), total, None


def _targets(
    target: Any, labels: Tensor, truths: list[GroundTruth], class_names: list[str] | None, num_classes: int
) -> Any:
    if target is None or (isinstance(target, str) and target in ("predicted", "pred")):
        return None
    if isinstance(target, str) and target in ("label", "true"):
        from camscope.models.loading import class_index

        classes = []
        for label, truth in zip(labels.tolist(), truths):
            if truth.label is not None:
                classes.append(class_index(truth.label, num_classes))
            elif label < 0:
                raise CamscopeError(
                    "target='label' needs labelled data (an ImageFolder layout, labels, or sidecar 'label')"
                )
            elif class_names is not None:
                classes.append(class_index(class_names[label], num_classes))
            else:
                classes.append(int(label))
        return classes
    if isinstance(target, str):
        from camscope.models.loading import class_index

        return class_index(target, num_classes)
    return target


def _nan_where(result: MetricResult, missing: Tensor) -> MetricResult:
    if bool(missing.any()):
        for key, value in result.values.items():
            result.values[key] = torch.where(missing.to(value.device), torch.full_like(value, float("nan")), value)
        for key, curve in result.curves.items():
            result.curves[key] = torch.where(
                missing.to(curve.device)[:, None], torch.full_like(curve, float("nan")), curve
            )
    return result


def evaluate(
    model: nn.Module | str,
    data: Any,
    methods: Sequence[str] = ("gradcam",),
    metrics: Sequence[str] = ("deletion", "insertion"),
    *,
    layer: Any = None,
    target: Any = None,
    weights: str | None = "default",
    batch_size: int = 16,
    size: int = 224,
    device: torch.device | str | None = None,
    annotations: Sequence[Mapping[str, Any] | None] | None = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    limit: int | None = None,
    out: str | os.PathLike[str] | None = None,
    plots: bool = True,
    show_progress: bool | None = None,
) -> EvaluationReport:
    """Explain a dataset with several methods and measure several metrics.

    Args:
        model: a ``torch.nn.Module`` or a :func:`camscope.models.loading.load_model` name
            (``"efficientnet_lite0"``, ``"torchvision:NAME"``, ``"timm:NAME"``).
        data: an image folder (ImageFolder layout or flat; JSON sidecars give boxes,
            masks and parts, see the module docstring), an
            :class:`~camscope.passes.batches.ImageFolderData`, a DataLoader or iterable of
            ``(inputs, labels)`` or inputs, or a tensor batch.
        methods: camscope method names (``camscope.available_methods()``).
        metrics: names from :data:`METRICS` (aliases: ``rd``, ``ad``, ``ic``, ``pointing``,
            ``energy_pointing``, ``parts``, ``sanity``, ``gini``).
        layer: the layer explained (None: each model's default).
        target: None (each image's predicted class), ``"label"`` (its label: the folder's
            class name or index, or the sidecar's ``label``), a class index or name, or a
            :class:`~camscope.targets.base.Target`.
        weights: weights when ``model`` is a name (``"default"``, None for random).
        batch_size: images per batch.
        size: input size for image folders.
        device: where a named model runs (a module stays where it is); inputs go to the model's device.
        annotations: ground truth for non-folder data, one dict per sample.
        method_options: options per method, e.g. ``{"finer-gradcam": {"gamma": 0.6}}``.
        metric_options: protocol options per metric, e.g. ``{"road": {"percentages": (0.25, 0.5, 0.75)}}``.
        limit: evaluate only the first ``limit`` samples.
        out: a folder for the CSV, JSON and plots (nothing is written when None).
        plots: write the curve plots with ``out``.
        show_progress: progress bar on stderr (default: when stderr is a terminal).

    Returns:
        An :class:`EvaluationReport`.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> report = camscope.evaluate(model, torch.randn(4, 3, 32, 32), methods=["gradcam", "gradcampp"],
        ...                            metrics=["deletion", "sparseness"], layer="layer3",
        ...                            metric_options={"deletion": {"step": 64}})
        >>> sorted(report.results["gradcam"]), len(report.results["gradcam"]["deletion"])
        (['deletion', 'sparseness'], 4)
    """
    import camscope
    from camscope.models.loading import data_config, load_model
    from camscope.passes.batches import progress

    if isinstance(model, str):
        model_name = model
        network = load_model(model, weights=weights, device=device)
        config = data_config(model)
    elif isinstance(model, nn.Module):
        model_name = type(model).__name__
        network = model
        config = data_config(model)
    else:
        raise CamscopeError(f"model must be a torch.nn.Module or a model name, got {type(model).__name__}")
    methods = [str(m) for m in methods]
    if not methods:
        raise CamscopeError("give at least one method")
    available = camscope.available_methods()
    for method in methods:
        if method not in available:
            raise CamscopeError(f"unknown method {method!r}; available: {', '.join(available)}")
    metric_names = list(dict.fromkeys(_metric_name(m) for m in metrics))
    if not metric_names:
        raise CamscopeError("give at least one metric")
    metric_options = {_metric_name(k): dict(v) for k, v in (metric_options or {}).items()}
    for name in metric_options:
        if name not in metric_names:
            raise CamscopeError(f"options were given for metric {name!r}, which is not evaluated")
    method_options = {str(k): dict(v) for k, v in (method_options or {}).items()}
    for name in method_options:
        if name not in methods:
            raise CamscopeError(f"options were given for method {name!r}, which is not evaluated")
    if batch_size < 1:
        raise CamscopeError(f"batch_size must be a positive integer, got {batch_size}")
    run_device = _model_device(network)
    batches, total, class_names = _batches(data, batch_size, size, run_device, config, annotations, limit)
    explainers = {m: camscope.Explainer(network, layer=layer, method=m, **method_options.get(m, {})) for m in methods}

    collected: dict[str, dict[str, list[MetricResult]]] = {m: {k: [] for k in metric_names} for m in methods}
    samples: list[str] = []
    total_batches = None if total is None else math.ceil(total / batch_size)
    for inputs, labels, names, truths in progress(batches, "evaluating", total=total_batches, enabled=show_progress):
        samples += names
        with torch.no_grad():
            num_classes = network(inputs[:1]).shape[-1]
        batch_target = _targets(target, labels, truths, class_names, num_classes)
        for method in methods:
            explanation = explainers[method](inputs, target=batch_target)
            for metric in metric_names:
                result = _measure(
                    metric,
                    network,
                    inputs,
                    explanation,
                    truths,
                    metric_options.get(metric, {}),
                    method,
                    layer,
                    method_options.get(method, {}),
                )
                collected[method][metric].append(result.cpu())
    if not samples:
        raise CamscopeError("the dataset is empty")

    results: dict[str, dict[str, MetricResult]] = {m: {} for m in methods}
    dataset: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in methods}
    for method in methods:
        for metric in metric_names:
            joined = MetricResult.cat(collected[method][metric])
            if metric == "consistency":
                dataset[method][metric] = _consistency(joined)
            results[method][metric] = joined
    report = EvaluationReport(
        methods=methods,
        metrics=metric_names,
        results=results,
        dataset=dataset,
        samples=samples,
        model=model_name,
        params={
            "layer": layer if layer is None or isinstance(layer, str) else str(layer),
            "target": target if target is None or isinstance(target, (str, int)) else repr(target),
            "batch_size": batch_size,
            "size": size,
            "method_options": json_ready(method_options),
            "metric_options": json_ready(
                {
                    k: {
                        kk: (vv if isinstance(vv, (int, float, str, list, tuple, bool)) or vv is None else repr(vv))
                        for kk, vv in v.items()
                    }
                    for k, v in metric_options.items()
                }
            ),
        },
    )
    if out is not None:
        report.save(out, plots=plots)
    return report


def _measure(
    metric: str,
    model: nn.Module,
    inputs: Tensor,
    explanation: Any,
    truths: list[GroundTruth],
    options: dict[str, Any],
    method: str,
    layer: Any,
    method_options: dict[str, Any],
) -> MetricResult:
    kind, fn = METRICS[metric]
    if kind == "model":
        return fn(model, inputs, explanation, **options)  # type: ignore[misc]
    if kind == "maps":
        return fn(explanation, **options)  # type: ignore[misc]
    if kind == "regions":
        regions, missing = regions_of(truths, inputs.shape[2:], explanation.maps.device)
        return _nan_where(fn(explanation, masks=regions, **options), missing)  # type: ignore[misc]
    if kind == "parts":
        points, differing, missing, _ = parts_of(truths, explanation.maps.device)
        return _nan_where(part_scores(explanation, parts=points, differing=differing, **options), missing)
    if kind == "sanity":
        return sanity_check(model, inputs, explanation, method=method, layer=layer, options=method_options, **options)
    # consistency: the per-image CAM sum and the explained class's logit (IFA)
    logits = explanation.logits
    classes = explanation.classes
    scores = explanation.scores if classes is None else logits.gather(1, classes[:, None].to(logits.device))[:, 0]
    return MetricResult(
        name="consistency",
        values={"cam_sum": explanation.maps.flatten(1).sum(dim=1).float(), "logit": scores.float()},
        headline="cam_sum",
        higher_is_better={},
    )


def _consistency(result: MetricResult) -> dict[str, Any]:
    """IFA's consistency over the dataset: the correlation of the CAM sums with the logits."""
    if len(result) < 3:
        return {"n": len(result), "coefficient": float("nan"), "method": "too few images"}
    from camscope.metrics import correlate

    correlation = correlate(result.values["cam_sum"], result.values["logit"])
    return {
        "n": correlation.n,
        "coefficient": correlation.coefficient,
        "p_value": correlation.p_value,
        "method": correlation.method,
        "pearson": correlation.pearson,
        "spearman": correlation.spearman,
    }
