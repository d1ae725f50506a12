"""Safe, atomic, versioned files: safetensors for tensors, JSON for metadata.

Nothing camscope writes is a pickle, and nothing it reads is unpickled. Every
write goes to a temporary file in the target folder (``.NAME.PID.RANDOM.tmp``)
and is renamed over the target only once complete, so an interrupted or failed
write (Ctrl-C, a full disk) leaves the previous file, or none, and no temporary
file behind; temporaries of a writer that was killed outright (``SIGKILL``) are
removed by the next write of the same target. Files get the permissions of a
normal file under the user's umask.

Reading checks the file before trusting it: a truncated or corrupted file, or
camscope metadata that is not a JSON object of the right kind and a known
format version, raises :class:`~camscope.errors.CamscopeError`;
:func:`check_file_tensors` checks that a file holds exactly the tensors, dtypes
and shapes camscope writes (every loader calls it), and :func:`checked_tensor`
checks values.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as _load_safetensors
from safetensors.torch import save as _save_safetensors
from torch import Tensor

from camscope.errors import CamscopeError

__all__ = [
    "FORMAT_VERSION",
    "TensorSpec",
    "atomic_write_bytes",
    "check_file_tensors",
    "checked_float",
    "checked_int",
    "checked_tensor",
    "discard_temporaries",
    "load_tensors",
    "make_folder",
    "read_header",
    "save_tensors",
]

#: Version of every file format camscope writes.
FORMAT_VERSION = 1


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise CamscopeError(f"cannot write {path}: it is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CamscopeError(f"cannot write {path}: {parent} is a file, not a folder; choose another path")
            break


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


#: ``.NAME.PID.RANDOM.tmp``: the temporary files of :func:`atomic_write_bytes`.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
#: Per folder, the temporaries found when this process first wrote there, by target name.
_TEMPORARIES: dict[Path, dict[str, list[tuple[int, Path]]]] = {}


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries of ``path`` left by writers that no longer run (killed outright).

    A folder is listed once per process (the first write there), so writing many
    files into one folder stays linear.
    """
    folder = path.parent.absolute()
    if folder not in _TEMPORARIES:
        found: dict[str, list[tuple[int, Path]]] = {}
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                match = _TEMPORARY.match(entry.name)
                if match:
                    found.setdefault(match["name"], []).append((int(match["pid"]), Path(entry.path)))
        _TEMPORARIES[folder] = found
    for pid, temporary in _TEMPORARIES[folder].pop(path.name, []):
        if pid != os.getpid() and not _pid_alive(pid):
            with contextlib.suppress(OSError):
                temporary.unlink()


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Raises:
        CamscopeError: when the path is a folder, lies under a file, or cannot be
            written (permissions, a full disk); nothing is left behind.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write_bytes(folder / "a.txt", b"hello").read_bytes()
        b'hello'
    """
    path = Path(path)
    _check_target(path)
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        temporary = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        _WRITING.add(temporary)
        # O_EXCL: never follow or reuse an existing name; mode 0o666 is narrowed by the umask.
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise CamscopeError(
            f"cannot write {path}: {_reason(error)} (check that the folder exists, is writable and has space)"
        ) from error
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)  # none after the rename
            _WRITING.discard(temporary)
    return path


#: The temporary files this process is writing (see :func:`discard_temporaries`).
_WRITING: set[Path] = set()


def discard_temporaries() -> None:
    """Remove the temporary files this process is writing, now (for an exit that skips ``finally`` blocks).

    The command line exits at once on Ctrl-C (see :func:`camscope.cli.main`); it calls
    this first, so that no ``.NAME.PID.RANDOM.tmp`` file is left behind.
    """
    for temporary in list(_WRITING):
        with contextlib.suppress(OSError):
            temporary.unlink()


def make_folder(path: str | os.PathLike[str]) -> Path:
    """Create the folder ``path`` (and its parents) if needed; returns it.

    Raises:
        CamscopeError: when ``path`` is a file, lies under a file, or cannot be created.

    Example:
        >>> import tempfile, pathlib
        >>> make_folder(pathlib.Path(tempfile.mkdtemp()) / "a" / "b").is_dir()
        True
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CamscopeError(f"cannot use {path} as an output folder: it is a file; choose a folder")
    _check_target(path / "_")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CamscopeError(f"cannot create the folder {path}: {_reason(error)}") from error
    return path


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, Tensor], metadata: dict[str, Any], kind: str) -> Path:
    """Save tensors as safetensors with JSON metadata (``kind`` and ``format_version`` added)."""
    header = {"kind": kind, "format_version": FORMAT_VERSION, **metadata}
    contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    data = _save_safetensors(contiguous, metadata={"camscope": json.dumps(header)})
    return atomic_write_bytes(path, data)


def read_header(raw: object, path: Path, kind: str) -> dict[str, Any]:
    """The camscope header of a file, checked: a JSON object of the right kind and a known format version."""
    if raw is None:
        raise CamscopeError(f"{path} has no camscope metadata: it was not written by camscope")
    if not isinstance(raw, str):
        raise CamscopeError(f"{path} has corrupt camscope metadata (not text): write the file again")
    try:
        header = json.loads(raw)
    except ValueError as error:
        raise CamscopeError(
            f"{path} has corrupt camscope metadata (not JSON: {error}): write the file again"
        ) from error
    if not isinstance(header, dict):
        raise CamscopeError(f"{path} has corrupt camscope metadata (not a JSON object): write the file again")
    if header.get("kind") != kind:
        raise CamscopeError(f"{path} holds a {header.get('kind')!r}, not a {kind!r}")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CamscopeError(f"{path} has an invalid format_version {version!r}: the file is corrupt; write it again")
    if version > FORMAT_VERSION:
        raise CamscopeError(
            f"{path} has format version {version}, newer than this camscope ({FORMAT_VERSION}): upgrade camscope"
        )
    return header


def load_tensors(path: str | os.PathLike[str], kind: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load a file written by :func:`save_tensors`, checking its kind and format version.

    Raises:
        CamscopeError: for a missing or unreadable file, a file that is not
            safetensors (truncated, corrupted), or corrupt camscope metadata.

    Example:
        >>> import tempfile, pathlib, torch
        >>> path = save_tensors(pathlib.Path(tempfile.mkdtemp()) / "x.safetensors", {"x": torch.ones(2)}, {"note": "hi"}, "demo")
        >>> tensors, header = load_tensors(path, "demo")
        >>> tensors["x"].tolist(), header["note"], header["format_version"]
        ([1.0, 1.0], 'hi', 1)
    """
    path = Path(path)
    if not path.is_file():
        raise CamscopeError(f"no such file: {path}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CamscopeError(f"cannot read {path}: {_reason(error)}") from error
    try:
        raw = _safetensors_metadata(data).get("camscope")
        tensors = _load_safetensors(data)
    except Exception as error:  # safetensors, JSON and overflow errors of a corrupt file
        raise CamscopeError(
            f"{path} is not a camscope safetensors file (truncated or corrupt: {error}); write it again"
        ) from error
    return tensors, read_header(raw, path, kind)


def _safetensors_metadata(data: bytes) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors file held in memory (the header is JSON after an 8-byte length)."""
    if len(data) < 8:
        raise ValueError("the file is too short")
    length = int.from_bytes(data[:8], "little")
    if length > len(data) - 8:
        raise ValueError("the header is longer than the file")
    header = json.loads(data[8 : 8 + length])
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError("__metadata__ is not an object")
    return metadata


#: Any floating-point dtype (see :class:`TensorSpec`).
FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class TensorSpec:
    """What one tensor of a file must be: its dtype and its shape.

    Attributes:
        dtype: the dtype, or a tuple of the dtypes allowed (e.g. :data:`FLOATING`).
        shape: one entry per dimension: an ``int`` (that size), a name (a size
            shared by every tensor of the file that uses the name, or given to
            :func:`check_file_tensors` in ``sizes``), ``"_"`` (any size) or, last
            only, ``"*name"`` (one or more further dimensions, as many as in every
            tensor that uses the name) or ``"..."`` (any number of further dimensions).
        required: whether the file must hold the tensor.
    """

    dtype: torch.dtype | tuple[torch.dtype, ...]
    shape: tuple[int | str, ...]
    required: bool = True

    def dtypes(self) -> tuple[torch.dtype, ...]:
        return self.dtype if isinstance(self.dtype, tuple) else (self.dtype,)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _expected(spec: TensorSpec, sizes: Mapping[str, int]) -> str:
    dtypes = spec.dtypes()
    kind = "a floating-point dtype" if set(dtypes) == set(FLOATING) else "/".join(map(_dtype_name, dtypes))

    def dim(entry: int | str) -> str:
        if isinstance(entry, int) or entry == "...":
            return str(entry)
        if entry == "_":
            return "*"
        if entry.startswith("*"):
            return f"{sizes[entry]} {entry[1:]} dims" if entry in sizes else f"{entry[1:]} dims"
        return f"{entry}={sizes[entry]}" if entry in sizes else entry

    return f"{kind} [{', '.join(dim(entry) for entry in spec.shape)}]"


def _named(shape: Sequence[int], spec: TensorSpec) -> dict[str, int] | None:
    """The named sizes of ``shape`` under ``spec.shape`` (a ``*name`` counts dimensions), or None when it cannot fit."""
    wanted = list(spec.shape)
    rest = wanted.pop() if wanted and isinstance(wanted[-1], str) and wanted[-1].startswith(("*", "...")) else None
    if len(shape) < len(wanted) + (1 if rest not in (None, "...") else 0):
        return None
    if rest is None and len(shape) != len(wanted):
        return None
    named: dict[str, int] = {}
    for size, entry in zip(shape, wanted):
        if isinstance(entry, int):
            if size != entry:
                return None
        elif entry != "_" and named.setdefault(entry, size) != size:
            return None
    if rest not in (None, "..."):
        named[str(rest)] = len(shape) - len(wanted)
    return named


def _voted_sizes(tensors: Mapping[str, Tensor], specs: Mapping[str, TensorSpec]) -> dict[str, int]:
    """Each named size as most of the tensors that use it have it (so the message names the odd tensor out)."""
    votes: dict[str, Counter[int]] = {}
    for name, spec in specs.items():
        tensor = tensors.get(name)
        named = _named(tuple(tensor.shape), spec) if isinstance(tensor, Tensor) else None
        for entry, size in (named or {}).items():
            votes.setdefault(entry, Counter())[size] += 1
    return {entry: counts.most_common(1)[0][0] for entry, counts in votes.items()}


def check_file_tensors(
    tensors: Mapping[str, Tensor],
    specs: Mapping[str, TensorSpec],
    source: object,
    *,
    sizes: Mapping[str, int] | None = None,
    strict: bool = True,
    remedy: str = "the file was altered or not written by camscope; write it again",
) -> dict[str, int]:
    """Check that a file's ``tensors`` are exactly those of ``specs``: names, dtypes and shapes.

    Every file camscope reads goes through this check, so that a tensor stored
    with another dtype (a float16 mean where camscope writes float64) or shape is
    refused instead of converted. A name in a shape takes the size that most of
    the tensors using it have (or the one given in ``sizes``), so that the message
    names the tensor that differs.

    Args:
        tensors: the tensors read from the file, by name.
        specs: what each tensor must be (see :class:`TensorSpec`).
        source: the file (or what to call it) for the message.
        sizes: sizes known beforehand (e.g. from the file's metadata), by name.
        strict: refuse tensors that ``specs`` does not name (else ignore them).
        remedy: what went wrong and what to do, at the end of the message.

    Returns:
        Every named size, as bound.

    Raises:
        CamscopeError: one line naming the tensor, its dtype and shape, and the expected ones.

    Example:
        >>> import torch
        >>> specs = {"means": TensorSpec(torch.float64, ("C", "K")), "counts": TensorSpec(torch.int64, ("C",))}
        >>> check_file_tensors({"means": torch.zeros(2, 3, dtype=torch.float64), "counts": torch.ones(2, dtype=torch.int64)}, specs, "bank.safetensors")
        {'C': 2, 'K': 3}
        >>> check_file_tensors({"means": torch.zeros(2, 3, dtype=torch.float16), "counts": torch.ones(2, dtype=torch.int64)}, specs, "bank.safetensors")
        Traceback (most recent call last):
        ...
        camscope.errors.CamscopeError: bank.safetensors: the tensor 'means' is float16 [2, 3], expected float64 [C=2, K=3]: the file was altered or not written by camscope; write it again
    """
    bound = {**_voted_sizes(tensors, specs), **(sizes or {})}
    for name, spec in specs.items():
        tensor = tensors.get(name)
        if tensor is None:
            if spec.required:
                raise CamscopeError(f"{source} has no tensor {name!r} (expected {_expected(spec, bound)}): {remedy}")
            continue
        if not isinstance(tensor, Tensor):
            raise CamscopeError(f"{source}: {name!r} is a {type(tensor).__name__}, expected a tensor")
        named = _named(tuple(tensor.shape), spec)
        fits = named is not None and all(bound.get(entry, size) == size for entry, size in named.items())
        if tensor.dtype not in spec.dtypes() or not fits:
            expected = _expected(spec, bound)
            raise CamscopeError(
                f"{source}: the tensor {name!r} is {_dtype_name(tensor.dtype)} {list(tensor.shape)}, "
                f"expected {expected}: {remedy}"
            )
        bound.update(named or {})
    unexpected = sorted(set(tensors) - set(specs)) if strict else []
    if unexpected:
        tensor = tensors[unexpected[0]]
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CamscopeError(
            f"{source} holds a tensor {unexpected[0]!r} ({_dtype_name(tensor.dtype)} {list(tensor.shape)}){more} "
            f"that camscope does not write: {remedy}"
        )
    return bound


_INTEGRAL = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)


def checked_tensor(
    tensor: Any,
    name: str,
    shape: Sequence[int],
    dtype: torch.dtype,
    *,
    nonnegative: bool = False,
    allow_infinite: bool = False,
) -> Tensor:
    """A copy of ``tensor`` as ``dtype``, checked: a tensor of ``shape`` (``-1``: any size) with finite values.

    Integer ``dtype`` takes integer tensors or floats with whole values. A failed
    check raises a :class:`CamscopeError` naming ``name`` and what was wrong.

    Example:
        >>> import torch
        >>> checked_tensor(torch.tensor([1.0, 2.0]), "counts", [2], torch.int64).tolist()
        [1, 2]
    """
    if not isinstance(tensor, Tensor):
        raise CamscopeError(f"{name} must be a tensor, got {type(tensor).__name__}")
    if tensor.dim() != len(shape) or any(want >= 0 and got != want for got, want in zip(tensor.shape, shape)):
        wanted = ["*" if size < 0 else size for size in shape]
        raise CamscopeError(f"{name} has shape {list(tensor.shape)}, expected {wanted}")
    if tensor.is_complex():
        raise CamscopeError(f"{name} holds complex numbers, expected real ones")
    floating = tensor.is_floating_point()
    values = tensor.detach().to(torch.float64) if floating else tensor.detach()
    if floating and bool(values.isnan().any()):
        raise CamscopeError(f"{name} holds NaN values")
    if floating and not allow_infinite and bool(values.isinf().any()):
        raise CamscopeError(f"{name} holds infinite values")
    if nonnegative and tensor.numel() and bool((values < 0).any()):
        raise CamscopeError(f"{name} holds negative values")
    whole = not floating or not (bool((values != values.round()).any()) or bool((values.abs() > 2**62).any()))
    if dtype in _INTEGRAL and not whole:
        raise CamscopeError(f"{name} must hold whole numbers")
    return tensor.detach().to(dtype, copy=True)


def checked_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``, else a :class:`CamscopeError`."""
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise CamscopeError(f"{name} must be an integer{bound}, got {value!r}")
    return value


def checked_float(value: Any, name: str) -> float:
    """``value`` if it is a finite real number (not a bool), as a float, else a :class:`CamscopeError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CamscopeError(f"{name} must be a finite number, got {value!r}")
    return float(value)
