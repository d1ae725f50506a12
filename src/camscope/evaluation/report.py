"""The evaluation report: summary and per-sample tables, JSON, CSV files and curve plots."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from camscope.errors import needs_extra
from camscope.io import FORMAT_VERSION, atomic_write_bytes, make_folder
from camscope.metrics import MetricResult

if TYPE_CHECKING:
    from camscope.viz.style import FigureStyle

__all__ = ["EvaluationReport", "json_ready"]

# The columns of the terminal table, per metric (default: the headline).
_TABLE_KEYS: dict[str, Callable[[MetricResult], list[str]]] = {
    "road": lambda _: ["combined", "morf", "lerf"],
    "relative_drop": lambda r: [k for k in r.values if k.startswith("rd@")],
    "part_scores": lambda _: ["precision", "recall", "f1", "part_iou"],
    "sanity_check": lambda _: ["spearman", "ssim"],
    "box_pointing": lambda _: ["hit", "on_object", "detected"],
}


def json_ready(value: Any) -> Any:
    """``value`` with tensors as lists, tuples as lists, keys as strings and NaN or infinities as None.

    Example:
        >>> import torch
        >>> json_ready({1: (float("nan"), torch.tensor([0.5]))})
        {'1': [None, [0.5]]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, Tensor):
        return json_ready(value.tolist())
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
        ground_truth: for each metric that needs ground truth (boxes, masks or parts: JSON
            sidecars or ``annotations=``), how many samples had it; the others get NaN.
    """

    methods: list[str]
    metrics: list[str]
    results: dict[str, dict[str, MetricResult]]
    dataset: dict[str, dict[str, dict[str, Any]]]
    samples: list[str]
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    ground_truth: dict[str, int] = field(default_factory=dict)

    def missing_ground_truth(self) -> list[str]:
        """One sentence per metric that lacked ground truth for some samples (none: an empty list).

        Example:
            >>> report = EvaluationReport([], ["iou"], {}, {}, ["a.png", "b.png"], "m", ground_truth={"iou": 0})
            >>> report.missing_ground_truth()[0][:52]
            'iou: ground truth for 0 of 2 images, so no value and'
        """
        total = len(self.samples)
        notes = []
        for metric, count in self.ground_truth.items():
            if count < total:
                effect = (
                    "so no value and no curve plot"
                    if count == 0
                    else f"so its means are over those {count} ({total - count} left out)"
                )
                notes.append(
                    f"{metric}: ground truth for {count} of {total} images, {effect} (boxes, masks or parts come "
                    "from a JSON sidecar next to each image, cat.jpg -> cat.json: see the README)"
                )
        return notes

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
                    for key, mean in summary.items():
                        if key not in result.values and key != "n":
                            rows.append(
                                {
                                    "method": method,
                                    "metric": metric,
                                    "value": key,
                                    "mean": mean,
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

    @property
    def random_weights(self) -> bool:
        """The model was built by name with random weights (``weights=None``): not a trained model."""
        return "weights" in self.params and self.params["weights"] is None

    def heading(self) -> str:
        """What the figures show: the model (and whether its weights are random) and the number of images."""
        note = " (random weights: not a trained model)" if self.random_weights else ""
        unit = "objects" if "objects" in self.params else "images"  # per-object evaluations count objects
        return f"{self.model}{note}, {len(self.samples)} {unit}"

    def table(self) -> Any:
        """A ``rich`` table: one row per metric value (arrow: the better direction), one column per method."""
        with needs_extra("cli", "printed tables"):
            from rich.table import Table

        notes = [
            f"{metric}: ground truth for {count} of {len(self.samples)} images"
            for metric, count in self.ground_truth.items()
        ]
        table = Table(title=f"camscope evaluate: {self.heading()}", caption="; ".join(notes) or None)
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
            table.add_row(f"{metric if key == metric else f'{metric} {key}'}{arrow}", *cells)
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
        return json_ready(
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
                "ground_truth": {
                    metric: {"images": n, "of": len(self.samples)} for metric, n in self.ground_truth.items()
                },
                "summary": self.summary_rows(),
                "dataset": self.dataset,
                "mean_curves": self.mean_curves(),
                "per_sample": self.per_sample_rows(),
            }
        )

    def save(self, out: str | os.PathLike[str], plots: bool = True) -> dict[str, Path]:
        """Write ``summary.csv``, ``per_sample.csv``, ``results.json`` and ``curves_METRIC.png``; return their paths."""
        out = Path(out)
        make_folder(out)
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

    def curve_metrics(self) -> list[str]:
        """The metrics that :meth:`plot_curves` draws: those with a curve of at least one finite point."""
        return list(self._plotted(self.mean_curves()))

    def _plotted(self, curves: dict[str, Any]) -> dict[str, list[str]]:
        """Per metric with a drawable curve, the keys of its curves that have a finite point."""
        plotted = {}
        for metric in self.metrics:
            keys = {
                key
                for method in self.methods
                for key, curve in curves.get(method, {}).get(metric, {}).items()
                if any(math.isfinite(y) for y in curve["y"])
            }
            if keys:
                plotted[metric] = sorted(keys)
        return plotted

    def plot_curves(self, out: str | os.PathLike[str], style: FigureStyle | None = None) -> dict[str, Path]:
        """One figure per metric with curves (deletion, insertion, ROAD, ...): the mean curve of each method.

        Saved as ``curves_METRIC.png`` (or in ``style``'s format), headed with the model and the image count.
        A metric whose curves have no finite point (no sample had its ground truth) gets no figure.
        """
        from camscope.viz.figures import headed, map_title, new_figure, save_figure
        from camscope.viz.style import FigureStyle

        curves = self.mean_curves()
        written: dict[str, Path] = {}
        for metric, keys in self._plotted(curves).items():
            figure = new_figure((4.2 * len(keys), 3.4))
            axes = figure.subplots(1, len(keys), squeeze=False)
            for axis, key in zip(axes[0], keys):
                for method in self.methods:
                    curve = curves.get(method, {}).get(metric, {}).get(key)
                    if curve is not None:
                        marker = "." if len(curve["x"]) < 30 else None
                        axis.plot(curve["x"], curve["y"], marker=marker, label=map_title(method))
                axis.set_title(f"{metric}: {key}" if key != "curve" else metric, fontsize=10)
                axis.set_xlabel(_XLABELS.get(metric, "step"))
                axis.set_ylabel(_YLABELS.get(metric, key))
                axis.grid(alpha=0.3)
            axes[0][0].legend(fontsize=8)
            headed(figure, self.heading(), warning=self.random_weights)
            path = Path(out) / f"curves_{metric}{(style or FigureStyle()).suffix}"
            written[f"curves_{metric}"] = save_figure(path, figure, style=style)
        return written


_XLABELS = {
    "deletion": "fraction of pixels removed",
    "insertion": "fraction of pixels inserted",
    "road": "fraction of pixels removed",
    "relative_drop": "fraction of pixels masked",
    "iou": "threshold",
    "mask_iou": "threshold",
    "part_scores": "threshold",
    "sanity_check": "layers randomised (top down)",
}
_YLABELS = {
    "mask_iou": "IoU with the object's mask",
    "deletion": "probability",
    "insertion": "probability",
    "road": "probability",
    "relative_drop": "RD",
}


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
