"""Segmentation targets: a class's logits summed over a region, and comparisons in a region.

A segmentation model gives class logits per position, ``y_c(p)``, as ``[B, C, H, W]``
(or ``[B, C, D, H, W]`` for volumes, ``[B, C, T]`` for signals), returned as a tensor,
as ``out`` of a dict (torchvision's FCN and DeepLabV3) or as ``.logits`` (Hugging Face,
often at a fraction of the input's resolution).

* :class:`SegmentationTarget` explains ``sum_p m(p) y_c(p)``, the class's logits over
  a mask ``m`` (pytorch-grad-cam's ``SemanticSegmentationTarget``); without a mask, the
  region the model predicts as ``c`` (``argmax_j y_j(p) = c``) on the explained inputs.
* :class:`OnRegion` gives the region's class scores ``s_j = sum_p m(p) y_j(p)``
  (``[B, C]``) to any class target: ``OnRegion(mask, Finer(explained=road,
  references=[sidewalk]))`` explains ``s_road - gamma s_sidewalk``, why the region is
  road and not sidewalk.

A mask is bool, 0/1 or weights; ``[*S]`` (every image) or ``[B, *S]``, at the logits'
resolution ``S`` or at an integer multiple of it (the input's, for logits at 1/4
resolution): it is then averaged over each logit cell (the fraction of the cell inside).

Example:
    >>> import torch
    >>> logits = torch.tensor([[[[1.0, 2.0]], [[3.0, -1.0]]]])  # [1, 2 classes, 1, 2]
    >>> SegmentationTarget(1, mask=torch.tensor([[True, False]]))(logits)
    tensor([3.])
    >>> SegmentationTarget(0).resolve(logits)(logits)  # the region predicted as class 0: the second pixel
    tensor([2.])
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.errors import CamscopeError
from camscope.targets.base import ClassSpec, ClassTarget, Target, _class_tensor
from camscope.targets.outputs import TargetWarning

__all__ = ["OnRegion", "SegmentationTarget", "region_mask"]


def _logits(outputs: Tensor, what: str) -> Tensor:
    if not isinstance(outputs, Tensor) or outputs.ndim < 3:
        shape = list(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise CamscopeError(
            f"{what} needs logits per position [B, C, H, W] (or [B, C, D, H, W]), got {shape}: "
            "for a classifier use ClassTarget"
        )
    return outputs


def _mask_tensor(mask: Any) -> Tensor:
    try:
        tensor = mask.detach() if isinstance(mask, Tensor) else torch.as_tensor(np.asarray(mask))
    except (TypeError, ValueError) as error:
        raise CamscopeError(f"mask must be an array or tensor of bools or weights: {error}") from error
    if tensor.is_complex() or tensor.ndim == 0:
        raise CamscopeError(f"mask must be an array of bools or weights per position, got {mask!r}")
    tensor = tensor.to(torch.float64) if tensor.dtype != torch.float64 else tensor
    if not bool(torch.isfinite(tensor).all()):
        raise CamscopeError("mask contains NaN or infinite values")
    return tensor


def region_mask(mask: Tensor, outputs: Tensor) -> Tensor:
    """A mask ``[*S']`` or ``[B, *S']`` as weights ``[B, *S]`` on the logits' grid ``S`` (same dtype and device).

    ``S'`` is ``S`` or an integer multiple of it per axis; a finer mask is averaged over
    each logit cell.

    Example:
        >>> import torch
        >>> region_mask(torch.tensor([[1.0, 1.0, 1.0, 0.0]]), torch.zeros(2, 3, 1, 2))  # input 1 x 4, logits 1 x 2
        tensor([[[1.0000, 0.5000]],
        <BLANKLINE>
                [[1.0000, 0.5000]]])
    """
    batch, spatial = outputs.shape[0], tuple(outputs.shape[2:])
    if mask.ndim == len(spatial):
        mask = mask.unsqueeze(0)
    if mask.ndim != len(spatial) + 1 or mask.shape[0] not in (1, batch):
        raise CamscopeError(
            f"mask must be [{', '.join(map(str, spatial))}] (every image) or one per image "
            f"[{batch}, {', '.join(map(str, spatial))}], got {list(mask.shape)}"
        )
    size = tuple(mask.shape[1:])
    if size != spatial:
        if any(m % s for m, s in zip(size, spatial)):
            raise CamscopeError(
                f"mask of size {list(size)} does not fit the logits' grid {list(spatial)}: give the mask at the "
                "logits' resolution or at an integer multiple of it (the input's)"
            )
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}.get(len(spatial))
        if pool is None:
            raise CamscopeError(f"masks of {len(spatial)} dimensions must match the logits' grid {list(spatial)}")
        kernel = tuple(m // s for m, s in zip(size, spatial))
        mask = pool(mask.unsqueeze(1), kernel).squeeze(1)
    return mask.to(device=outputs.device, dtype=outputs.dtype).expand(batch, *spatial)


class SegmentationTarget(Target):
    """A class's logits summed over a region: ``sum_p m(p) y_c(p)``.

    Equal to pytorch-grad-cam's ``SemanticSegmentationTarget(category, mask)``.

    Args:
        category: the class ``c``, one for every image or one per image.
        mask: the region (see :mod:`camscope.targets.segmentation`); None: the positions
            the model predicts as ``c`` on the explained inputs (``argmax_j y_j(p) = c``),
            fixed from then on. An image whose region is empty scores 0 (an empty map) and
            a :class:`TargetWarning` names it.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models.segmentation import fcn_resnet50
        >>> model = fcn_resnet50(weights=None, weights_backbone=None, num_classes=3, aux_loss=False).eval()
        >>> e = camscope.explain(model, torch.randn(1, 3, 64, 64), layer="backbone.layer4",
        ...                      target=SegmentationTarget(1, mask=torch.ones(64, 64)))
        >>> e.maps.shape, e.classes.tolist()
        (torch.Size([1, 64, 64]), [1])
    """

    def __init__(self, category: ClassSpec, mask: Any = None) -> None:
        if category is None:
            raise CamscopeError("SegmentationTarget needs the class to explain: SegmentationTarget(category, mask)")
        self.category = category
        self.mask = None if mask is None else _mask_tensor(mask)
        self._classes: Tensor | None = None
        self._weights: Tensor | None = None

    def resolve(self, outputs: Tensor) -> SegmentationTarget:
        logits = _logits(outputs, "SegmentationTarget").detach()
        resolved = SegmentationTarget(self.category)
        resolved.mask = self.mask
        classes = _class_tensor(self.category, logits.shape[0], logits.shape[1], "segmentation class")
        resolved._classes = classes.to(logits.device)
        if self.mask is None:
            shape = (-1,) + (1,) * (logits.ndim - 2)
            predicted = (logits.argmax(dim=1) == resolved._classes.reshape(shape)).to(logits.dtype)
            empty = (predicted.flatten(1).sum(dim=1) == 0).nonzero().flatten().tolist()
            if empty:
                warnings.warn(
                    f"no position is predicted as the explained class in image(s) {empty[:8]}: their region is "
                    "empty, they score 0 and their maps are empty (pass mask= to choose the region)",
                    TargetWarning,
                    stacklevel=2,
                )
            resolved._weights = predicted
        else:
            resolved._weights = region_mask(self.mask, logits)
        return resolved

    def __call__(self, outputs: Tensor) -> Tensor:
        if self._classes is None or self._weights is None:
            return self.resolve(outputs)(outputs)
        logits = _logits(outputs, "SegmentationTarget")
        rows = torch.arange(logits.shape[0], device=logits.device)
        selected = logits[rows, self._classes.to(logits.device)]  # [B, *S]
        return (selected * self._weights.to(selected)).flatten(1).sum(dim=1)

    def classes(self) -> Tensor | None:
        return self._classes

    def region(self) -> Tensor | None:
        """The weights of the region per image on the logits' grid, ``[B, *S]`` (after :meth:`resolve`)."""
        return self._weights

    def __repr__(self) -> str:
        shown = self._classes.tolist() if self._classes is not None else self.category
        return f"SegmentationTarget({shown}, mask={'predicted' if self.mask is None else list(self.mask.shape)})"


class OnRegion(Target):
    """The class scores of a region, ``s_j = sum_p m(p) y_j(p)`` (``[B, C]``), explained by any class target.

    Args:
        mask: the region (see :mod:`camscope.targets.segmentation`).
        target: the class target on the region's scores (default: the region's top class).

    Example:
        >>> import torch
        >>> from camscope.targets.base import ClassDifference
        >>> logits = torch.tensor([[[[1.0, 2.0]], [[3.0, -1.0]]]])
        >>> OnRegion(torch.ones(1, 2), ClassDifference(0, 1, gamma=1.0))(logits)  # (1 + 2) - (3 - 1)
        tensor([1.])
    """

    def __init__(self, mask: Any, target: Target | None = None) -> None:
        if mask is None:
            raise CamscopeError("OnRegion needs the region: pass mask= (bools or weights per position)")
        self.mask = _mask_tensor(mask)
        self.inner = target if target is not None else ClassTarget()
        self.aggregate = self.inner.aggregate

    def region_scores(self, outputs: Tensor) -> Tensor:
        """``[B, C]``: every class's logits summed over the region."""
        logits = _logits(outputs, "OnRegion")
        weights = region_mask(self.mask, logits)
        return (logits * weights.unsqueeze(1)).flatten(2).sum(dim=2)

    def prepare(self, model: nn.Module) -> OnRegion:
        return self._with(self.inner.prepare(model))

    def _with(self, inner: Target) -> OnRegion:
        copy = OnRegion.__new__(OnRegion)
        copy.mask, copy.inner, copy.aggregate = self.mask, inner, inner.aggregate
        return copy

    def resolve(self, outputs: Tensor) -> OnRegion:
        return self._with(self.inner.resolve(self.region_scores(outputs.detach())))

    def __call__(self, outputs: Tensor) -> Tensor:
        return self.inner(self.region_scores(outputs))

    def baseline_scores(self, outputs: Tensor) -> Tensor:
        return self.inner.baseline_scores(self.region_scores(outputs))

    def classes(self) -> Tensor | None:
        return self.inner.classes()

    def __repr__(self) -> str:
        return f"OnRegion(mask={list(self.mask.shape)}, {self.inner!r})"
