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
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from camscope.errors import CamscopeError

__all__ = [
    "check_second_derivative",
    "in_place_failure",
    "input_gradient",
    "model_backward",
    "once_differentiable_functions",
]


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


#: The code of the backward that ``@once_differentiable`` wraps a Function's backward in (one code for all).
_ONCE_DIFFERENTIABLE = once_differentiable(lambda *arguments: arguments).__code__


def _marked_once_differentiable(node: Any) -> bool:
    """Whether ``node`` is the backward of a custom ``torch.autograd.Function`` marked ``@once_differentiable``."""
    backward = getattr(getattr(node, "_forward_cls", None), "backward", None)
    while backward is not None:
        if getattr(backward, "__code__", None) is _ONCE_DIFFERENTIABLE:
            return True
        backward = getattr(backward, "__wrapped__", None)
    return False


def once_differentiable_functions(outputs: Tensor, leaves: Sequence[Tensor]) -> list[str]:
    """The custom autograd Functions marked ``@once_differentiable`` on the graph's paths from ``leaves`` to ``outputs``.

    Their backward runs without autograd, so the gradient that flows through them has no
    derivative of its own: a second derivative (a Hessian-vector product) through them
    is lost, silently where nothing downstream of them requires grad. Functions on
    branches that do not reach the leaves change nothing and are not listed.

    Example:
        >>> from torch.autograd.function import once_differentiable
        >>> class Cube(torch.autograd.Function):
        ...     @staticmethod
        ...     def forward(ctx, x):
        ...         ctx.save_for_backward(x)
        ...         return x**3
        ...     @staticmethod
        ...     @once_differentiable
        ...     def backward(ctx, grad):
        ...         return 3 * ctx.saved_tensors[0] ** 2 * grad
        >>> a = torch.ones(3, requires_grad=True)
        >>> once_differentiable_functions(Cube.apply(a).sum(), [a]), once_differentiable_functions((a**3).sum(), [a])
        (['Cube'], [])
    """
    root = outputs.grad_fn
    if root is None:
        return []
    leaf_ids = {id(leaf) for leaf in leaves}
    reaches: dict[Any, bool] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:  # iterative post-order: a deep model's graph is deeper than Python's recursion limit
        node, expanded = stack.pop()
        children = [child for child, _ in node.next_functions if child is not None]
        if expanded:
            leaf = id(getattr(node, "variable", None)) in leaf_ids
            reaches[node] = leaf or any(reaches.get(child, False) for child in children)
        elif node not in reaches:
            stack.append((node, True))
            stack.extend((child, False) for child in children if child not in reaches)
    found = (_function_name(node) for node, reached in reaches.items() if reached and _marked_once_differentiable(node))
    return list(dict.fromkeys(found))


def _function_name(node: Any) -> str:
    """The name of the Function whose backward ``node`` is (or of the node's own type)."""
    forward = getattr(node, "_forward_cls", None)
    return forward.__name__ if forward is not None else type(node).__name__


def check_second_derivative(scores: Tensor, leaves: Sequence[Tensor], layers: Sequence[str], method: str) -> None:
    """Raise a :class:`CamscopeError` if the scores' gradient at ``leaves`` cannot be differentiated again.

    For the methods that take a second derivative through the model (ShapleyCAM's
    Hessian-vector product): a custom ``torch.autograd.Function`` marked
    ``@once_differentiable`` between the layers and the score would drop the
    second-order term without a word. (A custom backward that leaves autograd
    in other ways, through numpy or ``.detach()``, cannot be seen from the graph.)

    Example:
        >>> a = torch.ones(2, requires_grad=True)
        >>> check_second_derivative((a**3).sum(), [a], ["layer4"], "shapleycam")  # differentiable twice: no error
    """
    found = once_differentiable_functions(scores, leaves)
    if found:
        where = ", ".join(repr(name) for name in layers)
        raise CamscopeError(
            f"{method} differentiates the gradient once more (a second derivative), but the backward of "
            f"{', '.join(found)} (a torch.autograd.Function marked @once_differentiable) lies between layer {where} "
            "and the score, and torch cannot differentiate it: the second-order term would be lost. Explain a "
            "layer after it, write its backward with differentiable torch operations (without "
            "@once_differentiable), or use method='gradcam' (the same map without the second-order term)"
        )
