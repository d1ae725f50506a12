"""The one dataset-pass engine: batches on the model's device, one progress bar, mergeable accumulators.

Every dataset-level computation in camscope (reference banks for DiffCAM, the
integrated feature analysis, the evaluation runner, consistency and feature
masking) is a loop of the same shape::

    for batch in DatasetPass(model, data, batch_size=32, progress=None, description="..."):
        accumulator.update(...)          # per-batch statistics, in torch on the device

and every accumulator follows :class:`Accumulator`: ``update``, an exact
``merge`` of two accumulators built on disjoint data, and ``state_dict`` /
``load_state_dict``. Distributing a pass or resuming it from a checkpoint is
therefore a property of this module, not of each analysis.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from camscope.data.folders import ImageFolderData
from camscope.errors import CamscopeError
from camscope.passes.batches import iter_batches
from camscope.progress import ProgressBar

__all__ = ["Accumulator", "Batch", "DatasetPass", "batch_count", "dataset_class_names", "model_device"]


@runtime_checkable
class Accumulator(Protocol):
    """Statistics that a dataset pass feeds batch by batch and that merge exactly.

    ``a.merge(b)`` on accumulators built from two disjoint parts of a dataset
    equals the accumulator built from both parts in one pass (up to float64
    summation order), which is what lets a pass be split across processes.
    """

    def merge(self, other: Any) -> Any:
        """Add the statistics of ``other`` (built on disjoint data) to this one."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values that :meth:`load_state_dict` restores exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> Any:
        """Restore what :meth:`state_dict` returned."""
        ...


@dataclass(frozen=True)
class Batch:
    """One batch of a dataset pass.

    Attributes:
        inputs: ``[B, ...]`` on the pass's device.
        labels: ``[B]`` long on the same device, ``-1`` where a sample has no label.
        index: the batch's position in the pass (0, 1, ...).
        start: the dataset position of the batch's first sample.
    """

    inputs: Tensor
    labels: Tensor
    index: int
    start: int


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without either).

    Example:
        >>> import torch
        >>> model_device(torch.nn.Linear(2, 2))
        device(type='cpu')
    """
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def batch_count(data: Any, batch_size: int) -> int | None:
    """The number of batches ``data`` gives at ``batch_size``, or None when it cannot be known.

    Example:
        >>> import torch
        >>> batch_count(torch.zeros(5, 3), 2), batch_count([1, 2, 3], 2), batch_count(iter([]), 2)
        (3, 3, None)
    """
    if isinstance(data, ImageFolderData):
        return math.ceil(len(data) / batch_size)
    if isinstance(data, Tensor):
        return math.ceil(data.shape[0] / batch_size)
    if isinstance(data, (str, os.PathLike)):
        return None
    try:
        return len(data)
    except TypeError:
        return None


def dataset_class_names(data: Any) -> list[str] | None:
    """Class names carried by ``data``: an :class:`ImageFolderData`'s folders or a torchvision dataset's ``classes``.

    Example:
        >>> from types import SimpleNamespace
        >>> dataset_class_names(SimpleNamespace(classes=["cat", "dog"])), dataset_class_names([1, 2])
        (['cat', 'dog'], None)
    """
    names = getattr(data, "class_names", None)
    if names:
        return list(names)
    dataset = getattr(data, "dataset", data)
    classes = getattr(dataset, "classes", None)
    if classes and all(isinstance(c, str) for c in classes):
        return list(classes)
    return None


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CamscopeError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


class DatasetPass:
    """Iterate a dataset once, in batches on the model's device, with one progress bar.

    Args:
        model: the model the pass feeds (its device is the default device).
        data: an image folder (``root/CLASS/*`` or flat, unlabelled), an
            :class:`~camscope.data.folders.ImageFolderData`, a DataLoader or any
            iterable of ``(inputs, labels)`` pairs or of input tensors, or one
            tensor batch.
        batch_size: batch size for folders and tensors (a DataLoader keeps its own).
        size: image size for folders.
        device: where batches go (default: the model's device).
        progress: the progress bar: True, False, or None for "when stderr is a terminal".
        description: the progress bar's text.

    Raises:
        CamscopeError: for a model that is not a module, a bad batch size, a
            missing folder, or (after iteration) a dataset that gave no batch
            when ``require_batches`` is set.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> batches = DatasetPass(model, torch.zeros(5, 3), batch_size=2, progress=False)
        >>> [batch.inputs.shape[0] for batch in batches]
        [2, 2, 1]
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        *,
        batch_size: int = 32,
        size: int = 224,
        device: torch.device | str | None = None,
        progress: bool | None = None,
        description: str = "dataset pass",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise CamscopeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.batch_size = _check_batch_size(batch_size)
        self.size = size
        self.data = ImageFolderData(data, size=size) if isinstance(data, (str, os.PathLike)) else data
        self.device = torch.device(device) if device is not None else model_device(model)
        self.progress = progress
        self.description = description
        self.batches_seen = 0
        self.samples_seen = 0

    @property
    def class_names(self) -> list[str] | None:
        """Class names carried by the data (see :func:`dataset_class_names`)."""
        return dataset_class_names(self.data)

    def __len__(self) -> int:
        total = batch_count(self.data, self.batch_size)
        if total is None:
            raise TypeError("this dataset does not know its length")
        return total

    def __iter__(self) -> Iterator[Batch]:
        total = batch_count(self.data, self.batch_size)
        with ProgressBar(total, self.description, enabled=self.progress) as bar:
            for inputs, labels in iter_batches(self.data, self.batch_size, device=self.device, size=self.size):
                batch = Batch(inputs, labels, self.batches_seen, self.samples_seen)
                self.batches_seen += 1
                self.samples_seen += inputs.shape[0]
                yield batch
                bar.advance()

    def require_batches(self, what: str) -> None:
        """Raise when the pass gave no batch: ``what`` names the result that needs data."""
        if self.batches_seen == 0:
            raise CamscopeError(
                f"the dataset gave no batches: {what} needs at least one sample (check the folder or loader)"
            )
