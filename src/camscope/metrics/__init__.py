"""Evaluation metrics for saliency maps.

Each metric is a function ``camscope.metrics.NAME(model, inputs, maps, target=None, **protocol)``
(localisation metrics take ``boxes=`` or ``masks=`` instead of a model) working on
batches in torch and returning per-sample values.

The perturbation, localisation, part, sanity and complexity metrics return a
:class:`MetricResult` (per-sample values and curves, the protocol, dataset summaries);
their shared conventions (maps, targets, scores) are described in
``camscope.metrics._common``. ``camscope.evaluate`` runs them over a dataset.
"""

from camscope.metrics.consistency import Consistency, Correlation, consistency, correlate
from camscope.metrics.feature_masking import feature_masking_accuracy
from camscope.metrics._common import MetricResult
from camscope.metrics.faithfulness import average_drop, deletion, increase_in_confidence, insertion, relative_drop
from camscope.metrics.road import noisy_linear_impute, road
from camscope.metrics.localisation import auprc, boxes_to_masks, energy_pointing_game, iou, pointing_game
from camscope.metrics.parts import part_scores
from camscope.metrics.sanity import cascade_layers, sanity_check
from camscope.metrics.complexity import entropy, sparseness

__all__: list[str] = [
    "consistency",
    "correlate",
    "Consistency",
    "Correlation",
    "feature_masking_accuracy",
    "MetricResult",
    "deletion",
    "insertion",
    "average_drop",
    "increase_in_confidence",
    "relative_drop",
    "road",
    "noisy_linear_impute",
    "iou",
    "auprc",
    "pointing_game",
    "energy_pointing_game",
    "boxes_to_masks",
    "part_scores",
    "sanity_check",
    "cascade_layers",
    "sparseness",
    "entropy",
]
