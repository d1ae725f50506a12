"""Map arithmetic shared by the engine, the methods and the metrics.

A method's signed map ``M = sum_k w_k A_k`` lives at the layer's resolution. These
functions bring it to the input (:func:`upsample`), to [0, 1] (:func:`normalize_maps`),
combine the maps of several score components (:func:`aggregate_maps`), apply a common
intensity scale (:func:`scaled_maps`, the S-CAMs of "Integrated feature analysis
for deep learning interpretation and class activation maps", arXiv:2407.01142)
and build channel masks for feature-selected CAMs (:func:`feature_mask`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from camscope.errors import CamscopeError

if TYPE_CHECKING:
    from camscope.engine.explanation import Explanation

__all__ = [
    "AGGREGATIONS",
    "MAP_ORDERS",
    "aggregate_maps",
    "feature_mask",
    "final_maps",
    "normalize_maps",
    "scaled_maps",
    "upsample",
]

#: How the maps of ``R`` score components are combined (see :func:`aggregate_maps`).
AGGREGATIONS = ("mean-before-relu", "max-before-relu", "mean-after-relu")


def upsample(raw: Tensor, size: Sequence[int]) -> Tensor:
    """Resize ``[B, t]`` (linear), ``[B, h, w]`` (bilinear) or ``[B, d, h, w]`` (trilinear) maps to ``size``.

    ``align_corners=False``; maps already of that size are returned as they are.

    Example:
        >>> import torch
        >>> upsample(torch.ones(2, 7, 7), (224, 224)).shape
        torch.Size([2, 224, 224])
    """
    mode = {2: "linear", 3: "bilinear", 4: "trilinear"}.get(raw.ndim)
    if mode is None:
        raise CamscopeError(f"maps must be [B, t], [B, h, w] or [B, d, h, w], got shape {list(raw.shape)}")
    if tuple(raw.shape[1:]) == tuple(size):
        return raw
    return F.interpolate(raw.unsqueeze(1), size=tuple(size), mode=mode, align_corners=False).squeeze(1)


def normalize_maps(maps: Tensor) -> Tensor:
    """ReLU, then min-max per image to [0, 1]; a constant map becomes zeros.

    ``(relu(M) - min relu(M)) / (max relu(M) - min relu(M))`` per image.

    Example:
        >>> import torch
        >>> normalize_maps(torch.tensor([[[-1.0, 1.0, 3.0]], [[2.0, 2.0, 2.0]]])).tolist()
        [[[0.0, 0.3333333432674408, 1.0]], [[0.0, 0.0, 0.0]]]
    """
    maps = maps.clamp(min=0)
    flat = maps.flatten(1)
    low = flat.min(dim=1).values
    span = flat.max(dim=1).values - low
    shape = (-1,) + (1,) * (maps.ndim - 1)
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(
        span.reshape(shape) > 0, (maps - low.reshape(shape)) / safe.reshape(shape), torch.zeros_like(maps)
    )


#: Orders of the ReLU and the upsampling that turn a signed map into ``maps`` (see :func:`final_maps`).
MAP_ORDERS = ("relu-first", "upsample-first")


def final_maps(raw: Tensor, size: Sequence[int], order: str = "relu-first") -> Tensor:
    """The displayed maps: a signed map ``[B, h, w]`` made non-negative, upsampled and min-max scaled to [0, 1].

    ``"relu-first"`` (the default) follows the Grad-CAM paper (Selvaraju et al., "Grad-CAM: Visual
    Explanations from Deep Networks via Gradient-based Localization", arXiv:1610.02391) and the peer
    libraries: ``ReLU`` at the layer's resolution, then bilinear upsampling, then min-max per image,
    so that positive evidence is not averaged with negative evidence across a cell border.
    ``"upsample-first"`` upsamples the signed map and applies the ReLU after (camscope 0.1.0).

    Example:
        >>> import torch
        >>> raw = torch.tensor([[[-4.0, 1.0]]])
        >>> final_maps(raw, (1, 4)).tolist(), final_maps(raw, (1, 4), "upsample-first").tolist()
        ([[[0.0, 0.25, 0.75, 1.0]]], [[[0.0, 0.0, 0.0, 1.0]]])
    """
    if order == "relu-first":
        return normalize_maps(upsample(raw.clamp(min=0), size))
    if order == "upsample-first":
        return normalize_maps(upsample(raw, size))
    raise CamscopeError(f"map_order must be one of {', '.join(MAP_ORDERS)}, got {order!r}")


def aggregate_maps(raws: Tensor, mode: str) -> Tensor:
    """Combine the signed maps of ``R`` score components ``[R, B, ...]`` into ``[B, ...]``.

    ``mean-before-relu``: ``mean_r M_r``; ``max-before-relu``: ``max_r M_r``;
    ``mean-after-relu``: ``mean_r relu(M_r)``. One component is returned as it is.

    Example:
        >>> import torch
        >>> raws = torch.tensor([[[1.0, -2.0]], [[3.0, 0.0]]])
        >>> aggregate_maps(raws, "mean-before-relu").tolist(), aggregate_maps(raws, "mean-after-relu").tolist()
        ([[2.0, -1.0]], [[2.0, 0.0]])
    """
    if raws.shape[0] == 1:
        return raws[0]
    if mode == "mean-before-relu":
        return raws.mean(dim=0)
    if mode == "max-before-relu":
        return raws.max(dim=0).values
    if mode == "mean-after-relu":
        return raws.clamp(min=0).mean(dim=0)
    raise CamscopeError(f"unknown aggregation {mode!r}: use {', '.join(AGGREGATIONS)}")


def feature_mask(features: Tensor, activations: Tensor) -> Tensor:
    """A channel mask ``[K]`` or ``[B, K]`` (bool or float) as ``[B, K, 1, ...]``, broadcastable to A.

    Feature-selected CAMs (FS-CAMs) multiply the weighted features ``w_k A_k`` by it
    before the sum over channels.

    Example:
        >>> import torch
        >>> feature_mask(torch.tensor([True, False, True]), torch.zeros(2, 3, 4, 4)).shape
        torch.Size([2, 3, 1, 1])
    """
    batch, channels = activations.shape[:2]
    mask = torch.as_tensor(features, device=activations.device).to(activations.dtype)
    if mask.ndim == 1:
        mask = mask.expand(batch, -1)
    if mask.shape != (batch, channels):
        raise CamscopeError(
            f"features must be a channel mask of shape [{channels}] or [{batch}, {channels}], got {list(mask.shape)}"
        )
    return mask.reshape(batch, channels, *([1] * (activations.ndim - 2)))


def scaled_maps(scale: Any, explanation: Explanation, size: Sequence[int]) -> Tensor:
    """S-CAM maps: ``scale(upsample(raw))``, signed.

    ``scale`` is an object with ``as_scale()`` (an ``Analysis``) or a callable on
    maps (``Analysis.scale(...)``, e.g. ``tanh(a * M + b)``). A scale that records
    the method or layer it was fitted for must match the explanation's.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> explanation = camscope.explain(resnet18(num_classes=10), torch.randn(1, 3, 64, 64))
        >>> scaled_maps(torch.tanh, explanation, (64, 64)).abs().max() < 1
        tensor(True)
    """
    transform = scale.as_scale() if hasattr(scale, "as_scale") else scale
    if not callable(transform):
        raise CamscopeError(
            f"scale= must be an Analysis (camscope.analyze) or one of its scales, got {type(scale).__name__}"
        )
    if explanation.layers:
        raise CamscopeError("scale= needs a single layer: the scale was fitted on one layer's raw values")
    for attribute in ("method", "layer"):
        fitted, used = getattr(transform, attribute, None), getattr(explanation, attribute)
        if fitted is not None and fitted != used:
            raise CamscopeError(
                f"the scale was fitted for {attribute} {fitted!r} but this explanation uses {used!r}: "
                f"analyze with the same {attribute}, or explain with {attribute}={fitted!r}"
            )
    result: Tensor = transform(upsample(explanation.raw, size))
    return result.detach()
