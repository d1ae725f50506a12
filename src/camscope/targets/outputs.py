"""How a model's outputs become the tensor a target scores.

Classifiers return a tensor, a tuple, a dict (``logits``/``out``) or an object with
``.logits`` (Hugging Face); :func:`output_tensor` finds the score tensor in all of
them. Targets that read something else (a detector's boxes, see
:mod:`camscope.targets.detection`) override :meth:`camscope.targets.base.Target.read`.

Example:
    >>> import torch
    >>> output_tensor({"out": torch.zeros(1, 21, 8, 8), "aux": torch.ones(1, 21, 8, 8)}).sum()
    tensor(0.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from camscope.errors import CamscopeError

__all__ = ["TargetWarning", "is_detections", "output_tensor"]

_DETECTION_KEYS = {"boxes", "scores"}


class TargetWarning(UserWarning):
    """A target scores 0 on the explained inputs for part of what it names (a box that matches no detection,
    an empty predicted region): those parts get no gradient and an empty map."""


def is_detections(outputs: Any) -> bool:
    """Whether ``outputs`` look like torchvision detections: a list of dicts with ``boxes`` and ``scores``.

    Example:
        >>> import torch
        >>> is_detections([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}])
        True
    """
    return (
        isinstance(outputs, (list, tuple))
        and bool(outputs)
        and all(isinstance(item, Mapping) and set(item) >= _DETECTION_KEYS for item in outputs)
    )


def output_tensor(outputs: Any) -> Tensor:
    """The score tensor of a model's outputs.

    Handles plain tensors, tuples and lists (first element), dicts (``logits``
    or ``out``, else the only value) and objects with a ``.logits`` attribute
    (Hugging Face).

    Raises:
        CamscopeError: where no score tensor can be found; detections (a list of
            dicts with boxes) are named with the target that reads them.

    Example:
        >>> import torch
        >>> logits = torch.zeros(2, 10)
        >>> output_tensor({"logits": logits, "aux": None}) is logits, output_tensor((logits, "extra")) is logits
        (True, True)
    """
    if isinstance(outputs, Tensor):
        return outputs
    if hasattr(outputs, "logits") and isinstance(outputs.logits, Tensor):
        return outputs.logits
    if is_detections(outputs):
        raise CamscopeError(
            "the model returns detections (a list of dicts with boxes, labels and scores), not class scores: "
            "explain a box with target=camscope.BoxTarget(labels=..., boxes=...)"
        )
    if isinstance(outputs, dict):
        for key in ("logits", "out"):
            if key in outputs:
                return output_tensor(outputs[key])
        if len(outputs) == 1:
            return output_tensor(next(iter(outputs.values())))
        raise CamscopeError(
            f"the model returns a dict with keys {sorted(outputs)}; camscope looks for 'logits' or 'out': "
            "wrap the model so that it returns the score tensor"
        )
    if isinstance(outputs, (tuple, list)) and outputs:
        return output_tensor(outputs[0])
    raise CamscopeError(f"cannot find a score tensor in model outputs of type {type(outputs).__name__}")
