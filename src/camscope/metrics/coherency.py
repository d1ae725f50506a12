"""Coherency (Poppi et al., "Revisiting The Evaluation of Class Activation Mapping for
Explainability: A Novel Metric and Experimental Analysis", CVPR Workshops 2021, arXiv:2104.10252).

A coherent map keeps pointing at the same evidence when the image is reduced to what the
map selects: the map of ``x * L(x)`` should correlate with the map of ``x``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.explainer import Explanation
from camscope.metrics.common import MetricResult
from camscope.metrics.reexplain import MethodSpec, explained_maps
from camscope.metrics.registry import register_metric

__all__ = ["coherency", "pearson"]


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of each pair of maps ``[B, ...]`` (in float64); 0 where a map is constant.

    Example:
        >>> import torch
        >>> pearson(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 4.0, 7.0]])).round(decimals=4)
        tensor([0.9934])
    """
    x, y = a.flatten(1).double(), b.flatten(1).double()
    x, y = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
    denominator = x.norm(dim=1) * y.norm(dim=1)
    rho = (x * y).sum(dim=1) / denominator.clamp(min=torch.finfo(torch.float64).tiny)
    return torch.where(denominator > 0, rho, torch.zeros_like(rho)).float()


@register_metric("coherency", kind="explainer")
def coherency(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation | None = None,
    target: Any = None,
    *,
    method: MethodSpec | None = None,
    layer: Any = None,
    options: dict[str, Any] | None = None,
) -> MetricResult:
    r"""Coherency (ADCC, Poppi et al. 2021): the map of the image masked by its own map should be the same map.

    .. math::
        \mathrm{coherency} = \frac{\rho\bigl(L(x),\ L(x \odot L(x))\bigr) + 1}{2}

    with ``L`` the method's map (ReLU'd and min-max scaled to [0, 1] per image), ``x ⊙ L(x)``
    the input multiplied by it, and ``ρ`` the Pearson correlation over the pixels. In [0, 1],
    higher is better. The second map explains the same classes with the same method, layer
    and options. Where a map is constant the correlation is undefined: it counts as 0 (a
    coherency of 0.5), as grad-cam 1.5.7's ``Coherency`` does (its ``1e-8`` in the
    denominator); its numbers equal these on the same maps.

    Args:
        model: the network.
        inputs: ``[B, C, H, W]``.
        maps: the maps ``L(x)`` (an Explanation or ``[B, H, W]``); computed with ``method``
            when None.
        target: what is explained (see :mod:`camscope.metrics`; None with an Explanation:
            its own target).
        method: a camscope method name or instance, or ``callable(model, inputs, target) ->
            maps``; None: the Explanation's method (Grad-CAM for a tensor of maps).
        layer: the method's layer (None: the Explanation's, or camscope's default).
        options: the method's options (None: the Explanation's).

    Returns:
        :class:`MetricResult` with ``coherency`` (headline) and ``pearson`` (``ρ``).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> x = torch.randn(2, 3, 64, 64)
        >>> r = camscope.metrics.coherency(model, x, camscope.explain(model, x, layer="layer3"))
        >>> r.params["method"], bool(((r["coherency"] >= 0) & (r["coherency"] <= 1)).all())
        ('gradcam', True)
    """
    original, again = explained_maps(model, inputs, maps, target, method, layer, options)
    layer = again.layer
    masked = inputs * original[:, None].to(inputs.dtype)
    rho = pearson(original, again(model, masked))
    return MetricResult(
        name="coherency",
        values={"coherency": (rho + 1) / 2, "pearson": rho},
        headline="coherency",
        higher_is_better={"coherency": True, "pearson": True},
        params={"method": again.method_name, "layer": layer if layer is None or isinstance(layer, str) else str(layer)},
    )
