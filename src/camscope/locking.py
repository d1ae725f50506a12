"""Locks and hooks for one model used from several threads.

Every camscope call that changes a model's train/eval mode or ``requires_grad``
flags, or installs forward hooks on it, holds the model's re-entrant lock
(:func:`model_lock`) for its whole duration, so concurrent calls on one model
object are serialised while calls on different models run in parallel. Hooks
are registered with :func:`register_owned_hook` (or wrapped by :func:`owned_by_this_thread`),
so a forward pass of the same module in another thread (a user's own inference) goes through
untouched.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["model_lock", "owned_by_this_thread", "register_owned_hook"]

_MODEL_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock of one model object.

    Every camscope call that changes a model's train/eval mode or ``requires_grad``
    flags, or installs forward hooks on it, holds this lock for its whole
    duration: concurrent calls on one model object are serialised, calls on
    different models run in parallel. The lock lives as long as the model.

    Example:
        >>> from torch import nn
        >>> model = nn.Linear(2, 2)
        >>> model_lock(model) is model_lock(model)
        True
    """
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.RLock()
        return lock


def owned_by_this_thread(hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook`` made to act only when called by the thread that wraps it (else it returns None).

    For hooks of any kind (``register_forward_pre_hook``, ``always_call`` forward hooks) that must leave other
    threads' forward passes of the same module alone.
    """
    owner = threading.get_ident()

    def owned(*args: Any) -> Any:
        if threading.get_ident() != owner:
            return None
        return hook(*args)

    return owned


def register_owned_hook(module: nn.Module, hook: Callable[..., Any]) -> torch.utils.hooks.RemovableHandle:
    """A forward hook that acts only on forward passes run by the thread that registers it.

    Forward passes of the same module in other threads (a user's own inference
    running beside a camscope call) go through untouched.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer, seen = nn.Linear(2, 2), []
        >>> handle = register_owned_hook(layer, lambda _m, _i, out: seen.append(out.shape))
        >>> _ = layer(torch.zeros(1, 2)); handle.remove()
        >>> seen
        [torch.Size([1, 2])]
    """
    return module.register_forward_hook(owned_by_this_thread(hook))
