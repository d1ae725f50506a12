"""The per-sample results of an evaluation pass, as a mergeable accumulator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from camscope.errors import CamscopeError
from camscope.metrics import MetricResult

__all__ = ["EvaluationResults"]


class EvaluationResults:
    """Sample names and, per method and metric, the per-sample :class:`~camscope.metrics.MetricResult`.

    A mergeable accumulator (:class:`camscope.passes.engine.Accumulator`):
    ``update`` appends a batch, ``merge`` adds the samples of a pass over
    another part of the data, and ``state_dict`` / ``load_state_dict`` restore it
    exactly. Each sample keeps its dataset position (given to ``update``, or
    counted on from the last one); a merge of parts with disjoint positions
    (batch ``i`` of an iterable on rank ``i % world``) puts the samples in
    dataset order, and a merge of parts counted separately appends.
    Results are kept on the CPU; :meth:`joined` concatenates them.

    Example:
        >>> import torch
        >>> from camscope.metrics import MetricResult
        >>> def part(values):
        ...     return {"gradcam": {"sparseness": MetricResult("sparseness", {"gini": torch.tensor(values)})}}
        >>> first = EvaluationResults(["gradcam"], ["sparseness"])
        >>> second = EvaluationResults(["gradcam"], ["sparseness"])
        >>> first.update(["a", "b"], part([0.5, 0.25]))
        >>> second.update(["c"], part([0.75]))
        >>> merged = first.merge(second)
        >>> merged.samples, merged.joined()["gradcam"]["sparseness"]["gini"].tolist()
        (['a', 'b', 'c'], [0.5, 0.25, 0.75])
    """

    def __init__(self, methods: Sequence[str], metrics: Sequence[str]) -> None:
        self.methods = [str(m) for m in methods]
        self.metrics = [str(m) for m in metrics]
        self.samples: list[str] = []
        self.positions: list[int] = []
        self._parts: dict[str, dict[str, list[MetricResult]]] = {m: {k: [] for k in self.metrics} for m in self.methods}

    def __len__(self) -> int:
        return len(self.samples)

    def update(
        self, names: Sequence[str], results: Mapping[str, Mapping[str, MetricResult]], start: int | None = None
    ) -> None:
        """Add a batch: its sample ``names``, ``results[method][metric]`` with one value per sample, and the
        dataset position of its first sample (default: after the last sample added)."""
        for method in self.methods:
            for metric in self.metrics:
                result = results.get(method, {}).get(metric)
                if result is None:
                    raise CamscopeError(f"the batch has no result for method {method!r} and metric {metric!r}")
                if len(result) != len(names):
                    raise CamscopeError(
                        f"{metric} of {method} has {len(result)} values for a batch of {len(names)} samples"
                    )
                self._parts[method][metric].append(result.cpu())
        first = start if start is not None else (self.positions[-1] + 1 if self.positions else 0)
        self.positions += list(range(first, first + len(names)))
        self.samples += [str(name) for name in names]

    def merge(self, other: EvaluationResults) -> EvaluationResults:
        """Append the samples of ``other`` (a pass over other data with the same methods and metrics)."""
        if other.methods != self.methods or other.metrics != self.metrics:
            raise CamscopeError(
                f"cannot merge evaluation results of methods {other.methods} and metrics {other.metrics} "
                f"into methods {self.methods} and metrics {self.metrics}"
            )
        for method in self.methods:
            for metric in self.metrics:
                self._parts[method][metric] += other._parts[method][metric]
        positions = list(other.positions)
        if positions and self.positions and not set(positions).isdisjoint(self.positions):
            shift = max(self.positions) + 1 - min(positions)  # parts counted separately: append
            positions = [p + shift for p in positions]
        self.samples += other.samples
        self.positions += positions
        if any(a > b for a, b in zip(self.positions, self.positions[1:])):
            self._sort()
        return self

    def _sort(self) -> None:
        """Put the samples in dataset order (after a merge of interleaved parts)."""
        order = sorted(range(len(self.positions)), key=self.positions.__getitem__)
        index = torch.tensor(order, dtype=torch.long)
        joined = self.joined()
        self._parts = {
            method: {metric: [_select(joined[method][metric], index)] for metric in self.metrics}
            for method in self.methods
        }
        self.samples = [self.samples[i] for i in order]
        self.positions = [self.positions[i] for i in order]

    def joined(self) -> dict[str, dict[str, MetricResult]]:
        """``[method][metric]``: the results of every sample, in order."""
        if not self.samples:
            raise CamscopeError("no samples were evaluated")
        return {
            method: {metric: MetricResult.cat(self._parts[method][metric]) for metric in self.metrics}
            for method in self.methods
        }

    def state_dict(self) -> dict[str, Any]:
        """Methods, metrics, sample names and the state of every joined result (:meth:`MetricResult.state_dict`)."""
        results = (
            {m: {k: r.state_dict() for k, r in by_metric.items()} for m, by_metric in self.joined().items()}
            if self.samples
            else {}
        )
        return {
            "methods": list(self.methods),
            "metrics": list(self.metrics),
            "samples": list(self.samples),
            "positions": list(self.positions),
            "results": results,
        }

    def load_state_dict(self, state: dict[str, Any]) -> EvaluationResults:
        """Restore what :meth:`state_dict` returned."""
        self.methods, self.metrics = list(state["methods"]), list(state["metrics"])
        self.samples = list(state["samples"])
        self.positions = [int(p) for p in state.get("positions", range(len(self.samples)))]
        self._parts = {m: {k: [] for k in self.metrics} for m in self.methods}
        for method, by_metric in state["results"].items():
            for metric, result in by_metric.items():
                self._parts[method][metric] = [MetricResult.from_state_dict(result)]
        return self


def _select(result: MetricResult, index: Tensor) -> MetricResult:
    """The samples ``index`` of a joined result (values and curves; the shared steps stay)."""
    return replace(
        result,
        values={k: v[index] for k, v in result.values.items()},
        curves={k: v[index] for k, v in result.curves.items()},
    )
