"""The evaluation runner: methods x metrics over a dataset, with reports, tables and plots.

* :mod:`camscope.evaluation.runner`: :func:`evaluate`, the dataset pass and the per-batch measurements.
* :mod:`camscope.evaluation.sidecars`: ground truth (boxes, masks, parts, labels) next to the images.
* :mod:`camscope.evaluation.report`: :class:`EvaluationReport`, its CSV and JSON files and plots.
"""

from typing import Any

from camscope.evaluation import runner as _runner
from camscope.evaluation.report import EvaluationReport
from camscope.evaluation.runner import evaluate
from camscope.evaluation.sidecars import load_sidecar

__all__ = ["EvaluationReport", "evaluate", "load_sidecar"]


def __getattr__(name: str) -> Any:
    # METRICS: the registered metrics as {name: (kind, function)}, kept for compatibility;
    # camscope.metrics.available_metrics() is the registry itself.
    if name == "METRICS":
        return _runner.METRICS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
