"""The evaluation runner: methods x metrics over a dataset, with reports, tables and plots.

* :mod:`camscope.evaluation.runner`: :func:`evaluate`, the dataset pass and the per-batch measurements.
* :mod:`camscope.evaluation.sidecars`: ground truth (boxes, masks, parts, labels) next to the images.
* :mod:`camscope.evaluation.report`: :class:`EvaluationReport`, its CSV and JSON files and plots.
"""

from camscope.evaluation.report import EvaluationReport
from camscope.evaluation.runner import METRICS, evaluate
from camscope.evaluation.sidecars import load_sidecar

__all__ = ["METRICS", "EvaluationReport", "evaluate", "load_sidecar"]
