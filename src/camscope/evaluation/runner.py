"""Dataset runner: every method explained and every metric measured over a dataset, with reports.

``camscope.evaluate(model, data, methods=[...], metrics=[...])`` explains each batch with
each method, measures each metric on the maps, joins the per-sample results over the
dataset, and (with ``out=``) writes a CSV and a JSON report and plots of the mean
curves. ``camscope evaluate`` is its command line.

Ground truth for the localisation and part metrics comes from a JSON *sidecar* next to
each image of a folder: ``cat.jpg`` -> ``cat.json``::

    {
      "boxes": [[x1, y1, x2, y2], ...],      # pixels of the original image; joined
      "mask": "cat_mask.png",                # relative to the JSON; nonzero = object
      "label": 281,                          # or "tabby cat": the class for target="label"
      "parts": {"beak": [x, y], "crown": [x, y], "tail": null},   # keypoints; null = not visible
      "differing": ["beak", "crown"]         # parts that differ from the counterfactual class
    }

Every key is optional. Coordinates are mapped to the model input with camscope's
preprocessing geometry (:class:`camscope.models.DataConfig`: the shorter side resized to
``floor(size / crop_pct)``, the centre ``size x size`` crop), masks with nearest-neighbour
resizing. With data other than a folder, ``annotations=`` gives one such dict per sample
in dataset order, already in input pixels (``"mask"`` may then be an array or tensor).
Samples without ground truth get NaN for the metrics that need it (skipped by the means).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camscope.errors import CamscopeError
from camscope.io import FORMAT_VERSION, atomic_write_bytes
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

__all__ = ["METRICS", "EvaluationReport", "evaluate", "load_sidecar"]

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

# The columns of the terminal table, per metric (default: the headline).
_TABLE_KEYS: dict[str, Callable[[MetricResult], list[str]]] = {
    "road": lambda r: ["combined", "morf", "lerf"],
    "relative_drop": lambda r: [k for k in r.values if k.startswith("rd@")],
    "part_scores": lambda r: ["precision", "recall", "f1", "part_iou"],
    "sanity_check": lambda r: ["spearman", "ssim"],
}


def _metric_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in METRICS:
        known = ", ".join(sorted(set(METRICS) | set(_ALIASES)))
        raise CamscopeError(f"unknown metric {name!r}; known metrics: {known}")
    return key


# ----------------------------------------------------------------------------------------------
# Ground truth
# ----------------------------------------------------------------------------------------------


@dataclass
class _Truth:
    """One sample's ground truth in input pixels."""

    region: Tensor | None = None  # [S, S] bool
    parts: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    differing: set[str] = field(default_factory=set)
    label: Any = None


def _geometry(width: int, height: int, size: int, crop_pct: float) -> tuple[float, float, int, int, int, int]:
    """Scale factors, crop offsets and resized size of camscope's resize-then-centre-crop."""
    short_target = math.floor(size / crop_pct)
    if width <= height:
        new_w, new_h = short_target, int(short_target * height / width)
    else:
        new_w, new_h = int(short_target * width / height), short_target
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return new_w / width, new_h / height, left, top, new_w, new_h


def load_sidecar(image: str | os.PathLike[str], size: int = 224, crop_pct: float = 0.875) -> dict[str, Any] | None:
    """Read ``IMAGE.json`` next to an image and map it to the ``size x size`` model input.

    Returns None when there is no sidecar, else a dict with ``region`` (``[size, size]``
    bool tensor or None), ``parts`` (name -> ``(x, y)`` or None), ``differing`` (names) and
    ``label``. See the module docstring for the format.
    """
    from PIL import Image, ImageOps

    image = Path(image)
    sidecar = image.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        spec = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CamscopeError(f"cannot read the annotation sidecar {sidecar}: {error}") from error
    if not isinstance(spec, dict):
        raise CamscopeError(f"{sidecar} must hold a JSON object with boxes/mask/label/parts/differing")
    with Image.open(image) as opened:
        width, height = ImageOps.exif_transpose(opened).size
    sx, sy, left, top, new_w, new_h = _geometry(width, height, size, crop_pct)
    region = None
    if spec.get("boxes"):
        from camscope.metrics import boxes_to_masks

        boxes = torch.as_tensor(spec["boxes"], dtype=torch.float64).reshape(-1, 4)
        mapped = boxes * torch.tensor([sx, sy, sx, sy], dtype=torch.float64) - torch.tensor(
            [left, top, left, top], dtype=torch.float64
        )
        region = boxes_to_masks([mapped], (size, size))[0]
    if spec.get("mask"):
        mask_path = sidecar.parent / spec["mask"]
        if not mask_path.is_file():
            raise CamscopeError(f"{sidecar} names a mask {mask_path} that does not exist")
        with Image.open(mask_path) as opened:
            mask = ImageOps.exif_transpose(opened).convert("L")
            if mask.size != (width, height):
                raise CamscopeError(f"mask {mask_path} is {mask.size[0]}x{mask.size[1]}, its image {width}x{height}")
            mask = mask.resize((new_w, new_h), Image.NEAREST).crop((left, top, left + size, top + size))
            array = torch.frombuffer(bytearray(mask.tobytes()), dtype=torch.uint8).reshape(size, size) > 0
        region = array if region is None else region | array
    parts: dict[str, tuple[float, float] | None] = {}
    for name, point in (spec.get("parts") or {}).items():
        if point is None:
            parts[str(name)] = None
            continue
        x, y = float(point[0]) * sx - left, float(point[1]) * sy - top
        parts[str(name)] = (x, y) if 0 <= x < size and 0 <= y < size else None
    differing = {str(name) for name in spec.get("differing") or []}
    return {"region": region, "parts": parts, "differing": differing, "label": spec.get("label")}


def _sidecar_masks(samples: Sequence[tuple[Path, int]]) -> set[Path]:
    """Mask images named by sidecars: they lie next to the images but are not samples."""
    masks: set[Path] = set()
    for folder in {path.parent for path, _ in samples}:
        for sidecar in folder.glob("*.json"):
            try:
                spec = json.loads(sidecar.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(spec, dict) and isinstance(spec.get("mask"), str):
                masks.add((folder / spec["mask"]).resolve())
    return masks


def _truth_from_mapping(spec: Mapping[str, Any] | None, size: Sequence[int]) -> _Truth:
    if not spec:
        return _Truth()
    if "region" in spec:  # from load_sidecar: already in input pixels
        return _Truth(
            spec.get("region"), dict(spec.get("parts") or {}), set(spec.get("differing") or ()), spec.get("label")
        )
    from camscope.metrics import boxes_to_masks

    region = None
    if spec.get("boxes") is not None and len(spec["boxes"]):
        region = boxes_to_masks([spec["boxes"]], size)[0]
    if spec.get("mask") is not None:
        mask = torch.as_tensor(spec["mask"]).bool()
        if tuple(mask.shape) != tuple(size):
            raise CamscopeError(f"annotation masks must be {list(size)} like the inputs, got {list(mask.shape)}")
        region = mask if region is None else region | mask
    parts = {str(k): (None if v is None else (float(v[0]), float(v[1]))) for k, v in (spec.get("parts") or {}).items()}
    return _Truth(region, parts, {str(n) for n in spec.get("differing") or []}, spec.get("label"))


# ----------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Tensor):
        return _clean(value.tolist())
    return value


@dataclass
class EvaluationReport:
    """Results of :func:`evaluate`.

    Attributes:
        methods: the methods, in order.
        metrics: the metrics (canonical names), in order.
        results: ``results[method][metric]`` is the :class:`~camscope.metrics.MetricResult`
            over the whole dataset (per-sample values in dataset order).
        dataset: dataset-level numbers that are not means of per-sample values
            (``consistency``: the correlation of CAM sums with logits), by method and metric.
        samples: the sample names (file paths for folders, else indices).
        model: the model's name (or class name).
        params: the run's settings.
    """

    methods: list[str]
    metrics: list[str]
    results: dict[str, dict[str, MetricResult]]
    dataset: dict[str, dict[str, dict[str, Any]]]
    samples: list[str]
    model: str
    params: dict[str, Any] = field(default_factory=dict)

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per method, metric and value: ``mean`` over the samples (NaN skipped) and ``n`` used."""
        rows: list[dict[str, Any]] = []
        for method in self.methods:
            for metric in self.metrics:
                result = self.results[method].get(metric)
                if result is not None:
                    summary = result.summary()
                    for key, value in result.values.items():
                        valid = int(torch.isfinite(value.float()).sum())
                        rows.append(
                            {
                                "method": method,
                                "metric": metric,
                                "value": key,
                                "mean": summary[key],
                                "n": valid,
                                "higher_is_better": result.higher_is_better.get(key),
                            }
                        )
                    for key, value in summary.items():
                        if key not in result.values and key != "n":
                            rows.append(
                                {
                                    "method": method,
                                    "metric": metric,
                                    "value": key,
                                    "mean": value,
                                    "n": summary["n"],
                                    "higher_is_better": result.higher_is_better.get(result.headline),
                                }
                            )
                for key, value in self.dataset.get(method, {}).get(metric, {}).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        rows.append(
                            {
                                "method": method,
                                "metric": metric,
                                "value": key,
                                "mean": float(value),
                                "n": self.dataset[method][metric].get("n"),
                                "higher_is_better": True,
                            }
                        )
        return rows

    def _columns(self) -> list[tuple[str, str, bool | None]]:
        columns: list[tuple[str, str, bool | None]] = []
        for metric in self.metrics:
            if metric == "consistency":
                columns.append((metric, "coefficient", True))
                continue
            result = next((self.results[m][metric] for m in self.methods if metric in self.results[m]), None)
            if result is None:
                continue
            keys = _TABLE_KEYS.get(metric, lambda r: [r.headline])(result)
            columns += [(metric, key, result.higher_is_better.get(key)) for key in keys if key in result.values]
        return columns

    def table(self) -> Any:
        """A ``rich`` table: one row per metric value (arrow: the better direction), one column per method."""
        from rich.table import Table

        table = Table(title=f"camscope evaluate: {self.model}, {len(self.samples)} images")
        table.add_column("metric")
        for method in self.methods:
            table.add_column(method, justify="right")
        for metric, key, higher in self._columns():
            arrow = "" if higher is None else (" ↑" if higher else " ↓")
            cells = []
            for method in self.methods:
                if metric == "consistency":
                    value = self.dataset.get(method, {}).get(metric, {}).get("coefficient")
                else:
                    result = self.results[method].get(metric)
                    value = None if result is None else result.summary()[key]
                cells.append(
                    "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
                )
            table.add_row(f"{metric} {key}{arrow}", *cells)
        return table

    def mean_curves(self) -> dict[str, dict[str, dict[str, dict[str, list[float]]]]]:
        """``[method][metric][curve] -> {"x": [...], "y": [...]}``: the mean curves."""
        out: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {}
        for method in self.methods:
            for metric, result in self.results[method].items():
                for key, curve in result.mean_curves().items():
                    out.setdefault(method, {}).setdefault(metric, {})[key] = {
                        "x": result.steps[key].tolist(),
                        "y": curve.tolist(),
                    }
        return out

    def per_sample_rows(self) -> list[dict[str, Any]]:
        """One row per sample and method, one column per ``metric.value``."""
        rows = []
        for method in self.methods:
            for index, name in enumerate(self.samples):
                row: dict[str, Any] = {"sample": name, "method": method}
                for metric in self.metrics:
                    result = self.results[method].get(metric)
                    if result is None:
                        continue
                    for key, value in result.values.items():
                        row[f"{metric}.{key}"] = float(value[index])
                rows.append(row)
        return rows

    def to_json(self) -> dict[str, Any]:
        """Everything, JSON-ready (NaN as null)."""
        return _clean(
            {
                "kind": "camscope-evaluation",
                "format_version": FORMAT_VERSION,
                "model": self.model,
                "methods": self.methods,
                "metrics": self.metrics,
                "params": self.params,
                "protocols": {
                    metric: next(
                        (self.results[m][metric].params for m in self.methods if metric in self.results[m]), {}
                    )
                    for metric in self.metrics
                },
                "samples": self.samples,
                "summary": self.summary_rows(),
                "dataset": self.dataset,
                "mean_curves": self.mean_curves(),
                "per_sample": self.per_sample_rows(),
            }
        )

    def save(self, out: str | os.PathLike[str], plots: bool = True) -> dict[str, Path]:
        """Write ``summary.csv``, ``per_sample.csv``, ``results.json`` and ``curves_METRIC.png``; return their paths."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "summary": atomic_write_bytes(out / "summary.csv", _csv(self.summary_rows())),
            "per_sample": atomic_write_bytes(out / "per_sample.csv", _csv(self.per_sample_rows())),
            "json": atomic_write_bytes(
                out / "results.json", json.dumps(self.to_json(), indent=1, allow_nan=False).encode()
            ),
        }
        if plots:
            paths.update(self.plot_curves(out))
        return paths

    def plot_curves(self, out: str | os.PathLike[str]) -> dict[str, Path]:
        """One figure per metric with curves (deletion, insertion, ROAD, ...): the mean curve of each method."""
        from camscope.viz.figures import plt, save_figure

        curves = self.mean_curves()
        written: dict[str, Path] = {}
        for metric in self.metrics:
            keys = sorted({key for method in self.methods for key in curves.get(method, {}).get(metric, {})})
            if not keys:
                continue
            figure, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
            for axis, key in zip(axes[0], keys):
                for method in self.methods:
                    curve = curves.get(method, {}).get(metric, {}).get(key)
                    if curve is not None:
                        axis.plot(curve["x"], curve["y"], marker="." if len(curve["x"]) < 30 else None, label=method)
                axis.set_title(f"{metric}: {key}" if key != "curve" else metric, fontsize=10)
                axis.set_xlabel(_XLABELS.get(metric, "step"))
                axis.set_ylabel(_YLABELS.get(metric, key))
                axis.grid(alpha=0.3)
            axes[0][0].legend(fontsize=8)
            figure.tight_layout()
            written[f"curves_{metric}"] = save_figure(Path(out) / f"curves_{metric}.png", figure)
        return written


_XLABELS = {
    "deletion": "fraction of pixels removed",
    "insertion": "fraction of pixels inserted",
    "road": "fraction of pixels removed",
    "relative_drop": "fraction of pixels masked",
    "iou": "threshold",
    "part_scores": "threshold",
    "sanity_check": "layers randomised (top down)",
}
_YLABELS = {"deletion": "probability", "insertion": "probability", "road": "probability", "relative_drop": "RD"}


def _csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    fields: list[str] = []
    for row in rows:
        fields += [key for key in row if key not in fields]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return buffer.getvalue().encode()


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
) -> tuple[Iterable[tuple[Tensor, Tensor, list[str], list[_Truth]]], int | None, list[str] | None]:
    """``(inputs, labels, names, truths)`` batches, the number of samples when known, and folder class names."""
    from camscope.data.folders import ImageFolderData
    from camscope.passes.batches import iter_batches

    if isinstance(data, (str, os.PathLike)):
        from camscope.models import load_image

        data = ImageFolderData(data, transform=lambda path: load_image(path, size=size, config=config)[0][0], size=size)
    if isinstance(data, ImageFolderData):
        folder = data
        masks = _sidecar_masks(folder.samples)
        if masks:
            folder.samples = [(path, label) for path, label in folder.samples if path.resolve() not in masks]
        count = len(folder) if limit is None else min(limit, len(folder))
        crop_pct = getattr(config, "crop_pct", 0.875)

        def folder_batches() -> Iterable[tuple[Tensor, Tensor, list[str], list[_Truth]]]:
            for start in range(0, count, batch_size):
                chunk = folder.samples[start : min(count, start + batch_size)]
                images = torch.stack([folder.transform(path) for path, _ in chunk]).to(device)
                labels = torch.tensor([label for _, label in chunk], dtype=torch.long, device=device)
                truths = [_truth_from_mapping(load_sidecar(path, size, crop_pct), (size, size)) for path, _ in chunk]
                yield images, labels, [str(path) for path, _ in chunk], truths

        return folder_batches(), count, folder.class_names or None

    def other_batches() -> Iterable[tuple[Tensor, Tensor, list[str], list[_Truth]]]:
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
            truths = [_truth_from_mapping(spec, inputs.shape[2:]) for spec in specs]
            seen += inputs.shape[0]
            yield inputs, labels, names, truths

    total = len(data) if isinstance(data, Tensor) else None
    if total is not None and limit is not None:
        total = min(total, limit)
    return other_batches(), total, None


def _targets(target: Any, labels: Tensor, truths: list[_Truth], class_names: list[str] | None, num_classes: int) -> Any:
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


def _regions_of(truths: list[_Truth], size: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
    regions = torch.zeros(len(truths), *size, dtype=torch.bool, device=device)
    missing = torch.ones(len(truths), dtype=torch.bool)
    for i, truth in enumerate(truths):
        if truth.region is not None:
            regions[i] = truth.region.to(device)
            missing[i] = False
    return regions, missing


def _parts_of(truths: list[_Truth], device: torch.device) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    names = sorted({name for truth in truths for name in truth.parts})
    points = torch.full((len(truths), max(1, len(names)), 2), float("nan"), device=device)
    differing = torch.zeros(len(truths), max(1, len(names)), dtype=torch.bool, device=device)
    missing = torch.ones(len(truths), dtype=torch.bool)
    for i, truth in enumerate(truths):
        if truth.parts:
            missing[i] = False
        for j, name in enumerate(names):
            point = truth.parts.get(name)
            if point is not None:
                points[i, j] = torch.tensor(point, device=device)
            differing[i, j] = name in truth.differing
    return points, differing, missing, names


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
        model: a ``torch.nn.Module`` or a :func:`camscope.models.load_model` name
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
    from camscope.models import data_config, load_model
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
            "method_options": _clean(method_options),
            "metric_options": _clean(
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
    truths: list[_Truth],
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
        regions, missing = _regions_of(truths, inputs.shape[2:], explanation.maps.device)
        return _nan_where(fn(explanation, masks=regions, **options), missing)  # type: ignore[misc]
    if kind == "parts":
        points, differing, missing, _ = _parts_of(truths, explanation.maps.device)
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
