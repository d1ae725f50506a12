"""Lower-precision forward passes for dataset passes: ``torch.autocast`` on the model's forward only.

``precision="bf16"`` or ``"fp16"`` runs the model's forward under
``torch.autocast`` (convolutions and matrix products in the lower precision,
reductions and normalisations in float32, as autocast decides), while
everything a pass accumulates stays in its own precision: reference banks and
analyses add float64 statistics of the captured activations and maps. The
autocast region is exactly the model's ``forward`` (entered by a forward
pre-hook, left by a forward hook that runs on every path), so the
accumulators' own arithmetic is never autocast, and the model's output is
returned in float32. The hooks act only on the forward passes of the thread
that runs the pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from camscope.errors import CamscopeError
from camscope.locking import owned_by_this_thread

__all__ = ["PRECISIONS", "autocast_forward", "check_precision"]

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: Any, device: torch.device) -> str:
    """``precision`` (``None`` means ``"fp32"``) when ``device`` can autocast to it, else a clear error.

    Example:
        >>> import torch
        >>> check_precision("bf16", torch.device("cpu")), check_precision(None, torch.device("cpu"))
        ('bf16', 'fp32')
    """
    precision = "fp32" if precision is None else precision
    if precision not in PRECISIONS:
        raise CamscopeError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "fp32" and not torch.amp.autocast_mode.is_autocast_available(device.type):
        raise CamscopeError(f"precision {precision!r} needs autocast, which {device.type} does not offer: use fp32")
    return str(precision)


def _to_float32(output: Any) -> Any:
    if isinstance(output, torch.Tensor) and output.dtype in (torch.bfloat16, torch.float16):
        return output.float()
    if isinstance(output, tuple):
        return tuple(_to_float32(item) for item in output)
    if isinstance(output, list):
        return [_to_float32(item) for item in output]
    if isinstance(output, dict):
        return {key: _to_float32(item) for key, item in output.items()}
    return output


@contextmanager
def autocast_forward(model: nn.Module, precision: str, device: torch.device) -> Iterator[None]:
    """Run ``model``'s forward under ``torch.autocast`` at ``precision`` while the block runs (fp32: no change).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 2)
        >>> with autocast_forward(model, "bf16", torch.device("cpu")):
        ...     output = model(torch.ones(1, 4))
        >>> output.dtype, len(model._forward_hooks)
        (torch.float32, 0)
    """
    dtype = PRECISIONS[check_precision(precision, device)]
    if dtype is None:
        yield
        return
    active: list[torch.autocast] = []

    # Only this thread's forwards: a user's own inference of the same model in another thread is not autocast.
    @owned_by_this_thread
    def enter(_module: nn.Module, _args: Any) -> None:
        context = torch.autocast(device.type, dtype=dtype)
        context.__enter__()
        active.append(context)

    @owned_by_this_thread
    def leave(_module: nn.Module, _args: Any, output: Any) -> Any:
        if active:
            active.pop().__exit__(None, None, None)
        return _to_float32(output)

    handles = [model.register_forward_pre_hook(enter), model.register_forward_hook(leave, always_call=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        while active:
            active.pop().__exit__(None, None, None)
