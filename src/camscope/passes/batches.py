"""Batches from DataLoaders, iterables, tensors or image folders: the source that a DatasetPass iterates."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from camscope.data.folders import UNLABELLED, ImageFolderData
from camscope.errors import CamscopeError

__all__ = ["iter_batches", "label_tensor"]


def label_tensor(labels: Any, count: int) -> Tensor:
    """``labels`` as ``[count]`` int64 class indices (``-1``: unlabelled); else a :class:`CamscopeError`.

    Accepts a tensor, an array or a sequence of integers, one per sample, and floats that
    are whole numbers (``torch.zeros(3)``: exactly representable, nothing is truncated);
    fractional or non-finite floats, bools, text and labels below -1 are refused.

    Example:
        >>> label_tensor([0, 2, -1], 3).tolist(), label_tensor(torch.tensor([1.0, 3.0]), 2).tolist()
        ([0, 2, -1], [1, 3])
    """
    try:
        tensor = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise CamscopeError(
            f"labels must be integer class indices (-1: unlabelled), got {type(labels).__name__} "
            f"{str(labels)[:60]!r}: map class names to indices first"
        ) from None
    whole = tensor.is_floating_point() and bool((torch.isfinite(tensor) & (tensor == tensor.round())).all())
    if (tensor.is_floating_point() and not whole) or tensor.is_complex() or tensor.dtype == torch.bool:
        raise CamscopeError(
            f"labels must be integer class indices (-1: unlabelled), got dtype {tensor.dtype} with values that are "
            "not whole numbers: pass integer labels"
        )
    if tensor.numel() != count or (tensor.ndim > 1 and tensor.numel() != tensor.shape[0]):
        raise CamscopeError(
            f"a batch has {count} samples but labels of shape {list(tensor.shape)}: give one per sample"
        )
    tensor = tensor.reshape(-1).long()
    if tensor.numel() and int(tensor.min()) < UNLABELLED:
        raise CamscopeError(
            f"label {int(tensor.min())} is not a class index: labels are >= 0, or -1 for an unlabelled sample"
        )
    return tensor


def iter_batches(
    data: Any, batch_size: int = 32, device: torch.device | str | None = None, size: int = 224
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(inputs, labels)`` batches on ``device``.

    ``data`` may be a folder path (ImageFolder layout or flat), an
    :class:`ImageFolderData`, a DataLoader or any iterable of ``(inputs, labels)``
    pairs or of input tensors (labels are then -1), or a single tensor batch.
    """
    if isinstance(data, (str, os.PathLike)):
        data = ImageFolderData(data, size=size)
    if isinstance(data, ImageFolderData):
        source: Iterable[Any] = data.batches(batch_size)
    elif isinstance(data, Tensor):
        source = [data[i : i + batch_size] for i in range(0, len(data), batch_size)]
    else:
        source = data
    for item in source:
        if isinstance(item, Tensor):
            inputs, labels = item, torch.full((item.shape[0],), UNLABELLED, dtype=torch.long)
        elif isinstance(item, (tuple, list)) and len(item) >= 2 and isinstance(item[0], Tensor):
            inputs, labels = item[0], label_tensor(item[1], item[0].shape[0] if item[0].ndim else 0)
        else:
            raise CamscopeError(
                f"dataset items must be (inputs, labels) pairs or input tensors, got {type(item).__name__}"
            )
        yield (
            inputs.to(device) if device is not None else inputs,
            labels.to(inputs.device if device is None else device),
        )
