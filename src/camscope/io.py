"""Safe, atomic, versioned files: safetensors for tensors, JSON for metadata.

Nothing camscope writes is a pickle, and nothing it reads is unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load as _load_safetensors
from safetensors.torch import save as _save_safetensors
from torch import Tensor

from camscope.errors import CamscopeError

__all__ = ["FORMAT_VERSION", "atomic_write_bytes", "load_tensors", "save_tensors"]

#: Version of every file format camscope writes.
FORMAT_VERSION = 1


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, Tensor], metadata: dict[str, Any], kind: str) -> Path:
    """Save tensors as safetensors with JSON metadata (``kind`` and ``format_version`` added)."""
    header = {"kind": kind, "format_version": FORMAT_VERSION, **metadata}
    contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    data = _save_safetensors(contiguous, metadata={"camscope": json.dumps(header)})
    return atomic_write_bytes(path, data)


def load_tensors(path: str | os.PathLike[str], kind: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load a file written by :func:`save_tensors`, checking its kind and format version.

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
    data = path.read_bytes()
    try:
        tensors = _load_safetensors(data)
        from safetensors import safe_open  # header metadata

        with safe_open(str(path), framework="pt") as file:
            raw_header = (file.metadata() or {}).get("camscope")
    except Exception as error:
        raise CamscopeError(f"{path} is not a camscope safetensors file: {error}") from error
    if raw_header is None:
        raise CamscopeError(f"{path} has no camscope metadata: it was not written by camscope")
    header = json.loads(raw_header)
    if header.get("kind") != kind:
        raise CamscopeError(f"{path} holds a {header.get('kind')!r}, not a {kind!r}")
    if int(header.get("format_version", -1)) > FORMAT_VERSION:
        raise CamscopeError(
            f"{path} has format version {header.get('format_version')}, newer than this camscope "
            f"({FORMAT_VERSION}): upgrade camscope"
        )
    return tensors, header
