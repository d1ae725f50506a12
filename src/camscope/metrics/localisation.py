"""Localisation against boxes or masks: IoU at thresholds, AUPRC, the pointing game and its energy variant.

These metrics need no model: they compare maps ``[B, H, W]`` with ground-truth regions
given as ``boxes=`` or ``masks=``.

* ``masks``: ``[B, H, W]`` bool (or 0/1) at the maps' resolution (maps of another size
  are resized bilinearly to the masks).
* ``boxes``: ``[B, 4]`` (one box per image) or a list with one ``[K_b, 4]`` tensor (or
  nested list) per image, as ``(x1, y1, x2, y2)`` in pixels of the maps. A pixel
  ``(row i, column j)`` is inside when its centre ``(j + 0.5, i + 0.5)`` is, i.e.
  ``x1 <= j < x2`` and ``y1 <= i < y2`` for integer corners (``mask[y1:y2, x1:x2]``);
  several boxes of an image are joined.

Maps are ReLU'd and min-max scaled per image to [0, 1] first (an Explanation's maps
already are). A sample whose region is empty gets NaN, which dataset means skip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from camscope.engine.explainer import Explanation
from camscope.errors import CamscopeError
from camscope.metrics.common import MetricResult, prepare_maps
from camscope.metrics.registry import register_metric

__all__ = ["auprc", "boxes_to_masks", "energy_pointing_game", "iou", "pointing_game"]

BoxSpec = Tensor | Sequence[Any]
_DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def boxes_to_masks(boxes: BoxSpec, size: Sequence[int], device: torch.device | str | None = None) -> Tensor:
    """Rasterise boxes ``(x1, y1, x2, y2)`` to ``[B, H, W]`` bool masks (see the module docstring).

    Example:
        >>> from camscope.metrics import boxes_to_masks
        >>> boxes_to_masks([[1, 0, 3, 2]], (3, 4)).int()
        tensor([[[0, 1, 1, 0],
                 [0, 1, 1, 0],
                 [0, 0, 0, 0]]], dtype=torch.int32)
    """
    height, width = int(size[0]), int(size[1])
    if isinstance(boxes, Tensor) and boxes.ndim == 2:
        per_image = [boxes[b : b + 1] for b in range(boxes.shape[0])]
    elif isinstance(boxes, Tensor) and boxes.ndim == 3:
        per_image = list(boxes)
    else:
        per_image = [torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4) for b in boxes]
    centres_x = torch.arange(width, dtype=torch.float64, device=device) + 0.5
    centres_y = torch.arange(height, dtype=torch.float64, device=device) + 0.5
    masks = torch.zeros(len(per_image), height, width, dtype=torch.bool, device=device)
    for b, image_boxes in enumerate(per_image):
        image_boxes = torch.as_tensor(image_boxes, dtype=torch.float64, device=device).reshape(-1, 4)
        if image_boxes.numel() == 0:
            continue
        x1, y1, x2, y2 = image_boxes.unbind(dim=1)
        if bool(((x2 < x1) | (y2 < y1)).any()):
            raise CamscopeError(
                f"boxes must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1, got {image_boxes.tolist()}"
            )
        inside_x = (centres_x[None] >= x1[:, None]) & (centres_x[None] <= x2[:, None])
        inside_y = (centres_y[None] >= y1[:, None]) & (centres_y[None] <= y2[:, None])
        masks[b] = (inside_y[:, :, None] & inside_x[:, None, :]).any(dim=0)
    return masks


def _regions(maps: Tensor | Explanation, boxes: BoxSpec | None, masks: Tensor | None) -> tuple[Tensor, Tensor]:
    """Normalised maps and bool regions of the same size ``[B, H, W]``."""
    if (boxes is None) == (masks is None):
        raise CamscopeError("give the ground truth as exactly one of boxes= or masks=")
    raw = maps.maps if isinstance(maps, Explanation) else maps
    if boxes is not None:
        size = prepare_maps(raw).shape[1:]
        regions = boxes_to_masks(boxes, size)
    else:
        regions = torch.as_tensor(masks)
        if regions.ndim == 4 and regions.shape[1] == 1:
            regions = regions[:, 0]
        if regions.ndim != 3:
            raise CamscopeError(f"masks must have shape [B, H, W], got {list(regions.shape)}")
        size = regions.shape[1:]
    prepared = prepare_maps(raw, size, normalize=True)
    if regions.shape[0] != prepared.shape[0]:
        raise CamscopeError(f"{regions.shape[0]} ground-truth regions for {prepared.shape[0]} maps")
    return prepared, regions.to(prepared.device).bool()


@register_metric("iou", kind="regions")
def iou(
    maps: Tensor | Explanation,
    *,
    boxes: BoxSpec | None = None,
    masks: Tensor | None = None,
    thresholds: Sequence[float] = _DEFAULT_THRESHOLDS,
    threshold: float = 0.5,
) -> MetricResult:
    r"""Intersection over union of the thresholded map with the ground truth.

    .. math::
        \mathrm{IoU}_t = \frac{|\{L \ge t\} \cap G|}{|\{L \ge t\} \cup G|}

    for each ``t`` in ``thresholds`` (on maps scaled to [0, 1]); the headline is the
    IoU at ``threshold`` (0.5). DiffCAM reports one IoU per method and does not state
    its threshold: the curve over thresholds lets one report the IoU at a fixed
    threshold or at the threshold best on average (``result.mean_curves()["iou"]``).

    Returns:
        :class:`MetricResult` with ``iou`` ``[B]`` and the curve ``iou`` ``[B, T]`` over
        ``thresholds`` (NaN where both the region and the thresholded map are empty).

    Example:
        >>> import torch
        >>> from camscope.metrics import iou
        >>> maps = torch.tensor([[[1.0, 0.8], [0.2, 0.0]]])
        >>> iou(maps, masks=torch.tensor([[[True, False], [False, False]]]), thresholds=(0.5, 0.9))["iou"]
        tensor([0.5000])
    """
    values = sorted({float(t) for t in thresholds} | {float(threshold)})
    prepared, regions = _regions(maps, boxes, masks)
    levels = torch.tensor(values, dtype=prepared.dtype, device=prepared.device)
    above = prepared.flatten(1)[:, None, :] >= levels[None, :, None]  # [B, T, N]
    truth = regions.flatten(1)[:, None, :]
    intersection = (above & truth).sum(dim=2).double()
    union = (above | truth).sum(dim=2).double()
    curve = torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, float("nan"))).float()
    keep = [values.index(float(t)) for t in thresholds]
    return MetricResult(
        name="iou",
        values={"iou": curve[:, values.index(float(threshold))]},
        curves={"iou": curve[:, keep]},
        steps={"iou": torch.tensor([float(t) for t in thresholds])},
        headline="iou",
        higher_is_better={"iou": True},
        params={"thresholds": [float(t) for t in thresholds], "threshold": float(threshold)},
    )


@register_metric("auprc", kind="regions")
def auprc(maps: Tensor | Explanation, *, boxes: BoxSpec | None = None, masks: Tensor | None = None) -> MetricResult:
    r"""Area under the pixel precision-recall curve (average precision), per image.

    Pixels are scored by the map and labelled by the ground truth; as in
    ``sklearn.metrics.average_precision_score`` (no interpolation, tied scores form one
    threshold):

    .. math::
        \mathrm{AP} = \sum_n (R_n - R_{n-1})\, P_n

    over the distinct map values in decreasing order. Used by DiffCAM against boxes
    and masks. An empty region gives NaN (sklearn warns and returns 0 or -0).

    Example:
        >>> import torch
        >>> from camscope.metrics import auprc
        >>> maps = torch.tensor([[[0.9, 0.1], [0.8, 0.4]]])
        >>> auprc(maps, masks=torch.tensor([[[True, False], [False, True]]]))["auprc"]
        tensor([0.8333])
    """
    prepared, regions = _regions(maps, boxes, masks)
    scores = prepared.flatten(1).double()
    labels = regions.flatten(1)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    sorted_scores = scores.gather(1, order)
    sorted_labels = labels.gather(1, order).double()
    count = sorted_scores.shape[1]
    true_positives = sorted_labels.cumsum(dim=1)
    seen = torch.arange(1, count + 1, dtype=torch.float64, device=scores.device)
    precision = true_positives / seen
    # The last index of each group of tied scores is where that threshold is evaluated.
    last = torch.ones_like(sorted_labels, dtype=torch.bool)
    last[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
    position = torch.where(last, torch.arange(count, device=scores.device).expand_as(last), count)
    group_end = position.flip(1).cummin(dim=1).values.flip(1)
    precision_at_threshold = precision.gather(1, group_end)
    positives = sorted_labels.sum(dim=1)
    ap = (sorted_labels * precision_at_threshold).sum(dim=1) / positives.clamp(min=1)
    ap = torch.where(positives > 0, ap, torch.full_like(ap, float("nan")))
    return MetricResult(name="auprc", values={"auprc": ap.float()}, headline="auprc", higher_is_better={"auprc": True})


@register_metric("pointing_game", kind="regions", aliases=("pointing",))
def pointing_game(
    maps: Tensor | Explanation,
    *,
    boxes: BoxSpec | None = None,
    masks: Tensor | None = None,
    tolerance: float = 15.0,
) -> MetricResult:
    """The pointing game (Zhang et al., excitation backprop, ECCV 2016): is the map's peak on the object?

    A hit is counted when the maximum of the map lies inside the ground truth or
    within ``tolerance`` pixels of it (Euclidean distance ``< tolerance``, as in
    TorchRay's implementation of the protocol; 15 px in the paper, at the resolution
    of the maps). Ties for the maximum take the first pixel in raster order. The
    dataset accuracy is the mean of the hits; Zhang et al. average it per class.

    Peers: quantus 0.6.0's ``PointingGame`` has no tolerance, counts a hit when *any*
    of several tied maxima is inside, and counts an image with an *empty* mask as a
    hit (it stores NaN into a bool array, which becomes True); here such an image
    gets NaN and is skipped.

    Returns:
        :class:`MetricResult` with ``hit`` (1.0 or 0.0; NaN for an empty region).

    Example:
        >>> import torch
        >>> from camscope.metrics import pointing_game
        >>> maps = torch.zeros(2, 40, 40); maps[:, 5, 5] = 1
        >>> pointing_game(maps, boxes=[[15, 0, 40, 40], [30, 0, 40, 40]])["hit"]
        tensor([1., 0.])
    """
    if tolerance < 0:
        raise CamscopeError(f"tolerance must be >= 0 pixels, got {tolerance}")
    prepared, regions = _regions(maps, boxes, masks)
    _, height, width = prepared.shape
    peak = prepared.flatten(1).argmax(dim=1)
    row, column = (peak // width).double(), (peak % width).double()
    ys = torch.arange(height, dtype=torch.float64, device=prepared.device)
    xs = torch.arange(width, dtype=torch.float64, device=prepared.device)
    distance2 = (ys[None, :, None] - row[:, None, None]) ** 2 + (xs[None, None, :] - column[:, None, None]) ** 2
    near = (distance2 < float(tolerance) ** 2) | (distance2 == 0)
    hit = (near & regions).flatten(1).any(dim=1).float()
    empty = ~regions.flatten(1).any(dim=1)
    hit = torch.where(empty, torch.full_like(hit, float("nan")), hit)
    return MetricResult(
        name="pointing_game",
        values={"hit": hit},
        headline="hit",
        higher_is_better={"hit": True},
        params={"tolerance": tolerance},
    )


@register_metric("energy_pointing_game", kind="regions", aliases=("energy_pointing", "ebpg"))
def energy_pointing_game(
    maps: Tensor | Explanation, *, boxes: BoxSpec | None = None, masks: Tensor | None = None
) -> MetricResult:
    r"""Energy-based pointing game (Wang et al., Score-CAM, CVPRW 2020): the share of the map inside the box.

    .. math::
        \mathrm{proportion} = \frac{\sum_{(i,j) \in G} L_{ij}}{\sum_{(i,j)} L_{ij}}

    on maps scaled to [0, 1]. Finer-CAM's "Loc." column uses it; DiffCAM argues it
    favours maps concentrated on few pixels and reports IoU and AUPRC instead. A map
    that is zero everywhere, or an empty region, gives NaN.

    Example:
        >>> import torch
        >>> from camscope.metrics import energy_pointing_game
        >>> maps = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])
        >>> energy_pointing_game(maps, boxes=[[0, 0, 2, 1]])["proportion"]
        tensor([0.5000])
    """
    prepared, regions = _regions(maps, boxes, masks)
    total = prepared.flatten(1).double().sum(dim=1)
    inside = (prepared * regions).flatten(1).double().sum(dim=1)
    valid = (total > 0) & regions.flatten(1).any(dim=1)
    proportion = torch.where(
        valid, inside / total.clamp(min=torch.finfo(torch.float64).tiny), torch.full_like(total, float("nan"))
    )
    return MetricResult(
        name="energy_pointing_game",
        values={"proportion": proportion.float()},
        headline="proportion",
        higher_is_better={"proportion": True},
    )
