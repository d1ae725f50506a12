"""Counterfactual part metrics (DiffCAM Table 2, after SCOUT/GALORE by Wang and Vasconcelos).

A counterfactual explanation of "why class ``a`` and not class ``b``" should highlight the
object parts whose attributes differ between ``a`` and ``b`` (on CUB-200-2011: the 15
annotated part locations and the class attribute vectors). The map is thresholded; the
parts falling in the highlighted region are the explanation's parts ``S``; the parts
that differ between the classes are the ground truth ``G``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from camscope.engine.explainer import Explanation
from camscope.errors import CamscopeError
from camscope.metrics.common import MetricResult, prepare_maps
from camscope.metrics.registry import register_metric

__all__ = ["part_scores"]

_DEFAULT_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def _selected(maps: Tensor, parts: Tensor, levels: Tensor, coverage: float) -> tuple[Tensor, Tensor]:
    """Which parts fall in the region ``map >= t``: ``[B, T, P]``, and which parts are visible ``[B, P]``."""
    batch, height, width = maps.shape
    parts = parts.to(maps.device)
    if parts.ndim == 3 and parts.shape[-1] == 2:  # keypoints (x, y)
        coords = parts.double()
        visible = torch.isfinite(coords).all(dim=-1)
        x = torch.nan_to_num(coords[..., 0], nan=-1.0).floor().long()
        y = torch.nan_to_num(coords[..., 1], nan=-1.0).floor().long()
        visible &= (x >= 0) & (x < width) & (y >= 0) & (y < height)
        flat = y.clamp(0, height - 1) * width + x.clamp(0, width - 1)  # [B, P]
        value = maps.flatten(1).gather(1, flat)  # [B, P]
        chosen = value[:, None, :] >= levels[None, :, None]
    elif parts.ndim == 4:  # part masks [B, P, H, W]
        if tuple(parts.shape[2:]) != (height, width):
            raise CamscopeError(f"part masks must be [B, P, {height}, {width}] like the maps, got {list(parts.shape)}")
        masks = parts.bool().flatten(2)  # [B, P, N]
        area = masks.sum(dim=2)
        visible = area > 0
        above = maps.flatten(1)[:, None, :] >= levels[None, :, None]  # [B, T, N]
        covered = torch.einsum("btn,bpn->btp", above.double(), masks.double())
        chosen = covered >= coverage * area[:, None, :].double()
    else:
        raise CamscopeError(
            f"parts must be keypoints [B, P, 2] (x, y; NaN when not visible) or masks [B, P, H, W], got {list(parts.shape)}"
        )
    if parts.shape[0] != batch:
        raise CamscopeError(f"{parts.shape[0]} part annotations for {batch} maps")
    return chosen & visible[:, None, :], visible


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.full_like(numerator, float("nan")))


@register_metric("part_scores", kind="parts", aliases=("parts",))
def part_scores(
    maps: Tensor | Explanation,
    *,
    parts: Tensor,
    differing: Tensor,
    thresholds: Sequence[float] = _DEFAULT_THRESHOLDS,
    threshold: float = 0.5,
    counter_maps: Tensor | Explanation | None = None,
    counter_parts: Tensor | None = None,
    coverage: float = 0.5,
) -> MetricResult:
    r"""Part precision, recall, F1 and part IoU of counterfactual explanations, over thresholds.

    With ``S_t`` the visible parts selected by the map thresholded at ``t`` (maps scaled
    to [0, 1]) and ``G`` the visible parts that differ between the two classes:

    .. math::
        P = \frac{|S_t \cap G|}{|S_t|},\quad R = \frac{|S_t \cap G|}{|G|},\quad
        F_1 = \frac{2 |S_t \cap G|}{|S_t| + |G|},\quad
        \mathrm{PIoU} = \frac{|S_t \cap S'_t|}{|S_t \cup S'_t|}

    where ``S'_t`` are the parts selected on the counterfactual image (an image of class
    ``b`` explained "why ``b`` and not ``a``"): SCOUT's semantic consistency, the parts
    highlighted in both images should be the same. PIoU counts parts visible in both.

    Open details, as chosen here: a keypoint part is selected when the map at its
    pixel is ``>= t``; a part given as a mask is selected when at least ``coverage``
    (half) of its pixels are. Undefined ratios (nothing selected, no differing part)
    are NaN and skipped by dataset means. DiffCAM's F1 curves (Fig. 9) may be computed
    from mean P and R instead: ``result.mean_curves()`` gives both.

    Args:
        maps: ``[B, H, W]`` maps (or an Explanation) of the query images.
        parts: keypoints ``[B, P, 2]`` as ``(x, y)`` pixels of the maps (NaN for parts
            not visible), or part masks ``[B, P, H, W]``.
        differing: ``[B, P]`` (or ``[P]``) bool, the parts that differ between the classes.
        thresholds: the thresholds of the curves.
        threshold: the threshold of the headline values.
        counter_maps: maps of the counterfactual images (for PIoU).
        counter_parts: their part annotations.
        coverage: share of a part mask that must be highlighted.

    Returns:
        :class:`MetricResult` with ``precision``, ``recall``, ``f1`` (headline) and
        ``part_iou`` (NaN without counterfactual images) at ``threshold``, and the same
        four as curves ``[B, T]`` over ``thresholds``.

    Example:
        >>> import torch
        >>> from camscope.metrics import part_scores
        >>> maps = torch.zeros(1, 10, 10); maps[0, :, :5] = 1   # the left half is highlighted
        >>> parts = torch.tensor([[[1.0, 1.0], [2.0, 8.0], [8.0, 8.0]]])  # two parts left, one right
        >>> r = part_scores(maps, parts=parts, differing=torch.tensor([[True, False, True]]))
        >>> r["precision"].item(), r["recall"].item(), r["f1"].item()
        (0.5, 0.5, 0.5)
    """
    if not 0 < coverage <= 1:
        raise CamscopeError(f"coverage must lie in (0, 1], got {coverage}")
    values = sorted({float(t) for t in thresholds} | {float(threshold)})
    prepared = prepare_maps(maps, parts.shape[2:] if torch.as_tensor(parts).ndim == 4 else None, normalize=True)
    levels = torch.tensor(values, dtype=prepared.dtype, device=prepared.device)
    selected, visible = _selected(prepared, torch.as_tensor(parts), levels, coverage)
    truth = torch.as_tensor(differing, device=prepared.device).bool()
    if truth.ndim == 1:
        truth = truth.expand(prepared.shape[0], -1)
    if truth.shape != visible.shape:
        raise CamscopeError(
            f"differing must have shape {list(visible.shape)} (one flag per part), got {list(truth.shape)}"
        )
    truth = (truth & visible)[:, None, :]
    hits = (selected & truth).sum(dim=2).double()
    n_selected = selected.sum(dim=2).double()
    n_truth = truth.sum(dim=2).double().expand_as(hits)
    curves = {
        "precision": _ratio(hits, n_selected),
        "recall": _ratio(hits, n_truth),
        "f1": _ratio(2 * hits, n_selected + n_truth),
    }
    if (counter_maps is None) != (counter_parts is None):
        raise CamscopeError("part IoU needs both counter_maps= and counter_parts=")
    if counter_maps is not None and counter_parts is not None:
        counter_parts = torch.as_tensor(counter_parts)
        counter = prepare_maps(
            counter_maps, counter_parts.shape[2:] if counter_parts.ndim == 4 else None, normalize=True
        )
        counter_selected, counter_visible = _selected(counter, counter_parts, levels.to(counter.device), coverage)
        if counter_visible.shape != visible.shape:
            raise CamscopeError("counter_parts must annotate the same parts as parts")
        both = (visible & counter_visible.to(visible.device))[:, None, :]
        mine, theirs = selected & both, counter_selected.to(selected.device) & both
        curves["part_iou"] = _ratio((mine & theirs).sum(dim=2).double(), (mine | theirs).sum(dim=2).double())
    else:
        curves["part_iou"] = torch.full_like(hits, float("nan"))
    keep = [values.index(float(t)) for t in thresholds]
    at = values.index(float(threshold))
    steps = torch.tensor([float(t) for t in thresholds])
    return MetricResult(
        name="part_scores",
        values={key: curve[:, at].float() for key, curve in curves.items()},
        curves={key: curve[:, keep].float() for key, curve in curves.items()},
        steps=dict.fromkeys(curves, steps),
        headline="f1",
        higher_is_better=dict.fromkeys(curves, True),
        params={"thresholds": [float(t) for t in thresholds], "threshold": float(threshold), "coverage": coverage},
    )
