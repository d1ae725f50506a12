"""ARCC: ROAD, coherency and complexity in one score (Domeniconi, Stramiglio, Lombardi and Salti,
"How to Evaluate and Refine your CAM", ICPR 2026, arXiv:2605.14641).

ARCC adapts ADCC (Poppi et al., "Revisiting The Evaluation of Class Activation Mapping for
Explainability: A Novel Metric and Experimental Analysis", CVPR Workshops 2021,
arXiv:2104.10252), whose score is the *harmonic* mean of coherency, ``1 - complexity`` and
``1 - average drop``: ARCC puts ROAD in the average drop's place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.explainer import Explanation
from camscope.metrics.batching import BatchSize
from camscope.metrics.coherency import coherency
from camscope.metrics.common import MetricResult
from camscope.metrics.complexity import complexity
from camscope.metrics.reexplain import MethodSpec, explained_maps
from camscope.metrics.registry import register_metric
from camscope.metrics.removal import Imputation
from camscope.metrics.road import road

__all__ = ["arcc", "harmonic_mean"]


def harmonic_mean(parts: Tensor) -> Tensor:
    r"""Harmonic mean over the last dimension, ``n / sum_k 1 / a_k``; 0 where any part is 0 (its limit).

    Parts must be non-negative.

    Example:
        >>> import torch
        >>> harmonic_mean(torch.tensor([[1.0, 0.5, 0.25], [1.0, 0.0, 1.0]]))
        tensor([0.4286, 0.0000])
    """
    positive = (parts > 0).all(dim=-1)
    safe = torch.where(parts > 0, parts, torch.ones_like(parts))
    mean = parts.shape[-1] / safe.reciprocal().sum(dim=-1)
    return torch.where(positive, mean, torch.zeros_like(mean))


@register_metric("arcc", kind="explainer")
def arcc(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation | None = None,
    target: Any = None,
    *,
    method: MethodSpec | None = None,
    layer: Any = None,
    options: dict[str, Any] | None = None,
    percentages: Sequence[float] = (0.2, 0.4, 0.6, 0.8),
    imputation: Imputation = "linear",
    noise: float = 0.01,
    score: str | Callable[[Tensor, Any], Tensor] = "probability",
    tie_break: float = 1e-4,
    seed: int = 0,
    batch_size: BatchSize = "auto",
    atol: float = 1e-4,
) -> MetricResult:
    r"""ARCC (Domeniconi et al. 2026): the harmonic mean of coherency, ``1 - complexity`` and scaled ROAD.

    .. math::
        \mathrm{ARCC} = 3 \left( \frac{1}{\mathrm{coherency}} + \frac{1}{1 - \mathrm{complexity}}
        + \frac{1}{\mathrm{ROAD'}} \right)^{-1},\qquad
        \mathrm{ROAD'} = \min\bigl(1, \max(0,\ 2\, \mathrm{ROAD})\bigr)

    with :func:`~camscope.metrics.coherency`, :func:`~camscope.metrics.complexity` and
    :func:`~camscope.metrics.road` (combined, at 20/40/60/80% removed) of the same maps, each
    in [0, 1]; ARCC is 0 where any part is 0 (the limit of the harmonic mean). Higher is
    better.

    The harmonic mean is ADCC's (ARCC adapts it, arXiv:2104.10252). grad-cam 1.5.7's ``ARCC``
    computes this harmonic mean, adding ``1e-8`` to each part, although its docstring calls
    it a geometric mean; camscope follows the harmonic mean, and the scaling of ROAD
    (``ROADCombined`` lies in [-0.5, 0.5]) and its percentiles are that implementation's.

    Args:
        model: the classifier.
        inputs: ``[B, C, H, W]``.
        maps: the maps (an Explanation or ``[B, H, W]``, scaled to [0, 1] per image);
            computed with ``method`` when None.
        target: what is explained and scored (see :mod:`camscope.metrics`).
        method: the method coherency explains again with (see :func:`~camscope.metrics.coherency`).
        layer: the layer coherency explains again at.
        options: the method's options for coherency's second explanation.
        percentages: ROAD's removal fractions (see :func:`~camscope.metrics.road`).
        imputation: ROAD's imputation.
        noise: ROAD's imputation noise.
        score: ROAD's score of the class.
        tie_break: ROAD's tie-breaking noise of the ranking.
        seed: ROAD's seed.
        batch_size: ROAD's perturbed images per forward pass, or ``"auto"``.
        atol: ROAD's tolerance of the imputation's solver.

    Returns:
        :class:`MetricResult` with ``arcc`` (headline), ``coherency``, ``complexity``,
        ``road`` (ROAD's combined score) and ``road_scaled`` (``ROAD'``).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> x = torch.randn(2, 3, 32, 32)
        >>> r = camscope.metrics.arcc(model, x, camscope.explain(model, x, layer="layer3"))
        >>> sorted(r.values), bool(((r["arcc"] >= 0) & (r["arcc"] <= 1)).all())
        (['arcc', 'coherency', 'complexity', 'road', 'road_scaled'], True)
    """
    original, again = explained_maps(model, inputs, maps, target, method, layer, options)
    coherent = coherency(
        model, inputs, original, again.target, method=again.method, layer=again.layer, options=again.options
    )
    complex_ = complexity(original, normalize=False)["complexity"].to(inputs.device)
    removal = road(
        model,
        inputs,
        original,
        again.target,
        percentages=percentages,
        imputation=imputation,
        noise=noise,
        score=score,
        tie_break=tie_break,
        seed=seed,
        batch_size=batch_size,
        atol=atol,
    )
    scaled = (2 * removal["combined"]).clamp(0, 1)
    parts = torch.stack([coherent["coherency"].to(scaled.device), 1 - complex_.to(scaled.device), scaled], dim=1)
    return MetricResult(
        name="arcc",
        values={
            "arcc": harmonic_mean(parts),
            "coherency": coherent["coherency"],
            "complexity": complex_,
            "road": removal["combined"],
            "road_scaled": scaled,
        },
        headline="arcc",
        higher_is_better={"arcc": True, "coherency": True, "complexity": False, "road": True, "road_scaled": True},
        params={"method": again.method_name, **removal.params},
    )
