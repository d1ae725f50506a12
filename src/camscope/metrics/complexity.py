"""Complexity of maps: sparseness (Gini index), entropy, and ADCC's mean absolute value. No model is needed."""

from __future__ import annotations

import torch
from torch import Tensor

from camscope.engine.explainer import Explanation
from camscope.metrics.common import MetricResult, prepare_maps
from camscope.metrics.registry import register_metric

__all__ = ["complexity", "entropy", "sparseness"]


@register_metric("sparseness", kind="maps", aliases=("gini",))
def sparseness(maps: Tensor | Explanation, *, eps: float = 0.0) -> MetricResult:
    r"""Sparseness: the Gini index of the absolute map values (Chalasani et al., ICML 2020).

    With ``a_(1) <= ... <= a_(n)`` the sorted ``|L| + eps``:

    .. math::
        G = \frac{\sum_{i=1}^n (2i - n - 1)\, a_{(i)}}{n \sum_i a_{(i)}}
          = \frac{\sum_{i,j} |a_i - a_j|}{2 n \sum_i a_i}

    0 for a constant map, ``1 - 1/n`` for a single nonzero pixel (higher: sparser).
    quantus 0.6.0's ``Sparseness`` adds ``eps = 1e-7`` before sorting (pass ``eps=1e-7``
    to reproduce it). A map that is zero everywhere gives NaN.

    Example:
        >>> import torch
        >>> from camscope.metrics import sparseness
        >>> sparseness(torch.tensor([[[0.0, 0.0], [0.0, 1.0]]]))["gini"]
        tensor([0.7500])
    """
    values = prepare_maps(maps).flatten(1).double().abs() + eps
    count = values.shape[1]
    ordered = values.sort(dim=1).values
    weights = 2 * torch.arange(1, count + 1, dtype=torch.float64, device=values.device) - count - 1
    total = ordered.sum(dim=1)
    gini = (ordered * weights).sum(dim=1) / (count * total.clamp(min=torch.finfo(torch.float64).tiny))
    gini = torch.where(total > 0, gini, torch.full_like(gini, float("nan")))
    return MetricResult(
        name="sparseness",
        values={"gini": gini.float()},
        headline="gini",
        higher_is_better={"gini": True},
        params={"eps": eps},
    )


@register_metric("entropy", kind="maps")
def entropy(maps: Tensor | Explanation) -> MetricResult:
    r"""Complexity as entropy (Bhatt et al., IJCAI 2020): the Shannon entropy of the normalised absolute map.

    .. math::
        H = -\sum_i p_i \ln p_i,\qquad p_i = \frac{|L_i|}{\sum_j |L_j|}

    in nats (as ``scipy.stats.entropy``); ``ln(n)`` for a constant map, 0 for a single
    pixel (lower: simpler). A map that is zero everywhere gives NaN.

    Example:
        >>> import torch
        >>> from camscope.metrics import entropy
        >>> entropy(torch.ones(1, 2, 2))["entropy"]
        tensor([1.3863])
    """
    values = prepare_maps(maps).flatten(1).double().abs()
    total = values.sum(dim=1, keepdim=True)
    p = values / total.clamp(min=torch.finfo(torch.float64).tiny)
    h = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(dim=1)
    h = torch.where(total[:, 0] > 0, h, torch.full_like(h, float("nan")))
    return MetricResult(
        name="entropy", values={"entropy": h.float()}, headline="entropy", higher_is_better={"entropy": False}
    )


@register_metric("complexity", kind="maps")
def complexity(maps: Tensor | Explanation, *, normalize: bool = True) -> MetricResult:
    r"""Complexity as ADCC defines it: the mean absolute value of the map, its L1 norm per pixel.

    .. math::
        \mathrm{complexity} = \frac{\lVert L \rVert_1}{H W} = \frac{1}{H W} \sum_{i} |L_i|

    Poppi et al., "Revisiting The Evaluation of Class Activation Mapping for Explainability:
    A Novel Metric and Experimental Analysis", CVPR Workshops 2021, arXiv:2104.10252, with the
    maps scaled to [0, 1] (so the value lies in [0, 1]; lower: a map that selects less). The
    paper writes the L1 norm; dividing by the pixel count, as grad-cam 1.5.7's ``Complexity``
    does, keeps it in [0, 1] for ADCC's and ARCC's ``1 - complexity``.

    Args:
        maps: ``[B, H, W]`` maps or an Explanation.
        normalize: ReLU and min-max scale each map to [0, 1] first (Explanation maps already
            are); False takes the maps as given.

    Example:
        >>> import torch
        >>> from camscope.metrics import complexity
        >>> complexity(torch.tensor([[[0.0, 1.0], [0.5, 0.5]]]))["complexity"]
        tensor([0.5000])
    """
    values = prepare_maps(maps, normalize=normalize).flatten(1).double().abs()
    return MetricResult(
        name="complexity",
        values={"complexity": values.mean(dim=1).float()},
        headline="complexity",
        higher_is_better={"complexity": False},
        params={"normalize": normalize},
    )
