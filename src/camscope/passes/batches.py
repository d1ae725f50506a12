"""Batches from DataLoaders, iterables, tensors, map-style datasets or image folders: the source that a DatasetPass iterates."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, SequentialSampler

from camscope.data.folders import UNLABELLED, ImageFolderData, read_image
from camscope.errors import CamscopeError
from camscope.passes.distributed import Shard

__all__ = [
    "FolderSamples",
    "ImageTransform",
    "SourceBatch",
    "is_map_dataset",
    "iter_batches",
    "label_tensor",
    "sample_count",
    "shard_batches",
]


@dataclass(frozen=True)
class SourceBatch:
    """A batch with its position in the whole dataset: ``index``-th batch, first sample at ``start``."""

    index: int
    start: int
    inputs: Tensor
    labels: Tensor


class FolderSamples(Dataset[tuple[Tensor, int]]):
    """An :class:`ImageFolderData` as a map-style dataset of ``(image [C, H, W], label)`` samples."""

    def __init__(self, folder: ImageFolderData) -> None:
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.folder.samples[index]
        return read_image(self.folder.transform, Path(path)), int(label)


class ImageTransform:
    """``path -> [C, H, W]``: an image prepared for a model at ``size`` (picklable, so loader workers can use it).

    Example:
        >>> import pickle
        >>> pickle.loads(pickle.dumps(ImageTransform(64))).size
        64
    """

    def __init__(self, size: int, config: Any = None) -> None:
        self.size, self.config = size, config

    def __call__(self, path: Path) -> Tensor:
        from camscope.models import load_image

        tensor, _ = load_image(path, size=self.size, config=self.config)
        return tensor[0]


def is_map_dataset(data: Any) -> bool:
    """Whether ``data`` is a map-style torch dataset of samples (``len`` and integer indexing, not iterable-style)."""
    return (
        isinstance(data, Dataset)
        and not isinstance(data, IterableDataset)
        and hasattr(data, "__len__")
        and hasattr(data, "__getitem__")
    )


def sample_count(data: Any) -> int | None:
    """The number of samples of a dataset that camscope batches itself (folders, tensors, map-style datasets)."""
    if isinstance(data, ImageFolderData):
        return len(data.samples)
    if isinstance(data, Tensor):
        return int(data.shape[0]) if data.ndim else 1
    if is_map_dataset(data):
        return len(data)
    return None


def _pair(item: Any) -> tuple[Tensor, Tensor]:
    """``(inputs, labels)`` of one batch from a loader or iterable (labels -1 when there are none)."""
    if isinstance(item, Tensor):
        return item, torch.full((item.shape[0],), UNLABELLED, dtype=torch.long)
    if isinstance(item, (tuple, list)) and len(item) == 1 and isinstance(item[0], Tensor):
        return _pair(item[0])
    if isinstance(item, (tuple, list)) and len(item) >= 2 and isinstance(item[0], Tensor):
        inputs, count = item[0], item[0].shape[0] if item[0].ndim else 0
        given = torch.as_tensor(item[1]).numel() if isinstance(item[1], (Tensor, int)) else None
        if given == 1 and count != 1:
            raise CamscopeError(
                f"a batch has {count} inputs but 1 label (a sequence of single samples? pass a map-style torch "
                "Dataset, e.g. a TensorDataset, and camscope batches it)"
            )
        labels = label_tensor(item[1], count)
        return inputs, labels
    raise CamscopeError(f"dataset items must be (inputs, labels) pairs or input tensors, got {type(item).__name__}")


def _indexed(
    data: Any, batch_size: int, first: int, stop: int, workers: int, pin_memory: bool = False
) -> Iterator[tuple[int, Any]]:
    """Batches ``first..stop-1`` of a dataset of known size, each with its index (only those samples are loaded)."""
    if isinstance(data, Tensor):
        for index in range(first, stop):
            yield index, data[index * batch_size : (index + 1) * batch_size]
        return
    if isinstance(data, DataLoader):
        size, total = data.batch_size or 1, len(data.dataset)  # type: ignore[arg-type]
        plan = [list(range(i * size, min((i + 1) * size, total))) for i in range(first, stop)]
        if not plan:
            return
        loader = DataLoader(
            data.dataset,
            batch_sampler=plan,
            num_workers=data.num_workers,
            collate_fn=data.collate_fn,
            pin_memory=data.pin_memory,
            timeout=data.timeout,
            worker_init_fn=data.worker_init_fn,
            multiprocessing_context=data.multiprocessing_context,
        )
    else:
        total = sample_count(data) or 0
        dataset = FolderSamples(data) if isinstance(data, ImageFolderData) else data
        plan = [list(range(i * batch_size, min((i + 1) * batch_size, total))) for i in range(first, stop)]
        if not plan:
            return
        loader = DataLoader(dataset, batch_sampler=plan, num_workers=workers, pin_memory=pin_memory)
    iterator = iter(loader)
    for index in range(first, stop):
        try:
            item = next(iterator)
        except CamscopeError as error:
            raise _from_worker(error) from None
        except (TypeError, RuntimeError) as error:
            if "collate" not in str(error) and "stack expects" not in str(error):
                raise
            raise CamscopeError(
                f"the dataset's samples cannot be batched ({str(error).splitlines()[0]}): a map-style dataset must "
                "give (image tensor [C, H, W] of one size, integer label) samples, e.g. torchvision's ImageFolder "
                "with transform=Compose([Resize((S, S)), ToTensor()])"
            ) from error
        yield index, item


def _from_worker(error: CamscopeError) -> CamscopeError:
    """A user mistake raised in a loader worker, with its own one-line message (not the worker's traceback)."""
    text = str(error)
    if "Original Traceback" not in text:
        return error
    last = [line for line in text.splitlines() if line.strip()][-1]
    name = type(error).__module__ + "." + type(error).__name__
    return type(error)(last[len(name) + 2 :] if last.startswith(name + ": ") else last)


def _sequential_loader(data: Any) -> bool:
    """Whether ``data`` is a DataLoader that batches a map-style dataset in order (so its batches can be picked)."""
    return (
        isinstance(data, DataLoader)
        and is_map_dataset(data.dataset)
        and isinstance(data.batch_sampler, BatchSampler)
        and isinstance(data.batch_sampler.sampler, SequentialSampler)
        and data.batch_size is not None
    )


def _item_size(item: Any) -> int:
    if isinstance(item, Tensor):
        return int(item.shape[0])
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], Tensor):
        return int(item[0].shape[0])
    return 0


def shard_batches(
    data: Any,
    batch_size: int,
    *,
    shard: Shard | None = None,
    skip: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[SourceBatch]:
    """This rank's batches of ``data`` (on the CPU or where the loader puts them), after its first ``skip`` ones.

    Datasets of known size (an :class:`ImageFolderData`, a tensor, a map-style
    torch dataset) are cut into ``ceil(N / batch_size)`` batches and the rank
    takes a contiguous range of them (:meth:`Shard.batch_range`), loaded through
    a DataLoader with ``workers`` worker processes. Under a process group, a
    list of batches and a DataLoader that batches a map-style dataset in order
    (no shuffling, its own batch size and workers) are split the same way, and
    only the rank's batches are loaded; any other iterable's batch ``i`` goes to
    rank ``i % world`` (every rank iterates it). ``pin_memory`` pins the batches
    that camscope's own loader makes (for non-blocking copies to a GPU).
    """
    shard = shard or Shard()
    count = sample_count(data)
    if count is not None:
        first, stop = shard.batch_range(math.ceil(count / batch_size))
        for index, item in _indexed(data, batch_size, first + skip, stop, workers, pin_memory):
            inputs, labels = _pair(item)
            yield SourceBatch(index, index * batch_size, inputs, labels)
        return
    if (shard.distributed or skip) and _sequential_loader(data):  # only the batches needed are loaded
        first, stop = shard.batch_range(len(data))
        for index, item in _indexed(data, batch_size, first + skip, stop, workers):
            inputs, labels = _pair(item)
            yield SourceBatch(index, index * data.batch_size, inputs, labels)
        return
    if (shard.distributed or skip) and isinstance(data, (list, tuple)):
        first, stop = shard.batch_range(len(data))
        start = sum(_item_size(item) for item in data[: first + skip])
        for index in range(first + skip, stop):
            inputs, labels = _pair(data[index])
            yield SourceBatch(index, start, inputs, labels)
            start += inputs.shape[0]
        return
    start, owned = 0, 0
    for index, item in enumerate(data):
        if shard.owns_iterated(index):
            owned += 1
            if owned > skip:
                inputs, labels = _pair(item)
                yield SourceBatch(index, start, inputs, labels)
        start += _item_size(item)


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
    :class:`ImageFolderData`, a map-style torch dataset of ``(image, label)``
    samples, a DataLoader or any iterable of ``(inputs, labels)`` pairs or of
    input tensors (labels are then -1), or a single tensor batch.
    """
    if isinstance(data, (str, os.PathLike)):
        data = ImageFolderData(data, size=size)
    for batch in shard_batches(data, batch_size):
        yield (
            batch.inputs.to(device) if device is not None else batch.inputs,
            batch.labels.to(batch.inputs.device if device is None else device),
        )
