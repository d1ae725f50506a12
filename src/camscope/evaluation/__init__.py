"""The evaluation runner: methods x metrics over a dataset, with reports, tables and plots."""

from camscope.evaluation.runner import EvaluationReport, evaluate

__all__ = ["EvaluationReport", "evaluate"]
