"""Dataset runner: every method explained and every metric measured over a dataset, with reports.

``camscope.evaluate(model, data, methods=[...], metrics=[...])`` explains each batch with
each method, measures each metric on the maps, joins the per-sample results over the
dataset, and (with ``out=``) writes a CSV and a JSON report and plots of the mean
curves. ``camscope evaluate`` is its command line.

Ground truth for the localisation and part metrics comes from JSON sidecars next to
the images (see :mod:`camscope.evaluation.sidecars`) or from ``annotations=``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from camscope.data.folders import ImageFolderData
from camscope.engine.capture import model_state, output_tensor
from camscope.errors import CamscopeError
from camscope.evaluation.report import EvaluationReport, json_ready
from camscope.evaluation.results import EvaluationResults
from camscope.evaluation.sidecars import GroundTruth, ground_truth, load_sidecar, parts_of, regions_of, sidecar_masks
from camscope.metrics import MetricResult, available_metrics, canonical_metric_name, get_metric
from camscope.metrics.common import progress_option
from camscope.models.fingerprint import model_fingerprint
from camscope.passes.batches import ImageTransform, sample_count
from camscope.passes.distributed import is_main_process, resolve_device
from camscope.passes.engine import Batch, DatasetPass
from camscope.progress import ProgressBar

__all__ = ["checked_names_and_options", "evaluate"]


def __getattr__(name: str) -> Any:
    # METRICS, {name: (kind, function)}, was a hand-kept dict; kept for compatibility, it reads the registry.
    if name == "METRICS":
        return {key: (spec.kind, spec.function) for key, spec in available_metrics().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------
# The data: folders (with sidecars) or any dataset (with annotations=)
# ----------------------------------------------------------------------------------------------


def _evaluation_data(data: Any, size: int, config: Any, limit: int | None) -> tuple[Any, ImageFolderData | None]:
    """The data for the pass (folders without sidecar masks, cut to ``limit`` where the data allows) and the folder."""
    if isinstance(data, (str, os.PathLike)):
        data = ImageFolderData(data, transform=ImageTransform(size, config), size=size)
    if isinstance(data, ImageFolderData):
        folder = copy.copy(data)
        masks = sidecar_masks(folder.samples)
        folder.samples = [(path, label) for path, label in folder.samples if path.resolve() not in masks][:limit]
        return folder, folder
    if isinstance(data, Tensor) and limit is not None:
        return data[:limit], None
    return data, None


@dataclass(frozen=True)
class _Samples:
    """Where a batch's sample names and ground truth come from."""

    folder: ImageFolderData | None
    annotations: Sequence[Mapping[str, Any] | None] | None
    size: int
    crop_pct: float

    def describe(self, batch: Batch, count: int) -> tuple[list[str], list[GroundTruth]]:
        """Names and ground truth of the batch's first ``count`` samples."""
        positions = range(batch.start, batch.start + count)
        if self.folder is not None:
            paths = [self.folder.samples[i][0] for i in positions]
            truths = [ground_truth(load_sidecar(p, self.size, self.crop_pct), (self.size, self.size)) for p in paths]
            return [str(path) for path in paths], truths
        specs = [
            self.annotations[i] if self.annotations is not None and i < len(self.annotations) else None
            for i in positions
        ]
        return [str(i) for i in positions], [ground_truth(spec, batch.inputs.shape[2:]) for spec in specs]


# ----------------------------------------------------------------------------------------------
# One batch: every method explained, every metric measured
# ----------------------------------------------------------------------------------------------


def _targets(
    target: Any, labels: Tensor, truths: list[GroundTruth], class_names: list[str] | None, num_classes: int
) -> Any:
    if target is None or (isinstance(target, str) and target in ("predicted", "pred")):
        return None
    if isinstance(target, str) and target in ("label", "true"):
        from camscope.models import class_index

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
        from camscope.models import class_index

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


@dataclass(frozen=True)
class _Plan:
    """What :func:`evaluate` measures: the model, the explainers and the metrics with their options."""

    network: nn.Module
    layer: Any
    target: Any
    class_names: list[str] | None
    explainers: dict[str, Any]
    metrics: list[str]
    method_options: dict[str, dict[str, Any]]
    metric_options: dict[str, dict[str, Any]]

    def measure(
        self, inputs: Tensor, labels: Tensor, truths: list[GroundTruth], bar: ProgressBar | None = None
    ) -> dict[str, dict[str, MetricResult]]:
        """``[method][metric]``: the results of one batch (``bar`` advances by its images per method and metric)."""
        target = self.batch_target(inputs, labels, truths)
        results: dict[str, dict[str, MetricResult]] = {}
        for method, explainer in self.explainers.items():
            explanation = explainer(inputs, target=target)
            results[method] = {}
            for metric in self.metrics:
                results[method][metric] = self.measure_one(metric, method, inputs, explanation, truths)
                if bar is not None:
                    bar.advance(inputs.shape[0])
        return results

    def batch_target(self, inputs: Tensor, labels: Tensor, truths: list[GroundTruth]) -> Any:
        """The explained target of a batch (class names and ``"label"`` resolved)."""
        if not isinstance(self.target, str) or self.target in ("predicted", "pred"):
            return _targets(self.target, labels, truths, self.class_names, 0)
        with torch.no_grad(), model_state(self.network, True):
            num_classes = output_tensor(self.network(inputs[:1])).shape[-1]
        return _targets(self.target, labels, truths, self.class_names, num_classes)

    def measure_one(
        self, metric: str, method: str, inputs: Tensor, explanation: Any, truths: list[GroundTruth]
    ) -> MetricResult:
        """One metric of one method's explanation of a batch (the registry's kind says what it is given)."""
        spec = get_metric(metric)
        fn, options = spec.function, self.metric_options.get(metric, {})
        if spec.kind == "model":
            return fn(self.network, inputs, explanation, **options)
        if spec.kind == "maps":
            return fn(explanation, **options)
        if spec.kind == "regions":
            regions, missing = regions_of(truths, inputs.shape[2:], explanation.maps.device)
            return _nan_where(fn(explanation, masks=regions, **options), missing)
        if spec.kind == "parts":
            points, differing, missing, _ = parts_of(truths, explanation.maps.device)
            return _nan_where(fn(explanation, parts=points, differing=differing, **options), missing)
        method_options = self.method_options.get(method, {})
        return fn(self.network, inputs, explanation, method=method, layer=self.layer, options=method_options, **options)


# ----------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------


def _load(model: nn.Module | str, weights: str | None, device: torch.device | str | None) -> tuple[nn.Module, str, Any]:
    """The network, its name and its preprocessing configuration."""
    from camscope.models import data_config, load_model

    if isinstance(model, str):
        return load_model(model, weights=weights, device=device), model, data_config(model)
    if isinstance(model, nn.Module):
        return model, type(model).__name__, data_config(model)
    raise CamscopeError(f"model must be a torch.nn.Module or a model name, got {type(model).__name__}")


def checked_names_and_options(
    methods: Sequence[str],
    metrics: Sequence[str],
    method_options: Mapping[str, Mapping[str, Any]] | None,
    metric_options: Mapping[str, Mapping[str, Any]] | None,
) -> tuple[list[str], list[str], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Canonical method and metric names (``GradCAM`` is ``gradcam``) and the options of each."""
    from camscope.engine.method import canonical_method_name

    method_names = list(dict.fromkeys(canonical_method_name(str(m)) for m in methods))
    if not method_names:
        raise CamscopeError("give at least one method")
    metric_names = list(dict.fromkeys(canonical_metric_name(str(m)) for m in metrics))
    if not metric_names:
        raise CamscopeError("give at least one metric")
    by_metric = {canonical_metric_name(str(k)): dict(v) for k, v in (metric_options or {}).items()}
    for name, given in by_metric.items():
        if name not in metric_names:
            raise CamscopeError(f"options were given for metric {name!r}, which is not evaluated")
        known = get_metric(name).option_names
        unknown = sorted(set(given) - set(known)) if known is not None else []
        if unknown:
            raise CamscopeError(
                f"metric {name!r} has no option {', '.join(map(repr, unknown))}; its options are: "
                f"{', '.join(known or ()) or 'none'}"
            )
    by_method = {canonical_method_name(str(k)): dict(v) for k, v in (method_options or {}).items()}
    for name in by_method:
        if name not in method_names:
            raise CamscopeError(f"options were given for method {name!r}, which is not evaluated")
    return method_names, metric_names, by_method, by_metric


def _dataset_pass(
    network: nn.Module, model_name: str, data: Any, identity: dict[str, Any], options: dict[str, Any]
) -> DatasetPass:
    """The evaluation's pass: checkpoints name the model's fingerprint and ``identity``; ranks merge results."""
    return DatasetPass(
        network,
        data,
        description="evaluating",
        restore=lambda state, _device: EvaluationResults([], []).load_state_dict(state),
        identity=lambda: {"model": model_fingerprint(network, model_name), **identity},
        **options,
    )


def _collect(
    plan: _Plan, batches: DatasetPass, samples: _Samples, limit: int | None, progress: bool | None = None
) -> EvaluationResults:
    """The dataset pass: every batch measured, the per-sample results accumulated.

    Progress counts images x methods x metrics, so it moves inside a batch too.
    """
    resumed = batches.resumed
    results = resumed if resumed is not None else EvaluationResults(list(plan.explainers), plan.metrics)
    images = sample_count(batches.data)
    if images is not None and limit is not None:
        images = min(images, limit)
    steps = len(plan.explainers) * len(plan.metrics)
    total = None if images is None else images * steps // max(batches.shard.world, 1)
    description = f"evaluating {len(plan.explainers)} method(s) x {len(plan.metrics)} metric(s) per image"
    shown = progress if batches.shard.rank == 0 else False
    with ProgressBar(total, description, enabled=shown, delay=1.0) as bar:
        for batch in batches.tracking(lambda: results):
            count = batch.inputs.shape[0] if limit is None else min(batch.inputs.shape[0], limit - batch.start)
            if count <= 0:
                break
            inputs, labels = batch.inputs[:count], batch.labels[:count]
            names, truths = samples.describe(batch, count)
            results.update(names, plan.measure(inputs, labels, truths, bar), start=batch.start)
    results = batches.finish(results, "an evaluation")
    if not results.samples:
        raise CamscopeError("the dataset is empty")
    return results


def _params(plan: _Plan, batch_size: int, size: int, weights: str | None) -> dict[str, Any]:
    """The run's settings, JSON-ready (``weights``: as given for a model name, ``"module"`` for a module)."""
    layer, target = plan.layer, plan.target
    return {
        "weights": weights,
        "layer": layer if layer is None or isinstance(layer, str) else str(layer),
        "target": target if target is None or isinstance(target, (str, int)) else repr(target),
        "batch_size": batch_size,
        "size": size,
        "method_options": json_ready(plan.method_options),
        "metric_options": json_ready(
            {
                k: {
                    kk: (vv if isinstance(vv, (int, float, str, list, tuple, bool)) or vv is None else repr(vv))
                    for kk, vv in v.items()
                }
                for k, v in plan.metric_options.items()
            }
        ),
    }


def _report(results: EvaluationResults, model_name: str, params: dict[str, Any]) -> EvaluationReport:
    """The report of the joined results (and the dataset-level consistency)."""
    joined = results.joined()
    dataset: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in results.methods}
    for method in results.methods:
        for metric, result in joined[method].items():
            summarize = get_metric(metric).summarize
            if summarize is not None:
                dataset[method][metric] = summarize(result)
    return EvaluationReport(
        methods=results.methods,
        metrics=results.metrics,
        results=joined,
        dataset=dataset,
        samples=results.samples,
        model=model_name,
        params=params,
        ground_truth=_ground_truth_counts(results.metrics, joined),
    )


def _ground_truth_counts(metrics: Sequence[str], joined: dict[str, dict[str, MetricResult]]) -> dict[str, int]:
    """Per metric that needs ground truth, the samples that had it: those with a finite headline value."""
    counts: dict[str, int] = {}
    for metric in metrics:
        if get_metric(metric).kind not in ("regions", "parts"):
            continue
        result = next((by_metric[metric] for by_metric in joined.values() if metric in by_metric), None)
        if result is not None:
            counts[metric] = int(torch.isfinite(result.values[result.headline].float()).sum())
    return counts


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
    progress: bool | None = None,
    show_progress: bool | None = None,
    distributed: bool | None = None,
    workers: int = 0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    precision: str | None = None,
) -> EvaluationReport:
    """Explain a dataset with several methods and measure several metrics.

    Args:
        model: a ``torch.nn.Module`` or a :func:`camscope.models.load_model` name
            (``"efficientnet_lite0"``, ``"torchvision:NAME"``, ``"timm:NAME"``).
        data: an image folder (ImageFolder layout or flat; JSON sidecars give boxes,
            masks and parts, see the module docstring), an
            :class:`~camscope.data.folders.ImageFolderData`, a DataLoader or iterable of
            ``(inputs, labels)`` or inputs, or a tensor batch.
        methods: camscope method names (``camscope.available_methods()``).
        metrics: registered metric names (:func:`camscope.metrics.available_metrics`; aliases
            such as ``rd``, ``ad``, ``ic``, ``morf``, ``lerf``, ``pointing``, ``parts``, ``sanity``,
            ``gini``; case and ``-`` forgiven). A metric of your own registers with
            :func:`camscope.metrics.register_metric`.
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
        progress: progress bar on stderr (None: when stderr is a terminal).
        show_progress: deprecated name of ``progress``.
        distributed: split the pass over a ``torch.distributed`` process group (None: when one is
            initialised; every rank returns the whole report, in dataset order, and only rank 0 writes ``out``; see :class:`camscope.passes.engine.DatasetPass`).
        workers: worker processes that load folders and map-style datasets (0: in this process).
        checkpoint: a file for the pass's state (one per rank when distributed).
        checkpoint_every: save the checkpoint every this many batches (default: only at the end).
        resume: continue from ``checkpoint`` when the file exists.
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: the model's forward runs under
            ``torch.autocast`` (:mod:`camscope.passes.precision`).

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

    progress = progress_option(progress, show_progress, "evaluate")
    pass_options: dict[str, Any] = dict(
        distributed=distributed,
        workers=workers,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        precision=precision,
    )
    network, model_name, config = _load(model, weights, resolve_device(device, distributed=bool(distributed)))
    methods, metric_names, by_method, by_metric = checked_names_and_options(
        methods, metrics, method_options, metric_options
    )
    data, folder = _evaluation_data(data, size, config, limit)
    identity = dict(methods=methods, metrics=metric_names, layer=repr(layer), target=repr(target), limit=limit)
    identity["options"] = repr((sorted(by_method.items()), sorted(by_metric.items())))
    # the pass's own bar counts batches: evaluate's counts images x methods x metrics instead
    pass_options.update(batch_size=batch_size, size=size, progress=False)
    batches = _dataset_pass(network, model_name, data, identity, pass_options)
    plan = _Plan(
        network=network,
        layer=layer,
        target=target,
        class_names=(folder.class_names or None) if folder is not None else None,
        explainers={m: camscope.Explainer(network, layer=layer, method=m, **by_method.get(m, {})) for m in methods},
        metrics=metric_names,
        method_options=by_method,
        metric_options=by_metric,
    )
    samples = _Samples(folder, annotations, size, getattr(config, "crop_pct", 0.875))
    results = _collect(plan, batches, samples, limit, progress)
    given = weights if isinstance(model, str) else "module"
    report = _report(results, model_name, _params(plan, batch_size, size, given))
    if out is not None and is_main_process():
        report.save(out, plots=plots)
    return report
