"""Per-object localisation: box pointing and mask IoU, for maps that explain one object each.

A detector's box map (:class:`camscope.BoxTarget`) or a segmenter's region map
(:class:`camscope.SegmentationTarget`) explains one object; where the object is, is known
on scenes with ground truth (:mod:`camscope.data.scenes`). Each row of ``maps`` is one
object's map, and ``boxes`` / ``masks`` give that object's box and visible pixels.

* :func:`box_pointing`: whether the map's peak lies in the object's box (``hit``) and on
  the object itself (``on_object``, with ``masks``): the pointing game of Zhang et al.
  ("Top-down Neural Attention by Excitation Backprop", arXiv:1608.00507) with no tolerance,
  since a scene holds other objects a few pixels away.
* :func:`mask_iou`: the IoU of the map thresholded at ``threshold`` (maps scaled to [0, 1])
  with the object's mask, and the curve over ``thresholds``.

Both take ``maps`` as the other localisation metrics do and return a
:class:`~camscope.metrics.common.MetricResult` per object; ``camscope.evaluation.objects``
runs them over scenes.

Example:
    >>> import torch
    >>> maps = torch.zeros(2, 8, 8); maps[0, 2, 2] = 1; maps[1, 6, 6] = 1
    >>> box_pointing(maps, boxes=torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4]]))["hit"]
    tensor([1., 0.])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from camscope.engine.explainer import Explanation
from camscope.errors import CamscopeError
from camscope.metrics.common import MetricResult
from camscope.metrics.localisation import iou, pointing_game

__all__ = ["box_pointing", "mask_iou"]

_DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def box_pointing(
    maps: Tensor | Explanation, *, boxes: Tensor | Sequence[Sequence[float]], masks: Tensor | None = None
) -> MetricResult:
    """Box pointing: is each object's map at its highest inside the object's box (and on the object)?

    ``hit = 1`` when the map's maximum (the first in raster order on ties) lies in the box
    ``[x0, y0, x1, y1]`` (pixel centres, as :func:`camscope.metrics.boxes_to_masks`), else 0;
    ``on_object`` likewise for the object's mask, when ``masks`` ``[B, H, W]`` are given (a
    box holds background and may hold parts of other objects). An empty box or mask gives NaN.

    Args:
        maps: ``[B, H, W]`` maps or an Explanation, one object per row.
        boxes: ``[B, 4]`` one box per map, in pixels of the maps.
        masks: ``[B, H, W]`` the objects' visible pixels (optional).

    Example:
        >>> import torch
        >>> maps = torch.zeros(1, 4, 4); maps[0, 1, 1] = 1
        >>> masks = torch.zeros(1, 4, 4, dtype=torch.bool); masks[0, 2:, 2:] = True
        >>> result = box_pointing(maps, boxes=[[0, 0, 4, 4]], masks=masks)
        >>> result["hit"], result["on_object"]
        (tensor([1.]), tensor([0.]))
    """
    box_tensor = torch.as_tensor(boxes, dtype=torch.float64)
    if box_tensor.ndim != 2 or box_tensor.shape[1] != 4:
        raise CamscopeError(f"box_pointing takes one box per map, [B, 4], got {list(box_tensor.shape)}")
    values = {"hit": pointing_game(maps, boxes=box_tensor, tolerance=0.0)["hit"]}
    if masks is not None:
        values["on_object"] = pointing_game(maps, masks=masks, tolerance=0.0)["hit"]
    return MetricResult(
        name="box_pointing",
        values=values,
        headline="hit",
        higher_is_better=dict.fromkeys(values, True),
        params={"tolerance": 0.0},
    )


def mask_iou(
    maps: Tensor | Explanation,
    *,
    masks: Tensor,
    threshold: float = 0.5,
    thresholds: Sequence[float] = _DEFAULT_THRESHOLDS,
) -> MetricResult:
    r"""The IoU of each object's thresholded map with the object's mask.

    .. math::
        \mathrm{IoU}_t = \frac{|\{L \ge t\} \cap M|}{|\{L \ge t\} \cup M|}

    on maps scaled to [0, 1] per object (:func:`camscope.metrics.iou` with ``masks``); the
    headline is ``t = threshold``, the curve runs over ``thresholds``.

    Example:
        >>> import torch
        >>> maps = torch.tensor([[[1.0, 0.6], [0.2, 0.0]]])
        >>> mask_iou(maps, masks=torch.tensor([[[True, True], [True, False]]]))["iou"]
        tensor([0.6667])
    """
    result = iou(maps, masks=masks, thresholds=thresholds, threshold=threshold)
    result.name = "mask_iou"
    return result
