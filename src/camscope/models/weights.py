"""Weight files: the ``weights`` argument of :func:`camscope.models.load_model`, reading and loading state dicts.

Example:
    >>> from camscope.models.weights import normalise_weights
    >>> normalise_weights("none") is None, normalise_weights("pretrained")
    (True, 'default')
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from camscope.errors import CamscopeError
from camscope.io import FLOATING, TensorSpec, check_file_tensors

__all__ = ["load_state_dict_strict", "normalise_weights", "read_state_dict", "weight_specs"]


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

    A torch file is read with ``weights_only=True``: a file that holds anything but
    tensors (a pickled model, an optimiser's state with Python objects) is refused
    with one line, and nothing in it is run.

    Args:
        path: File to read.

    Returns:
        The state dict (tensors on the CPU).

    Raises:
        CamscopeError: If the file is missing or is not a state dict camscope can read safely.
    """
    if not path.is_file():
        raise CamscopeError(f"Weights file {path} does not exist: give an existing file, 'default' or None.")
    unsafe = CamscopeError(
        f"Weights file {path} is not a state dict camscope can read safely: give a .safetensors file, "
        "or a torch file that holds only tensors (torch.save(model.state_dict(), path))."
    )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            with warnings.catch_warnings():  # torch warns of a pickle protocol it may not read: the refusal says it
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                loaded = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch's unpickler refusing a class, a corrupt file, safetensors' own errors
        raise unsafe from exc
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise unsafe
    return dict(loaded)


def weight_specs(model: nn.Module, *, exact: bool = False) -> dict[str, TensorSpec]:
    """What each tensor of a weights file for ``model`` must be: the shape of the model's, and its dtype.

    A user's file (``exact=False``) may store a floating-point tensor in any
    floating-point dtype (float16 weights load into a float32 model, as
    ``load_state_dict`` copies them), and its names are checked by the strict load
    (which knows the names a module may leave out); integer and boolean buffers keep
    their dtype. camscope's own model files (``exact=True``) hold every tensor with
    the model's exact dtype.

    Example:
        >>> specs = weight_specs(nn.Linear(3, 2))
        >>> specs["weight"].shape, specs["bias"].shape
        ((2, 3), (2,))
    """
    return {
        name: TensorSpec(
            FLOATING if not exact and tensor.is_floating_point() else tensor.dtype, tuple(tensor.shape), required=exact
        )
        for name, tensor in model.state_dict().items()
    }


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: Path) -> None:
    """Load a state dict strictly, turning mismatches into one-line :class:`CamscopeError` messages.

    Every tensor must have the shape of the model's, a floating-point dtype where the
    model's is floating-point and otherwise the model's dtype (:func:`weight_specs`); the
    names must be the model's.

    Args:
        model: Model to load into.
        state_dict: The weights.
        source: Where they came from (for the message).
    """
    check_file_tensors(
        state_dict,
        weight_specs(model),
        f"Weights file {source}",
        strict=False,
        remedy="it does not fit the model (the weights of another architecture or size)",
    )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        expected = set(model.state_dict())
        missing = sorted(expected - set(state_dict))
        unexpected = sorted(set(state_dict) - expected)
        parts = [f"{len(missing)} missing ({_listed(missing)})"] if missing else []
        parts += [f"{len(unexpected)} unexpected ({_listed(unexpected)})"] if unexpected else []
        detail = "; ".join(parts) or " ".join(str(exc).split())
        raise CamscopeError(
            f"Weights file {source} does not fit the model: {detail}; it holds the weights of another architecture"
        ) from exc


def _listed(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
