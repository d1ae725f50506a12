"""Devices: one check that a device named by the user exists here, before anything is moved to it.

``torch.device("cuda")`` accepts the name on a machine without a GPU; the failure comes
later, deep inside the first ``.to()``, as a long traceback. :func:`check_device` fails
first, with one line that says what is missing and what to use instead. The model loader,
the dataset passes, the command line and the explorer all call it.

Example:
    >>> check_device("cpu"), check_device(None)
    (device(type='cpu'), None)
    >>> try:
    ...     check_device("tpu")
    ... except Exception as error:
    ...     print(error)
    device='tpu' is not a device: use device='cpu' (or 'cuda', 'cuda:N', 'mps' where there is one)
"""

from __future__ import annotations

import torch

from camscope.errors import CamscopeError

__all__ = ["check_device"]

_USE = "use device='cpu' (or 'cuda', 'cuda:N', 'mps' where there is one)"


def check_device(device: str | torch.device | None) -> torch.device | None:
    """The device ``device`` names, checked to exist on this machine (None stays None).

    Checks: the name parses (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ...); CUDA is
    available and ``N`` is below the number of GPUs; MPS is available; any other
    type can hold a tensor (``meta`` cannot run a model and is refused).

    Raises:
        CamscopeError: one line, in the ``device=`` keyword's words (the command line
            shows them as ``--device``).

    Example:
        >>> check_device(torch.device("cpu")).type
        'cpu'
    """
    if device is None:
        return None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise CamscopeError(f"device={str(device)!r} is not a device: {_USE}") from None
    name = str(device)
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        _check_cuda(name, resolved)
    elif resolved.type == "mps":
        if not (torch.backends.mps.is_built() and torch.backends.mps.is_available()):
            raise CamscopeError(
                f"device={name!r}: Apple's MPS is not available here (it needs macOS on Apple silicon and a torch "
                "built with MPS): use device='cpu'"
            )
    elif resolved.type == "meta":
        raise CamscopeError(f"device={name!r} holds no data and cannot run a model: {_USE}")
    else:
        try:
            torch.empty(1, device=resolved)
        except (RuntimeError, AssertionError, NotImplementedError):
            raise CamscopeError(
                f"device={name!r} is not available in this torch build or on this machine: {_USE}"
            ) from None
    return resolved


def _check_cuda(name: str, device: torch.device) -> None:
    """A CUDA device: a CUDA build, a GPU, and an index below the number of GPUs."""
    if torch.version.cuda is None:
        raise CamscopeError(
            f"device={name!r}: this torch {torch.__version__} is built without CUDA (a CPU-only build): "
            "use device='cpu', or install a CUDA build of torch"
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise CamscopeError(f"device={name!r}: no CUDA GPU is visible here (no GPU or no driver): use device='cpu'")
    if device.index is not None and device.index >= count:
        gpus = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise CamscopeError(f"device={name!r}: this machine has {count} CUDA GPU(s), {gpus}: choose one of them")
