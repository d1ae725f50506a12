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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from camscope.data.folders import ImageFolderData
from camscope.errors import CamscopeError
from camscope.passes.batches import sample_count, shard_batches
from camscope.passes.checkpoint import (
    Checkpoint,
    data_fingerprint,
    fingerprint_mismatches,
    other_world_sizes,
    rank_path,
)
from camscope.passes.distributed import current_shard, gather_json, merge_across_ranks, resolve_device
from camscope.passes.precision import autocast_forward, check_precision
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
    samples = sample_count(data)
    if samples is not None:
        return math.ceil(samples / batch_size)
    if isinstance(data, (str, os.PathLike)):
        return None
    try:
        return len(data)
    except TypeError:
        return None


def dataset_class_names(data: Any) -> list[str] | None:
    """Class names carried by ``data`` (or its DataLoader's dataset): an :class:`ImageFolderData`'s folders or ``classes``.

    Example:
        >>> from types import SimpleNamespace
        >>> dataset_class_names(SimpleNamespace(classes=["cat", "dog"])), dataset_class_names([1, 2])
        (['cat', 'dog'], None)
    """
    dataset = getattr(data, "dataset", data)  # a DataLoader's dataset
    names = getattr(data, "class_names", None) or getattr(dataset, "class_names", None)
    if names:
        return list(names)
    classes = getattr(dataset, "classes", None)
    if classes and all(isinstance(c, str) for c in classes):
        return list(classes)
    return None


def _check_count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum >= 1 else "an integer >= 0"
        raise CamscopeError(f"{name} must be {kind}, got {value!r}")
    return value


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CamscopeError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


class DatasetPass:
    """Iterate a dataset once, in batches on the model's device, with one progress bar.

    The pass can be split over the ranks of a ``torch.distributed`` process
    group (:mod:`camscope.passes.distributed`) and checkpointed and resumed
    (:mod:`camscope.passes.checkpoint`); a pass that uses either gives its
    accumulator to :meth:`tracking` and ends with :meth:`finish`, which saves the
    last checkpoint and merges the ranks' accumulators.

    Args:
        model: the model the pass feeds (its device is the default device).
        data: an image folder (``root/CLASS/*`` or flat, unlabelled), an
            :class:`~camscope.data.folders.ImageFolderData`, a map-style torch
            dataset of ``(image, label)`` samples (e.g. torchvision's
            ``ImageFolder`` or a ``TensorDataset``), a DataLoader or any iterable
            of ``(inputs, labels)`` pairs or of input tensors, or one tensor batch.
        batch_size: batch size for folders, datasets and tensors (a DataLoader keeps its own).
        size: image size for folders.
        device: where batches go (default: the model's device; ``"cuda"`` under
            torchrun is ``cuda:LOCAL_RANK``).
        progress: the progress bar: True, False, or None for "when stderr is a
            terminal"; only rank 0 shows one, counting every rank's batches.
        description: the progress bar's text.
        distributed: None: split the pass when a process group is initialised;
            True: split it (starting a group from the torchrun environment when
            needed); False: never.
        workers: worker processes that load folders and map-style datasets (0: in this process).
        checkpoint: a file for the accumulator's state (one per rank when distributed).
        checkpoint_every: save the checkpoint every this many batches (default: only at the end).
        resume: continue from ``checkpoint`` when the file exists.
        restore: ``restore(state, device)`` turns a state dict into the accumulator on ``device``
            (needed for ``resume`` and distributed passes).
        identity: what else identifies the pass in a checkpoint (model fingerprint, layer, settings),
            or a function that returns it (called only when a checkpoint is read or written).
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: the model's forward
            passes run under ``torch.autocast`` at that precision while the
            accumulators keep theirs (:mod:`camscope.passes.precision`).

    Raises:
        CamscopeError: for a model that is not a module, a bad batch size, a
            missing folder, bad pass options, a checkpoint of another pass, or
            (after iteration) a dataset that gave no batch when ``require_batches`` is set.

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
        distributed: bool | None = None,
        workers: int = 0,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int | None = None,
        resume: bool = False,
        restore: Callable[[dict[str, Any], torch.device], Any] | None = None,
        identity: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        precision: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise CamscopeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.batch_size = _check_batch_size(batch_size)
        self.size = size
        self.data = ImageFolderData(data, size=size) if isinstance(data, (str, os.PathLike)) else data
        resolved = resolve_device(device, distributed=bool(distributed))
        self.device = resolved if resolved is not None else model_device(model)
        self.precision = check_precision(precision, self.device)
        self.shard = current_shard(distributed, self.device)
        self.progress = progress if self.shard.rank == 0 else False
        self.description = description
        self.workers = _check_count(workers, "workers", minimum=0)
        self.checkpoint_every = None if checkpoint_every is None else _check_count(checkpoint_every, "checkpoint_every")
        self.checkpoint_given = None if checkpoint is None else Path(checkpoint)
        self.checkpoint = None if checkpoint is None else rank_path(checkpoint, self.shard.rank, self.shard.world)
        if self.checkpoint is not None and self.checkpoint.is_dir():
            raise CamscopeError(f"checkpoint must be a file, but {self.checkpoint} is a folder: give a file name in it")
        if (resume or checkpoint_every is not None) and checkpoint is None:
            raise CamscopeError("resume and checkpoint_every need a checkpoint file: give checkpoint=PATH")
        self.restore = restore
        self.identity = identity
        self.batches_seen = 0
        self.samples_seen = 0
        self._skip = 0
        if self.shard.distributed:
            self._check_ranks_agree()
        self.resumed: Any = self._resume() if resume else None

    def _identity(self) -> dict[str, Any]:
        identity = (self.identity() if callable(self.identity) else self.identity) or {}
        # fp32 adds nothing, so checkpoints written before precisions existed still resume.
        return identity if self.precision == "fp32" else {**identity, "precision": self.precision}

    def _check_ranks_agree(self) -> None:
        """Raise on every rank when the ranks run different models or settings (e.g. other random weights)."""
        identities = gather_json({**self._identity(), "batch_size": self.batch_size, "size": self.size})
        for rank, identity in enumerate(identities[1:], start=1):
            differences = fingerprint_mismatches(identities[0], identity)
            if differences:
                raise CamscopeError(
                    f"rank {rank} runs another {self.description} pass than rank 0 ("
                    + "; ".join(
                        d.replace("the checkpoint", "rank 0").replace("this pass", f"rank {rank}") for d in differences
                    )
                    + "): every rank needs the same model weights and options (seed random weights the same)"
                )

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "pass": self.description,
            **self._identity(),
            "data": data_fingerprint(self.data),
            "batch_size": self.batch_size,
            "size": self.size,
            "rank": self.shard.rank,
            "world": self.shard.world,
        }

    def _resume(self) -> Any:
        """The accumulator saved in the checkpoint (None when there is no file yet); later batches only."""
        assert self.checkpoint is not None
        if not self.checkpoint.is_file():
            self._refuse_other_world_size()
            return None
        if self.restore is None:
            raise CamscopeError(f"the {self.description} pass cannot resume from a checkpoint")
        saved = Checkpoint.load(self.checkpoint, self.device)
        differences = fingerprint_mismatches(saved.fingerprint, self._fingerprint())
        if differences:
            raise CamscopeError(
                f"the checkpoint {self.checkpoint} belongs to another pass ("
                + "; ".join(differences)
                + "): give another checkpoint file, or drop --resume / resume=True to start again"
            )
        self._skip = self.batches_seen = saved.batches
        self.samples_seen = saved.samples
        return None if saved.state is None else saved.restored(self.restore, self.device, self.checkpoint)

    def _refuse_other_world_size(self) -> None:
        """Raise when only checkpoints of another number of processes exist (resuming would start again silently)."""
        given = self.checkpoint_given
        assert given is not None
        others = other_world_sizes(given, self.shard.world)
        if others:
            counts = " or ".join(str(world) for world in others)
            raise CamscopeError(
                f"the checkpoint {given} was written by {counts} process(es), this pass runs {self.shard.world}: "
                f"resume with the same number (torchrun --nproc_per_node={others[0]}), "
                "or give another checkpoint file to start again"
            )

    def save_checkpoint(self, accumulator: Any) -> None:
        """Write ``accumulator``'s state and the position reached to the checkpoint file (when there is one)."""
        if self.checkpoint is None or accumulator is None:
            return
        Checkpoint(accumulator.state_dict(), self.batches_seen, self.samples_seen, self._fingerprint()).save(
            self.checkpoint
        )

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
        return self.tracking(None)

    def tracking(self, accumulator: Callable[[], Any] | None) -> Iterator[Batch]:
        """The batches, saving ``accumulator()``'s state to the checkpoint every ``checkpoint_every`` batches.

        ``accumulator`` is called after the loop's body has handled a batch (a
        closure over the loop's variable: ``pass_.tracking(lambda: bank)``).
        """
        total = batch_count(self.data, self.batch_size)
        world = self.shard.world
        with (
            autocast_forward(self.model, self.precision, self.device),
            ProgressBar(total, self.description, enabled=self.progress) as bar,
        ):
            if self._skip:
                bar.advance(min(self._skip * world, total or self._skip * world))
            pinned = self.device.type == "cuda"  # page-locked host batches copy to the GPU asynchronously
            for source in shard_batches(
                self.data, self.batch_size, shard=self.shard, skip=self._skip, workers=self.workers, pin_memory=pinned
            ):
                inputs = source.inputs.to(self.device, non_blocking=pinned)
                labels = source.labels.to(self.device, non_blocking=pinned)
                yield Batch(inputs, labels, source.index, source.start)
                self.batches_seen += 1
                self.samples_seen += inputs.shape[0]
                every = self.checkpoint_every
                if accumulator is not None and every is not None and self.batches_seen % every == 0:
                    self.save_checkpoint(accumulator())
                bar.advance(world if total is None else max(0, min(world, total - bar.done)))

    def finish(self, accumulator: Any, what: str) -> Any:
        """The pass's result: ``accumulator`` saved to the checkpoint, then merged over the ranks.

        Every rank returns the merge in rank order of every rank's accumulator
        (:func:`~camscope.passes.distributed.merge_across_ranks`); ``what`` names
        the result in the error for a dataset that gave no batch on any rank.
        """
        self.save_checkpoint(accumulator)
        if self.shard.distributed:
            if self.restore is None:
                raise CamscopeError(f"the {self.description} pass cannot be distributed")
            accumulator = merge_across_ranks(accumulator, self.restore, self.shard, self.device)
        if accumulator is None:
            raise CamscopeError(
                f"the dataset gave no batches: {what} needs at least one sample (check the folder or loader)"
            )
        return accumulator

    def require_batches(self, what: str) -> None:
        """Raise when the pass gave no batch: ``what`` names the result that needs data."""
        if self.batches_seen == 0:
            raise CamscopeError(
                f"the dataset gave no batches: {what} needs at least one sample (check the folder or loader)"
            )
