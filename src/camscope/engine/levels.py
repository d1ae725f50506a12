"""Multi-scale layers: a layer whose output is a dict of feature levels (a feature pyramid).

A detector's backbone with a feature pyramid (torchvision's ``BackboneWithFPN``)
returns ``{"0": [B, K, h0, w0], "1": [B, K, h1, w1], ..., "pool": ...}``. The
``levels=`` option of :class:`camscope.Explainer` says how such a layer is explained:

* ``"each"``: one map per level (layers named ``backbone[0]``, ``backbone[pool]``, ...),
  fused like several layers (``fuse=``); each level's map is exact for its level.
* ``"smallest-grid"`` (default) or ``"largest-grid"``: every level resized (bilinear,
  ``align_corners=False``) to the smallest or largest level's grid and concatenated
  along the channels, one map over all levels. The gradients are brought to the grid
  the same way, so a gradient method's weights are those of the resized gradients:
  what pytorch-grad-cam's ``reshape_transform`` does to activations and gradients alike.
* a callable ``f(levels: dict[str, Tensor]) -> Tensor [B, K, h, w]``, applied to the
  activations and to the gradients: pytorch-grad-cam's ``fasterrcnn_reshape_transform``
  (levels resized to ``pool``'s grid, and their absolute values) can be passed as it is.

Example:
    >>> import torch
    >>> levels = {"0": torch.ones(1, 2, 8, 8), "pool": torch.zeros(1, 2, 4, 4)}
    >>> levels_to_grid(levels).shape, levels_to_grid(levels, "largest").shape
    (torch.Size([1, 4, 4, 4]), torch.Size([1, 4, 8, 8]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from camscope.errors import CamscopeError

__all__ = ["LEVEL_MODES", "LevelSpec", "check_levels", "combine_levels", "levels_to_grid"]

#: The named ways of explaining a layer of several feature levels.
LEVEL_MODES = ("each", "smallest-grid", "largest-grid")

LevelSpec = str | Callable[[dict[str, Tensor]], Tensor]


def check_levels(levels: Any) -> LevelSpec:
    """``levels`` if it is one of :data:`LEVEL_MODES` or a callable; else a :class:`CamscopeError`."""
    if callable(levels) or (isinstance(levels, str) and levels in LEVEL_MODES):
        return levels
    raise CamscopeError(
        f"levels must be one of {', '.join(LEVEL_MODES)} or a function of the dict of levels, got {levels!r}"
    )


def levels_to_grid(levels: Mapping[str, Tensor], size: str = "smallest") -> Tensor:
    """Feature levels resized to one grid (bilinear, ``align_corners=False``) and concatenated on channels.

    Args:
        levels: ``{name: [B, K_l, h_l, w_l]}`` (or 3-D grids ``[B, K_l, d, h, w]``, trilinear).
        size: ``"smallest"`` or ``"largest"``: whose grid the levels take (by number of positions).

    Returns:
        ``[B, sum_l K_l, h, w]`` in the dict's order.
    """
    tensors = list(levels.values())
    if not tensors or any(not isinstance(t, Tensor) or t.ndim not in (4, 5) for t in tensors):
        shapes = [list(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in tensors]
        raise CamscopeError(f"feature levels must be grids [B, K, h, w], got {shapes}")
    if size not in ("smallest", "largest"):
        raise CamscopeError(f"size must be 'smallest' or 'largest', got {size!r}")
    pick = min if size == "smallest" else max
    grid = pick((tuple(t.shape[2:]) for t in tensors), key=lambda shape: torch.Size(shape).numel())
    mode = "bilinear" if len(grid) == 2 else "trilinear"
    resized = [
        t if tuple(t.shape[2:]) == grid else F.interpolate(t, size=grid, mode=mode, align_corners=False)
        for t in tensors
    ]
    return torch.cat(resized, dim=1)


def combine_levels(levels: dict[str, Tensor], spec: LevelSpec, layer: str) -> Tensor:
    """The levels of one layer as one ``[B, K, *grid]`` tensor under ``spec`` (not ``"each"``)."""
    if callable(spec):
        combined = spec(dict(levels))
        if not isinstance(combined, Tensor) or combined.ndim not in (4, 5):
            shape = list(combined.shape) if isinstance(combined, Tensor) else type(combined).__name__
            raise CamscopeError(
                f"levels= function returned {shape} for layer {layer!r}: it must return one grid [B, K, h, w]"
            )
        return combined
    return levels_to_grid(levels, "smallest" if spec == "smallest-grid" else "largest")
