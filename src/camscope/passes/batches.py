"""Batches from DataLoaders, iterables, tensors or image folders: the source that a DatasetPass iterates."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from camscope.data.folders import UNLABELLED, ImageFolderData
from camscope.errors import CamscopeError

__all__ = ["iter_batches"]


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
            inputs, labels = item[0], torch.as_tensor(item[1]).long().reshape(-1)
        else:
            raise CamscopeError(
                f"dataset items must be (inputs, labels) pairs or input tensors, got {type(item).__name__}"
            )
        if labels.numel() != inputs.shape[0]:
            raise CamscopeError(f"a batch has {inputs.shape[0]} inputs but {labels.numel()} labels")
        yield (
            inputs.to(device) if device is not None else inputs,
            labels.to(inputs.device if device is None else device),
        )
