"""Evaluation metrics for saliency maps.

Each metric is a function ``camscope.metrics.NAME(model, inputs, maps, target=None, **protocol)``
(localisation metrics take ``boxes=`` or ``masks=`` instead of a model) working on
batches in torch and returning per-sample values.

The perturbation, localisation, part, sanity and complexity metrics return a
:class:`MetricResult` (per-sample values and curves, the protocol, dataset summaries);
their shared conventions (maps, targets, scores) are described in
``camscope.metrics.common``. ``camscope.evaluate`` runs them over a dataset.
"""

from camscope.metrics.common import MetricResult
from camscope.metrics.complexity import entropy, sparseness
from camscope.metrics.consistency import Consistency, Correlation, consistency, correlate
from camscope.metrics.faithfulness import average_drop, deletion, increase_in_confidence, insertion, relative_drop
from camscope.metrics.feature_masking import feature_masking_accuracy
from camscope.metrics.localisation import auprc, boxes_to_masks, energy_pointing_game, iou, pointing_game
from camscope.metrics.parts import part_scores
from camscope.metrics.road import noisy_linear_impute, road
from camscope.metrics.sanity import cascade_layers, sanity_check

__all__: list[str] = [
    "Consistency",
    "Correlation",
    "MetricResult",
    "auprc",
    "average_drop",
    "boxes_to_masks",
    "cascade_layers",
    "consistency",
    "correlate",
    "deletion",
    "energy_pointing_game",
    "entropy",
    "feature_masking_accuracy",
    "increase_in_confidence",
    "insertion",
    "iou",
    "noisy_linear_impute",
    "part_scores",
    "pointing_game",
    "relative_drop",
    "road",
    "sanity_check",
    "sparseness",
]
