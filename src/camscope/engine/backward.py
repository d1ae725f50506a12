"""A backward pass through the model, where torch's failure of the model's own graph becomes one clear error.

The engine's gradients and the methods that differentiate the model themselves (ShapleyCAM's
second derivative, Grad-Rollout, LeGrad) run their ``torch.autograd.grad`` calls inside
:func:`model_backward`, so a model that torch itself cannot differentiate gives the same one line
whichever method meets it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from camscope.errors import CamscopeError

__all__ = ["in_place_failure", "input_gradient", "model_backward"]


#: What torch says when an in-place operation changed a tensor its backward needs.
_IN_PLACE = "modified by an inplace operation"
#: Other failures of the model's own graph (it detaches the output, or runs under no_grad).
_GRAPH_FAILURES = ("does not require grad", "backward through the graph a second time")


def in_place_failure(error: BaseException) -> bool:
    """Whether torch's backward failed because an in-place operation changed a tensor it needs (no retry helps)."""
    return isinstance(error, RuntimeError) and _IN_PLACE in str(error)


@contextmanager
def model_backward(layers: Sequence[str]) -> Iterator[None]:
    """Run a backward through the model to ``layers``; torch's failure of the model's own graph becomes one line.

    A model whose backward torch itself cannot compute (an in-place operation after
    the layer, such as ``x.relu_(); x.mul_(2.0)``, changes a tensor that ReLU's
    backward needs; or the model detaches its output) raises a ``RuntimeError`` in
    ``torch.autograd.grad``; here it becomes a :class:`CamscopeError` that says what
    happened and what to do: a gradient-free method, or an out-of-place operation.

    Example:
        >>> import torch
        >>> x = torch.ones(2, requires_grad=True)
        >>> y = x.exp()
        >>> _ = y.mul_(2.0)  # exp's backward needs its output: now changed
        >>> with model_backward(["layer4"]):
        ...     _ = torch.autograd.grad(y.sum(), x)
        Traceback (most recent call last):
        ...
        camscope.errors.CamscopeError: the model cannot be differentiated down to layer 'layer4': an in-place operation after the layer (such as x.relu_(); x.mul_(2.0)) modified the output of Exp, which autograd needs for the gradient. Use a gradient-free method such as method='scorecam' (or 'ablationcam', 'eigencam'), or make that operation out of place in the model (x = x.relu() instead of x.relu_())
    """
    try:
        yield
    except RuntimeError as error:
        text = str(error)
        where = ", ".join(repr(name) for name in layers)
        advice = (
            "Use a gradient-free method such as method='scorecam' (or 'ablationcam', 'eigencam'), or make that "
            "operation out of place in the model (x = x.relu() instead of x.relu_())"
        )
        if in_place_failure(error):
            found = re.search(r"output \d+ of (\w+)", text)
            what = f"the output of {found.group(1)}" if found else "a tensor"
            raise CamscopeError(
                f"the model cannot be differentiated down to layer {where}: an in-place operation after the layer "
                f"(such as x.relu_(); x.mul_(2.0)) modified {what}, which autograd needs for the gradient. {advice}"
            ) from error
        if any(failure in text for failure in _GRAPH_FAILURES):
            raise CamscopeError(
                f"the model cannot be differentiated down to layer {where} (torch: {text.split('.')[0]}): the "
                "model detaches its output, runs under torch.no_grad, or changes its tensors in place. "
                + advice.replace("that operation", "those operations")
            ) from error
        raise


def input_gradient(scores: Tensor, inputs: Tensor, method: str) -> Tensor:
    """``d (sum_b s_b) / d inputs`` of the target's scores ``s`` (``[B]``, or ``[B, K]`` averaged over ``K``).

    For the methods that differentiate down to the input (FullGrad, Guided Grad-CAM); a score that does not
    depend on ``inputs`` through autograd is one clear error naming ``method``.

    Example:
        >>> x = torch.ones(2, 3, requires_grad=True)
        >>> input_gradient((2 * x).sum(dim=1), x, "FullGrad").tolist()
        [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
    """
    if scores.ndim == 2:
        scores = scores.mean(dim=1)
    if not scores.requires_grad:
        raise CamscopeError(
            f"{method} differentiates the target's score with respect to the inputs, but the score does not "
            "depend on them through autograd (the model detaches or runs under no_grad)"
        )
    (gradient,) = torch.autograd.grad(scores.sum(), inputs)
    return gradient
