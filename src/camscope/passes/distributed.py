"""Dataset passes over several processes: which batches a rank takes, and one merged result on every rank.

Under a ``torch.distributed`` process group (or with ``distributed=True``,
which starts one from the ``torchrun`` environment variables ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``: gloo for CPU passes, nccl
for CUDA ones) every rank of a pass takes a disjoint part of the data:

* datasets of known size (tensors, image folders, map-style datasets, lists
  of batches, DataLoaders that batch a map-style dataset in order) are cut
  into the batches of a single-process pass, and rank ``r`` of ``w`` takes the
  contiguous batches ``[r n / w, (r + 1) n / w)`` of the ``n``; only those
  samples are loaded;
* other iterables (generators, shuffling or iterable-style loaders) give batch
  ``i`` to rank ``i % w`` (every rank iterates the iterable and skips the other
  ranks' batches); evaluation and consistency tables and an analysis's
  per-sample profiles still come out in dataset order.

Every batch keeps the composition and dataset position it has in a single
process, so no sample is seen twice or dropped, however uneven the split. At
the end :func:`merge_across_ranks` exchanges each rank's accumulator state
(:func:`~camscope.passes.state.flatten_state`: the tensors as raw bytes with
``all_gather``, the rest as JSON bytes; nothing is pickled) and merges them in
rank order with the accumulator's own ``merge``, on every rank, so every rank
returns what one process would have (sums to float64 summation order).
"""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from camscope.errors import CamscopeError
from camscope.passes.state import flatten_state, unflatten_state

__all__ = [
    "Shard",
    "current_shard",
    "gather_json",
    "is_main_process",
    "merge_across_ranks",
    "resolve_device",
    "torchrun_world_size",
]

A = TypeVar("A")

_ENVIRONMENT = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Shard:
    """Rank ``rank`` of ``world`` processes (``Shard(0, 1)``: a single-process pass).

    Example:
        >>> shard = Shard(1, 2)
        >>> shard.batch_range(5), [shard.owns_iterated(i) for i in range(4)]
        ((2, 5), [False, True, False, True])
    """

    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        """Whether the pass is split over several processes."""
        return self.world > 1

    def batch_range(self, batches: int) -> tuple[int, int]:
        """The contiguous batches ``[first, stop)`` of a dataset of ``batches`` batches that this rank takes."""
        return self.rank * batches // self.world, (self.rank + 1) * batches // self.world

    def owns_iterated(self, index: int) -> bool:
        """Whether batch ``index`` of an iterable goes to this rank (``index % world == rank``)."""
        return index % self.world == self.rank


def torchrun_world_size() -> int:
    """The ``WORLD_SIZE`` of a ``torchrun`` launch (1 outside one)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def resolve_device(device: torch.device | str | None, *, distributed: bool = False) -> torch.device | None:
    """The device of a pass: ``"cuda"`` becomes ``cuda:LOCAL_RANK`` under torchrun; None stays None.

    Example:
        >>> resolve_device("cpu"), resolve_device(None)
        (device(type='cpu'), None)
    """
    from camscope.models.devices import check_device

    resolved = check_device(device)
    if resolved is None:
        return None
    if resolved.type == "cuda" and resolved.index is None and (distributed or "LOCAL_RANK" in os.environ):
        try:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError as error:
            raise CamscopeError(f"LOCAL_RANK must be an integer, got {os.environ['LOCAL_RANK']!r}") from error
        resolved = check_device(torch.device("cuda", local_rank))
    return resolved


def _start_process_group(device: torch.device) -> None:
    """Initialise the default process group from the torchrun environment (gloo on CPU, nccl on CUDA)."""
    missing = [name for name in _ENVIRONMENT if name not in os.environ]
    if missing:
        raise CamscopeError(
            "distributed=True needs an initialised torch.distributed process group or the torchrun "
            f"environment variables; {', '.join(missing)} not set (launch with torchrun --nproc_per_node=N)"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend=backend, init_method="env://")
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def current_shard(distributed: bool | None, device: torch.device) -> Shard:
    """This process's part of a pass.

    Args:
        distributed: None: split the pass when a process group is initialised;
            False: never; True: always (initialising a group from the torchrun
            environment when there is none).
        device: the pass's device (chooses the backend of a new group).

    Raises:
        CamscopeError: for ``distributed=True`` without a group or the torchrun environment.
    """
    if distributed is False:
        return Shard()
    available = torch.distributed.is_available()
    if distributed and not available:
        raise CamscopeError("distributed=True needs a torch build with torch.distributed")
    if available and not torch.distributed.is_initialized() and distributed:
        _start_process_group(device)
    if not available or not torch.distributed.is_initialized():
        return Shard()
    return Shard(torch.distributed.get_rank(), torch.distributed.get_world_size())


def is_main_process() -> bool:
    """True outside a process group and on rank 0 inside one (the process that prints and writes)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0") or 0) == 0


def _communication_device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather_bytes(payload: bytes, device: torch.device, world: int) -> list[bytes]:
    """Every rank's ``payload``, in rank order (``all_gather`` of uint8 tensors padded to the longest)."""
    local = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else torch.zeros(0, dtype=torch.uint8)
    length = torch.tensor([local.numel()], dtype=torch.int64, device=device)
    lengths = [torch.zeros_like(length) for _ in range(world)]
    torch.distributed.all_gather(lengths, length)
    sizes = [int(n.item()) for n in lengths]
    longest = max(max(sizes), 1)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: local.numel()] = local.to(device)
    buffers = [torch.zeros_like(padded) for _ in range(world)]
    torch.distributed.all_gather(buffers, padded)
    return [buffer[:size].cpu().numpy().tobytes() for buffer, size in zip(buffers, sizes)]


def gather_json(value: Any) -> list[Any]:
    """Every rank's JSON-safe ``value``, in rank order (``[value]`` outside a process group)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    world = torch.distributed.get_world_size()
    payloads = _gather_bytes(json.dumps(value).encode(), _communication_device(), world)
    return [json.loads(p.decode()) for p in payloads]


def _tensor_bytes(tensors: dict[str, Tensor]) -> tuple[bytes, list[list[Any]]]:
    """The tensors' raw bytes back to back, and ``[name, dtype, shape, offset, nbytes]`` of each."""
    chunks: list[bytes] = []
    layout: list[list[Any]] = []
    offset = 0
    for name, tensor in tensors.items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        layout.append([name, str(flat.dtype).removeprefix("torch."), list(tensor.shape), offset, len(raw)])
        chunks.append(raw)
        offset += len(raw)
    return b"".join(chunks), layout


def _tensors_from_bytes(data: bytes, layout: list[list[Any]], device: torch.device | None) -> dict[str, Tensor]:
    tensors: dict[str, Tensor] = {}
    for name, dtype_name, shape, offset, nbytes in layout:
        dtype = getattr(torch, dtype_name)
        raw = torch.frombuffer(bytearray(data[offset : offset + nbytes]), dtype=torch.uint8) if nbytes else None
        values = raw.view(dtype) if raw is not None else torch.zeros(0, dtype=dtype)
        tensor = values.reshape(shape)
        tensors[name] = tensor.to(device) if device is not None else tensor
    return tensors


def merge_across_ranks(
    accumulator: A | None,
    restore: Callable[[dict[str, Any], torch.device], A],
    shard: Shard,
    device: torch.device,
) -> A | None:
    """The merge, in rank order, of every rank's ``accumulator``, on every rank.

    Args:
        accumulator: this rank's accumulator (None when its part of the data gave no batch).
        restore: ``restore(state, device)`` turns a state dict into an accumulator on ``device``.
        shard: this rank (``Shard(0, 1)``: returns ``accumulator`` unchanged).
        device: where the other ranks' accumulators are restored.

    Returns:
        ``acc_0.merge(acc_1).merge(...)`` over the ranks that have one; None when none has.
    """
    if not shard.distributed:
        return accumulator
    if accumulator is None:
        payload, header = b"", None
    else:
        tensors, tree = flatten_state(accumulator.state_dict())  # type: ignore[attr-defined]
        payload, layout = _tensor_bytes(tensors)
        header = {"tree": tree, "layout": layout}
    headers = gather_json(header)
    payloads = _gather_bytes(payload, _communication_device(), shard.world)
    merged: Any = None
    for rank, (other_header, other_payload) in enumerate(zip(headers, payloads)):
        if other_header is None:
            continue
        if rank == shard.rank:
            part: Any = accumulator
        else:
            tensors = _tensors_from_bytes(other_payload, other_header["layout"], device)
            part = restore(unflatten_state(tensors, other_header["tree"]), device)
        merged = part if merged is None else merged.merge(part)
    return merged
