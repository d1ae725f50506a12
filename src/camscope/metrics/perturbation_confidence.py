"""Perturbation confidence: the change of the target's score after removing the most (MoRF) or the
least (LeRF) relevant pixels, averaged over removal fractions.

These are grad-cam 1.5.7's ``PerturbationConfidenceMetric`` family
(``RemoveMostRelevantFirst`` / ``RemoveLeastRelevantFirst`` at a threshold,
``AveragerAcrossThresholds`` over thresholds; with its noisy linear imputer they are its
``ROADMostRelevantFirstAverage`` and ``ROADLeastRelevantFirstAverage``), the two halves of ROAD
(Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods",
ICML 2022, arXiv:2202.00449). :func:`camscope.metrics.road` combines them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.explainer import Explanation
from camscope.metrics.batching import BatchSize
from camscope.metrics.common import MetricResult, check_fractions
from camscope.metrics.registry import register_metric
from camscope.metrics.removal import Imputation, RemovalProtocol, removal_scores

__all__ = ["least_relevant_first", "most_relevant_first"]

_DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _perturbation_confidence(
    order: str,
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any,
    fractions: Sequence[float],
    protocol: RemovalProtocol,
) -> MetricResult:
    values = check_fractions(fractions, "fractions")
    clean, curves = removal_scores(model, inputs, maps, target, (order,), values, protocol)
    change = curves[order] - clean[:, None]  # [B, P]
    name = "most_relevant_first" if order == "morf" else "least_relevant_first"
    steps = torch.tensor(values)
    return MetricResult(
        name=name,
        values={"change": change.mean(dim=1), "score": clean},
        curves={"change": change},
        steps={"change": steps},
        headline="change",
        higher_is_better={"change": order == "lerf", "score": True},
        params={"fractions": values, **protocol.params()},
    )


@register_metric("most_relevant_first", kind="model", aliases=("morf", "remove_most_relevant_first"))
def most_relevant_first(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any = None,
    *,
    fractions: Sequence[float] = _DEFAULT_FRACTIONS,
    imputation: Imputation = "linear",
    noise: float = 0.01,
    score: str | Callable[[Tensor, Any], Tensor] = "probability",
    tie_break: float = 1e-4,
    seed: int = 0,
    batch_size: BatchSize = "auto",
    atol: float = 1e-4,
) -> MetricResult:
    r"""Remove the most relevant pixels first: the score's change, averaged over removal fractions.

    For each fraction ``p`` the ``floor(p * H * W)`` pixels ranked highest by the map are
    removed and imputed (ROAD's noisy linear imputation by default), and

    .. math::
        \mathrm{change} = \frac{1}{|P|} \sum_{p \in P} \bigl(s(\tilde x_p) - s(x)\bigr)

    is recorded (lower is better: removing the evidence should lower the score).

    Ranking, imputation, noise and batching are :func:`camscope.metrics.road`'s (its
    ``morf`` curve minus the clean score is this metric's ``change`` curve). Peer: grad-cam
    1.5.7's ``ROADMostRelevantFirstAverage(percentiles)``, where a percentile ``q`` is the
    share of pixels *kept* (its mask is ``map < np.percentile(map, q)``): ``q`` corresponds
    to the fraction ``1 - q / 100`` here, and the default 10..90 sets agree. Its
    ``RemoveMostRelevantFirst("auto")`` (an Otsu threshold) is not offered: its mask keeps
    the pixels above the threshold, which removes the least relevant ones instead.

    Args:
        model: the classifier.
        inputs: ``[B, C, H, W]`` on the model's device.
        maps: ``[B, H, W]`` maps (or an Explanation), resized to the inputs.
        target: what is scored (see :mod:`camscope.metrics`); default the predicted class.
        fractions: fractions of pixels removed (each in [0, 1)).
        imputation: ``"linear"`` (ROAD's noisy linear), ``"mean"``, ``"zero"`` or
            ``callable(inputs, keep)``, as in :func:`~camscope.metrics.road`.
        noise: the imputation noise, as in :func:`~camscope.metrics.road`.
        score: the score of the class, as in :func:`~camscope.metrics.road`.
        tie_break: the tie-breaking noise of the ranking, as in :func:`~camscope.metrics.road`.
        seed: the seed, as in :func:`~camscope.metrics.road`.
        atol: the tolerance of the imputation's solver, as in :func:`~camscope.metrics.road`.
        batch_size: perturbed images per forward pass, or ``"auto"``
            (:mod:`camscope.metrics.batching`).

    Returns:
        :class:`MetricResult` with ``change`` (headline) and ``score`` (the clean score), and
        the curve ``change`` ``[B, P]`` over ``fractions``.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> x = torch.randn(2, 3, 32, 32)
        >>> r = camscope.metrics.most_relevant_first(model, x, torch.rand(2, 32, 32), fractions=(0.2, 0.8))
        >>> r["change"].shape, r.curves["change"].shape
        (torch.Size([2]), torch.Size([2, 2]))
    """
    protocol = RemovalProtocol(imputation, noise, score, tie_break, seed, batch_size, atol)
    return _perturbation_confidence("morf", model, inputs, maps, target, fractions, protocol)


@register_metric("least_relevant_first", kind="model", aliases=("lerf", "remove_least_relevant_first"))
def least_relevant_first(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any = None,
    *,
    fractions: Sequence[float] = _DEFAULT_FRACTIONS,
    imputation: Imputation = "linear",
    noise: float = 0.01,
    score: str | Callable[[Tensor, Any], Tensor] = "probability",
    tie_break: float = 1e-4,
    seed: int = 0,
    batch_size: BatchSize = "auto",
    atol: float = 1e-4,
) -> MetricResult:
    r"""Remove the least relevant pixels first: the score's change, averaged over removal fractions.

    The mirror of :func:`most_relevant_first`: the ``floor(p * H * W)`` pixels ranked
    *lowest* are removed, and

    .. math::
        \mathrm{change} = \frac{1}{|P|} \sum_{p \in P} \bigl(s(\tilde x_p) - s(x)\bigr)

    is recorded (higher is better: removing what the map calls irrelevant should keep the
    score). Peer: grad-cam 1.5.7's ``ROADLeastRelevantFirstAverage`` (its percentile ``q``
    is the share kept, the fraction ``1 - q / 100`` here). Arguments and result as in
    :func:`most_relevant_first`.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> r = camscope.metrics.least_relevant_first(model, torch.randn(1, 3, 32, 32), torch.rand(1, 32, 32),
        ...                                           fractions=(0.5,), imputation="mean")
        >>> r.params["imputation"], r.curves["change"].shape
        ('mean', torch.Size([1, 1]))
    """
    protocol = RemovalProtocol(imputation, noise, score, tie_break, seed, batch_size, atol)
    return _perturbation_confidence("lerf", model, inputs, maps, target, fractions, protocol)
