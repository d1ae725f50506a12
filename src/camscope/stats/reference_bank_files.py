"""Reference bank files: a bank's state as safetensors with JSON metadata (the 0.1.0 format).

The file (see :mod:`camscope.io`, kind :data:`BANK_KIND`) holds the tensors
``labels`` (``[C]`` int64), ``counts`` (``[C]`` int64), ``means`` (``[C, K]``
float64) and ``scatters`` (``[C, K, K]`` float64) or, for ``scatter: "shared"``,
``within`` (``[K, K]`` float64), exactly (any other tensor, dtype or shape is
refused on loading), and the
metadata ``model``, ``layer``, ``embedding``, ``feature_size``, ``labels``,
``class_names`` (aligned with ``labels``), ``scatter``, ``auto_scatter``,
``max_scatter_bytes``, ``layout``, ``input_size`` and ``count``.

Example:
    >>> import tempfile, torch
    >>> from camscope.stats.reference_bank import ReferenceBank
    >>> bank = ReferenceBank(2, "layer4", class_names=["cat", "dog"]).update(torch.randn(4, 2), [0, 1, 0, 1])
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     loaded = load_bank(ReferenceBank, save_bank(bank, f"{folder}/bank.safetensors"))
    >>> loaded.class_names, torch.equal(loaded.means, bank.means)
    (['cat', 'dog'], True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from camscope.errors import CamscopeError
from camscope.io import TensorSpec, check_file_tensors, checked_int, checked_tensor, load_tensors, save_tensors

if TYPE_CHECKING:
    from camscope.stats.reference_bank import ReferenceBank

__all__ = ["BANK_KIND", "load_bank", "save_bank"]

#: The ``kind`` of bank files (see :mod:`camscope.io`).
BANK_KIND = "reference-bank"

_TENSORS = ("labels", "counts", "means", "scatters", "within")


def _specs(meta: dict[str, Any]) -> dict[str, TensorSpec]:
    """The tensors of a bank file: per-class scatters, or one shared ``within`` (``scatter: "shared"``)."""
    specs = {
        "labels": TensorSpec(torch.int64, ("C",)),
        "counts": TensorSpec(torch.int64, ("C",)),
        "means": TensorSpec(torch.float64, ("C", "K")),
    }
    if meta.get("scatter") == "shared":
        specs["within"] = TensorSpec(torch.float64, ("K", "K"))
    else:
        specs["scatters"] = TensorSpec(torch.float64, ("C", "K", "K"))
    return specs


def save_bank(bank: ReferenceBank, path: str | os.PathLike[str]) -> Path:
    """Write ``bank`` to ``path`` atomically; returns the path.

    Raises:
        CamscopeError: for an empty bank.
    """
    state = bank.state_dict()
    labels = [int(v) for v in state["labels"].tolist()]
    if not labels:
        raise CamscopeError("the reference bank is empty: nothing to save")
    tensors = {name: state[name] for name in _TENSORS if name in state}
    tensors["counts"] = state["counts"].round().long()
    metadata = {
        "model": state["model"],
        "layer": state["layer"],
        "embedding": state["embedding"],
        "feature_size": state["feature_size"],
        "labels": labels,
        "class_names": bank.class_names,
        "scatter": state["scatter"],
        "auto_scatter": state["auto_scatter"],
        "max_scatter_bytes": state["max_scatter_bytes"],
        "layout": state["layout"],
        "input_size": state["input_size"],
        "count": bank.count,
    }
    return save_tensors(path, tensors, metadata, kind=BANK_KIND)


def load_bank(
    bank_class: type[ReferenceBank],
    path: str | os.PathLike[str],
    model: nn.Module | None = None,
    layer: str | None = None,
    *,
    device: torch.device | str = "cpu",
) -> ReferenceBank:
    """Read a ``bank_class`` bank written by :func:`save_bank` (the arguments of :meth:`ReferenceBank.load`).

    Raises:
        CamscopeError: for a missing or foreign file, a newer format, an
            inconsistent file, or a model or layer that does not match.
    """
    tensors, meta = load_tensors(path, kind=BANK_KIND)
    try:
        feature_size = checked_int(meta["feature_size"], "feature_size", minimum=1)
    except (KeyError, CamscopeError) as error:
        raise CamscopeError(
            f"{path} is not a valid reference bank (missing or bad entry: {error}); build it again"
        ) from error
    check_file_tensors(tensors, _specs(meta), path, sizes={"K": feature_size})
    try:
        state = _state(tensors, meta)
    except (KeyError, TypeError, ValueError, CamscopeError) as error:
        raise CamscopeError(
            f"{path} is not a valid reference bank (missing or bad entry: {error}); build it again"
        ) from error
    try:
        bank = bank_class.from_state_dict(state, device=device)
    except CamscopeError as error:
        raise CamscopeError(f"{path} is not a valid reference bank ({error}); build it again") from error
    if model is not None or layer is not None:
        bank.check(model=model, layer=layer)
    return bank


def _state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The state dict of a bank file's tensors and metadata, the metadata's JSON types checked."""
    labels = [int(v) for v in checked_tensor(tensors["labels"], "labels", [-1], torch.int64).tolist()]
    names = meta.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise CamscopeError(f"class_names must be a list of names, got {names!r}")
    if names and len(names) != len(labels):
        raise CamscopeError(f"{len(names)} class_names for {len(labels)} classes")
    if "labels" in meta and meta["labels"] != labels:
        raise CamscopeError(f"the metadata's labels {meta['labels']!r} differ from the tensor's {labels}")
    for key, kinds in (("embedding", str), ("scatter", str), ("auto_scatter", bool)):
        if key in meta and not isinstance(meta[key], kinds):
            raise CamscopeError(f"{key} has the wrong type: {meta[key]!r}")
    state: dict[str, Any] = {
        **{name: tensors[name] for name in _TENSORS if name in tensors},
        "feature_size": meta["feature_size"],
        "layer": meta["layer"],
        "embedding": meta.get("embedding", "mean"),
        "model": meta.get("model"),
        "names": dict(zip(labels, names)),
        "scatter": meta.get("scatter", "class"),
        "auto_scatter": meta.get("auto_scatter", False),
        "layout": meta.get("layout"),
        "input_size": meta.get("input_size"),
    }
    if "max_scatter_bytes" in meta:
        state["max_scatter_bytes"] = checked_int(meta["max_scatter_bytes"], "max_scatter_bytes", minimum=0)
    return state
