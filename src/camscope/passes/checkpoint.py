"""Checkpoints of a dataset pass: the accumulator's state, the position in the data, and what the pass was.

A checkpoint is one safetensors file written atomically by :mod:`camscope.io`
(kind ``"pass-checkpoint"``): the accumulator's tensors and, as JSON metadata,
the rest of its state (:func:`~camscope.passes.state.flatten_state`), the
batches and samples done, and a fingerprint of the pass (the model's
:func:`~camscope.stats.fingerprint.model_fingerprint`, the settings that shape
the result such as the layer and the batch size, the data's size and first
samples, the rank and world size). Resuming refuses a checkpoint whose
fingerprint differs, with the differences spelled out, and one whose tensors are
not exactly those the accumulator writes (:meth:`Checkpoint.restored`: a float16
mean where the accumulator keeps float64 is refused, not converted).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from camscope.data.folders import ImageFolderData
from camscope.errors import CamscopeError
from camscope.io import TensorSpec, check_file_tensors, load_tensors, save_tensors
from camscope.passes.state import flatten_state, unflatten_state

__all__ = [
    "CHECKPOINT_KIND",
    "Checkpoint",
    "data_fingerprint",
    "fingerprint_mismatches",
    "other_world_sizes",
    "rank_path",
]

CHECKPOINT_KIND = "pass-checkpoint"

A = TypeVar("A")


def _tensor_paths(state: Any, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    """``(path, tensor)`` for every tensor of a state tree, the path naming its keys (``results.gradcam.values.0``)."""
    if isinstance(state, Tensor):
        yield prefix or "state", state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from _tensor_paths(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            yield from _tensor_paths(value, f"{prefix}.{index}" if prefix else str(index))


def _referenced(tree: Any) -> Iterator[str]:
    """The tensor names a flattened state tree refers to (see :func:`~camscope.passes.state.flatten_state`)."""
    if isinstance(tree, dict):
        if "T" in tree:
            yield str(tree["T"])
        for value in tree.values():
            yield from _referenced(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _referenced(value)


@dataclass(frozen=True)
class Checkpoint:
    """A saved position of a pass: the accumulator ``state`` after ``batches`` of this rank's batches."""

    state: Any
    batches: int
    samples: int
    fingerprint: dict[str, Any]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the checkpoint atomically (a crash leaves the previous one intact).

        The metadata records each tensor's dtype and shape, which :meth:`load` checks.
        """
        tensors, tree = flatten_state(self.state)
        metadata = {
            "tree": tree,
            "batches": self.batches,
            "samples": self.samples,
            "fingerprint": self.fingerprint,
            "tensors": {name: [str(t.dtype).removeprefix("torch."), list(t.shape)] for name, t in tensors.items()},
        }
        return save_tensors(path, tensors, metadata, CHECKPOINT_KIND)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: torch.device | None = None) -> Checkpoint:
        """Read a checkpoint written by :meth:`save` (tensors onto ``device``).

        Raises:
            CamscopeError: for a file that is not a pass checkpoint, or whose tensors
                differ from the dtypes and shapes it recorded (named by their place in the state).
        """
        tensors, header = load_tensors(path, CHECKPOINT_KIND)
        unused = sorted(set(tensors) - set(_referenced(header.get("tree"))))
        if unused:
            raise CamscopeError(f"{path} holds a tensor {unused[0]!r} that its state does not use: {_REMEDY}")
        try:
            checkpoint = cls(
                state=unflatten_state(tensors, header["tree"]),
                batches=int(header["batches"]),
                samples=int(header["samples"]),
                fingerprint=dict(header["fingerprint"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CamscopeError(f"{path} is not a complete pass checkpoint (bad entry {error})") from error
        places = {id(tensor): place for place, tensor in _tensor_paths(checkpoint.state)}
        recorded = _recorded(header.get("tensors"), path)
        if recorded is not None:  # checkpoints of camscope 0.1.0 did not record them
            check_file_tensors(
                {places[id(t)]: t for t in tensors.values()},
                {places[id(tensors[name])]: spec for name, spec in recorded.items() if name in tensors},
                f"the checkpoint {path}",
                remedy=_REMEDY,
            )
        if device is None:
            return checkpoint
        return replace(checkpoint, state=_to_device(checkpoint.state, device))

    def restored(self, restore: Callable[[Any, torch.device], A], device: torch.device, path: object) -> A:
        """The accumulator ``restore`` builds from this checkpoint's state, checked against the file.

        Every tensor of the state must have the dtype and shape that the restored
        accumulator's own ``state_dict()`` holds at the same place, so a tensor stored
        with another dtype or shape (its record in the file edited alike) is refused
        instead of converted.

        Raises:
            CamscopeError: naming the tensor, its dtype and shape and the expected ones.
        """
        accumulator = restore(self.state, device)
        expected = {
            place: TensorSpec(t.dtype, tuple(t.shape), required=False)
            for place, t in _tensor_paths(accumulator.state_dict())  # type: ignore[attr-defined]
        }
        check_file_tensors(
            dict(_tensor_paths(self.state)), expected, f"the checkpoint {path}", strict=False, remedy=_REMEDY
        )
        return accumulator


#: What to do with a checkpoint that cannot be resumed.
_REMEDY = "the checkpoint was altered; give another checkpoint file, or drop --resume / resume=True to start again"


def _recorded(entry: Any, path: object) -> dict[str, TensorSpec] | None:
    """The dtypes and shapes a checkpoint recorded for its tensors (None when it recorded none)."""
    if entry is None:
        return None
    specs: dict[str, TensorSpec] = {}
    try:
        for name, (dtype, shape) in entry.items():
            found = getattr(torch, dtype)
            if not isinstance(found, torch.dtype) or not all(isinstance(size, int) for size in shape):
                raise TypeError(dtype)
            specs[name] = TensorSpec(found, tuple(shape))
    except (AttributeError, TypeError, ValueError) as error:
        raise CamscopeError(f"{path} has a corrupt record of its tensors ({error}): {_REMEDY}") from error
    return specs


def _to_device(state: Any, device: torch.device) -> Any:
    """``state`` with its tensors on ``device``."""
    if isinstance(state, Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {key: _to_device(value, device) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_device(value, device) for value in state)
    return state


def rank_path(path: str | os.PathLike[str], rank: int, world: int) -> Path:
    """The checkpoint file of ``rank`` of ``world`` processes (``path`` itself for one process).

    Example:
        >>> rank_path("run/bank.ckpt", 1, 2).name, rank_path("run/bank.ckpt", 0, 1).name
        ('bank.rank1-of-2.ckpt', 'bank.ckpt')
    """
    path = Path(path)
    if world <= 1:
        return path
    return path.with_name(f"{path.stem}.rank{rank}-of-{world}{path.suffix}")


def other_world_sizes(path: str | os.PathLike[str], world: int) -> list[int]:
    """The numbers of processes, other than ``world``, that left checkpoint files for ``path``.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "bank.rank0-of-2.ckpt").write_bytes(b""), (folder / "bank.rank1-of-2.ckpt").write_bytes(b"")
        >>> other_world_sizes(folder / "bank.ckpt", 1), other_world_sizes(folder / "bank.ckpt", 2)
        ([2], [])
    """
    path = Path(path)
    worlds = {1} if path.is_file() else set()
    for sibling in path.parent.glob(f"{glob.escape(path.stem)}.rank*-of-*{glob.escape(path.suffix)}"):
        match = re.fullmatch(rf"{re.escape(path.stem)}\.rank\d+-of-(\d+){re.escape(path.suffix)}", sibling.name)
        if match:
            worlds.add(int(match.group(1)))
    return sorted(worlds - {world})


def _tensor_digest(tensor: Tensor, limit: int = 1 << 20) -> str:
    flat = tensor.detach().cpu().contiguous().reshape(-1)[: max(1, limit // max(tensor.element_size(), 1))]
    return hashlib.sha256(flat.numpy().tobytes() if flat.numel() else b"").hexdigest()[:16]


def data_fingerprint(data: Any) -> dict[str, Any]:
    """What identifies a pass's data: its type, size and first samples (paths, or a hash of a tensor's values).

    Example:
        >>> import torch
        >>> data_fingerprint(torch.zeros(4, 3))["length"]
        4
    """
    fingerprint: dict[str, Any] = {"type": type(data).__name__}
    if isinstance(data, Tensor):
        fingerprint.update(length=int(data.shape[0]), shape=list(data.shape), digest=_tensor_digest(data))
        return fingerprint
    try:
        fingerprint["length"] = len(data)
    except TypeError:
        fingerprint["length"] = None
    samples = data.samples if isinstance(data, ImageFolderData) else getattr(data, "samples", None)
    if isinstance(samples, list) and samples:
        fingerprint["first"] = [str(s[0]) if isinstance(s, tuple) else str(s) for s in samples[:3]]
        fingerprint["last"] = str(samples[-1][0]) if isinstance(samples[-1], tuple) else str(samples[-1])
    dataset = getattr(data, "dataset", None)
    if isinstance(dataset, Dataset):  # a DataLoader: its dataset and batch size
        fingerprint["dataset"] = data_fingerprint(dataset)
        fingerprint["loader_batch_size"] = getattr(data, "batch_size", None)
    tensors = getattr(data, "tensors", None)
    if isinstance(tensors, tuple) and tensors and all(isinstance(t, Tensor) for t in tensors):
        fingerprint["digest"] = [_tensor_digest(t) for t in tensors]
    return fingerprint


def _model_mismatch(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """A sentence when two model fingerprints differ (architecture, or weights beyond float64 rounding)."""
    if saved.get("architecture") != now.get("architecture") or saved.get("class") != now.get("class"):
        return (
            f"model: the checkpoint has a {saved.get('class')} (architecture {saved.get('architecture')}), "
            f"this pass a {now.get('class')} (architecture {now.get('architecture')})"
        )
    tolerance = 1e-6 * max(float(saved.get("weights_scale", 0.0)), float(now.get("weights_scale", 0.0)), 1e-12)
    if abs(float(saved.get("weights", 0.0)) - float(now.get("weights", 0.0))) > tolerance:
        return f"model: the checkpoint has the same architecture ({now.get('class')}) but other weights than this pass"
    return None


def fingerprint_mismatches(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """The entries of two pass fingerprints that differ, as sentences (empty when they match)."""
    differences: list[str] = []
    for key in sorted(set(expected) | set(actual)):
        saved, now = expected.get(key), actual.get(key)
        if key == "model" and isinstance(saved, dict) and isinstance(now, dict):
            mismatch = _model_mismatch(saved, now)
            if mismatch:
                differences.append(mismatch)
        elif json.dumps(saved, sort_keys=True, default=str) != json.dumps(now, sort_keys=True, default=str):
            differences.append(f"{key}: the checkpoint has {saved!r}, this pass {now!r}")
    return differences
