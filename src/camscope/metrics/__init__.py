"""Evaluation metrics for saliency maps.

Each metric is a function ``camscope.metrics.NAME(model, inputs, maps, target=None, **protocol)``
(localisation metrics take ``boxes=`` or ``masks=`` instead of a model) working on
batches in torch and returning per-sample values.
"""

__all__: list[str] = []
