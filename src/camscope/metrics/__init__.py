"""Evaluation metrics for saliency maps.

Each metric is a function ``camscope.metrics.NAME(model, inputs, maps, target=None, **protocol)``
(localisation metrics take ``boxes=`` or ``masks=`` instead of a model) working on
batches in torch and returning per-sample values.

The perturbation, localisation, part, sanity and complexity metrics return a
:class:`MetricResult` (per-sample values and curves, the protocol, dataset summaries);
their shared conventions (maps, targets, scores) are described in
``camscope.metrics.common``. Every metric registers itself by name
(:func:`register_metric`, :func:`available_metrics`), which is how ``camscope.evaluate`` and
``camscope evaluate --metric NAME`` find it; a metric of your own registers the same way.
"""

from camscope.metrics.arcc import arcc
from camscope.metrics.coherency import coherency
from camscope.metrics.common import MetricResult
from camscope.metrics.complexity import complexity, entropy, sparseness
from camscope.metrics.consistency import Consistency, Correlation, consistency, correlate
from camscope.metrics.faithfulness import (
    average_drop,
    confidence_change,
    deletion,
    drop_in_confidence,
    increase_in_confidence,
    insertion,
    relative_drop,
)
from camscope.metrics.feature_masking import feature_masking_accuracy
from camscope.metrics.localisation import auprc, boxes_to_masks, energy_pointing_game, iou, pointing_game
from camscope.metrics.parts import part_scores
from camscope.metrics.perturbation_confidence import least_relevant_first, most_relevant_first
from camscope.metrics.registry import (
    MetricSpec,
    available_metrics,
    canonical_metric_name,
    get_metric,
    register_metric,
    unregister_metric,
)
from camscope.metrics.road import noisy_linear_impute, road
from camscope.metrics.sanity import cascade_layers, sanity_check

__all__: list[str] = [
    "Consistency",
    "Correlation",
    "MetricResult",
    "MetricSpec",
    "arcc",
    "auprc",
    "available_metrics",
    "average_drop",
    "boxes_to_masks",
    "canonical_metric_name",
    "cascade_layers",
    "coherency",
    "complexity",
    "confidence_change",
    "consistency",
    "correlate",
    "deletion",
    "drop_in_confidence",
    "energy_pointing_game",
    "entropy",
    "feature_masking_accuracy",
    "get_metric",
    "increase_in_confidence",
    "insertion",
    "iou",
    "least_relevant_first",
    "most_relevant_first",
    "noisy_linear_impute",
    "part_scores",
    "pointing_game",
    "register_metric",
    "relative_drop",
    "road",
    "sanity_check",
    "sparseness",
    "unregister_metric",
]
