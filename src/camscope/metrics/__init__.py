"""Evaluation metrics for saliency maps.

Each metric is a function ``camscope.metrics.NAME(model, inputs, maps, target=None, **protocol)``
(localisation metrics take ``boxes=`` or ``masks=`` instead of a model) working on
batches in torch and returning per-sample values.
"""

from camscope.metrics.consistency import Consistency, Correlation, consistency, correlate
from camscope.metrics.feature_masking import feature_masking_accuracy

__all__: list[str] = [
    "consistency",
    "correlate",
    "Consistency",
    "Correlation",
    "feature_masking_accuracy",
]
