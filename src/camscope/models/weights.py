"""Weight files: the ``weights`` argument of :func:`camscope.models.load_model`, reading and loading state dicts.

Example:
    >>> from camscope.models.weights import normalise_weights
    >>> normalise_weights("none") is None, normalise_weights("pretrained")
    (True, 'default')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from camscope.errors import CamscopeError

__all__ = ["load_state_dict_strict", "normalise_weights", "read_state_dict"]


def normalise_weights(weights: str | os.PathLike[str] | None) -> str | Path | None:
    """Canonicalise the ``weights`` argument of :func:`load_model`.

    Args:
        weights: ``"default"``, ``None``/``"none"``, a local file, or (torchvision only)
            a weights enum name.

    Returns:
        ``None`` for random initialisation, ``"default"``, a :class:`Path` for a local
        file, or the string unchanged.
    """
    if weights is None:
        return None
    if isinstance(weights, os.PathLike):
        return Path(weights)
    if not isinstance(weights, str):
        raise CamscopeError(f"weights must be 'default', None/'none' or a path to a state-dict file, got {weights!r}.")
    text = weights.strip()
    if text.lower() in {"none", "random", ""}:
        return None
    if text.lower() in {"default", "pretrained"}:
        return "default"
    if (
        text.endswith((".pth", ".pt", ".bin", ".ckpt", ".safetensors"))
        or os.sep in text
        or Path(text).expanduser().is_file()
    ):
        return Path(text).expanduser()
    return text


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` or torch file without unpickling code.

    Args:
        path: File to read.

    Returns:
        The state dict (tensors on the CPU).

    Raises:
        CamscopeError: If the file is missing or is not a state dict.
    """
    if not path.is_file():
        raise CamscopeError(f"Weights file {path} does not exist: give an existing file, 'default' or None.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CamscopeError(f"Could not read weights file {path}: {_unreadable(path)}") from exc
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CamscopeError(f"Weights file {path} does not contain a state dict (a mapping of names to tensors).")
    return dict(loaded)


#: The first bytes of image files: a picture passed as weights gets a message that says so.
_IMAGE_SIGNATURES = {
    b"\xff\xd8\xff": "a JPEG image",
    b"\x89PNG": "a PNG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
}


def _unreadable(path: Path) -> str:
    """Why a weights file could not be read, on one line (torch's own messages span many lines)."""
    try:
        with path.open("rb") as file:
            head = file.read(8)
    except OSError:
        head = b""
    kind = next((name for signature, name in _IMAGE_SIGNATURES.items() if head.startswith(signature)), None)
    if kind is not None:
        return f"it is {kind}, not weights; give a checkpoint (.pt/.pth state dict or .safetensors)"
    if not head:
        return "it is empty; give a checkpoint (.pt/.pth state dict or .safetensors)"
    reader = "safetensors" if path.suffix == ".safetensors" else "torch.load with weights_only=True"
    return (
        f"it is not a state dict saved with torch.save or as .safetensors ({reader} cannot read it); "
        "give such a checkpoint, 'default' or 'none'"
    )


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: Path) -> None:
    """Load a user-supplied state dict strictly, turning mismatches into :class:`CamscopeError`.

    Args:
        model: Model to load into.
        state_dict: The weights.
        source: Where they came from (for the message).
    """
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CamscopeError(f"Weights file {source} does not fit the model: {exc}") from exc
