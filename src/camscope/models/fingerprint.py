"""Model fingerprints: what identifies a network for a saved reference bank or group.

A fingerprint records the model's class, a hash of its architecture (names,
shapes and dtypes of parameters and buffers) and a checksum of its weights, so
a bank built with one model is not used with another by mistake.

Example:
    >>> import torch
    >>> fingerprint = model_fingerprint(torch.nn.Linear(3, 2))
    >>> fingerprint["class"], fingerprint["name"]
    ('Linear', 'Linear')
    >>> fingerprint_differences(fingerprint, model_fingerprint(torch.nn.Linear(3, 2)))[0][:35]
    'model: same architecture (Linear) b'
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["fingerprint_differences", "model_fingerprint", "version_counter"]

_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def version_counter(tensor: Tensor) -> int:
    """The tensor's version counter: every in-place change of its data (``add_``, ``copy_``, ...) bumps it.

    With the tensor's identity (``id``, or its storage's ``data_ptr``) it tells a cached
    result computed from the tensor whether the tensor has changed since.

    Example:
        >>> import torch
        >>> x = torch.zeros(3)
        >>> before = version_counter(x)
        >>> _ = x.add_(1)
        >>> version_counter(x) - before
        1
    """
    return int(tensor._version)  # noqa: SLF001 - torch has no public name for the in-place version counter


def _state_tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    return list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if b is not None]


def model_fingerprint(model: nn.Module, name: str | None = None) -> dict[str, Any]:
    """What identifies a model for a bank: its class, architecture and weights.

    ``architecture`` hashes the names, shapes and dtypes of the parameters and
    buffers; ``weights`` is the float64 sum of all floating-point values plus
    their absolute values (``weights_scale`` is the sum of absolute values, the
    tolerance of the comparison). The result is cached per model until a
    parameter changes (an in-place update bumps the tensor's version).

    Args:
        model: the network.
        name: a name to record (the CLI's model name); default: the class name.
    """
    tensors = _state_tensors(model)
    key = tuple((t.data_ptr(), version_counter(t), tuple(t.shape)) for _, t in tensors)
    cached = _FINGERPRINTS.get(model)
    if cached is None or cached[0] != key:
        digest = hashlib.sha256()
        total = torch.zeros((), dtype=torch.float64)
        scale = torch.zeros((), dtype=torch.float64)
        for tensor_name, tensor in tensors:
            digest.update(f"{tensor_name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            if tensor.is_floating_point():
                values = tensor.detach().double()
                magnitude = values.abs().sum()
                total += (values.sum() + magnitude).cpu()
                scale += magnitude.cpu()
        fingerprint = {
            "class": type(model).__name__,
            "architecture": digest.hexdigest()[:16],
            "weights": float(total),
            "weights_scale": float(scale),
        }
        _FINGERPRINTS[model] = (key, fingerprint)
        cached = _FINGERPRINTS[model]
    result = dict(cached[1])
    result["name"] = name or result["class"]
    return result


def fingerprint_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """What differs between the fingerprint a bank recorded and a model's: a list of sentences, empty when they match.

    Architectures must be equal; weights must agree within ``1e-6`` of the larger ``weights_scale``.
    """
    if expected.get("architecture") != actual.get("architecture"):
        return [
            f"model: the bank was built with a {expected.get('name')} ({expected.get('class')}, architecture "
            f"{expected.get('architecture')}), this is a {actual.get('class')} (architecture {actual.get('architecture')})"
        ]
    tolerance = 1e-6 * max(float(expected.get("weights_scale", 0.0)), float(actual.get("weights_scale", 0.0)), 1e-12)
    if abs(float(expected.get("weights", 0.0)) - float(actual.get("weights", 0.0))) > tolerance:
        return [
            f"model: same architecture ({expected.get('class')}) but other weights than the bank's {expected.get('name')}"
        ]
    return []
