"""ShapleyCAM: channel weights from the gradient and the Hessian-vector product of the score."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from camscope.engine.backward import check_second_derivative, model_backward
from camscope.engine.capture import register_owned_hook, split_output
from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.errors import CamscopeError

__all__ = ["ShapleyCAM", "differentiable_pass", "hessian_vector_product"]


def hessian_vector_product(
    grads: Tensor, layer_output: Tensor, activations: Tensor, channels_first: Callable[[Tensor], Tensor]
) -> Tensor | None:
    """``H A``: the gradients ``grads = d score / dA`` (channels first, with their graph) differentiated again.

    Args:
        grads: ``[B, K, *spatial]``, built with ``create_graph`` from ``layer_output``.
        layer_output: the layer's own output (a leaf of the graph).
        activations: ``A`` channels first, the vector of the product.
        channels_first: brings a tensor shaped like ``layer_output`` to ``[B, K, *spatial]``.

    Returns:
        ``[B, K, *spatial]``, or None where the gradients do not depend on the layer's
        output (a score that is piecewise linear in it, such as a logit after ReLU layers).

    Example:
        >>> import torch
        >>> a = torch.tensor([[1.0, 2.0]], requires_grad=True)
        >>> with torch.enable_grad():
        ...     (g,) = torch.autograd.grad((a**3).sum(), a, create_graph=True)  # g = 3a^2, H = 6 diag(a)
        ...     hessian_vector_product(g, a, a.detach(), lambda t: t).tolist()
        [[6.0, 24.0]]
    """
    if not grads.requires_grad:
        return None
    (product,) = torch.autograd.grad(
        grads, layer_output, grad_outputs=activations, retain_graph=True, allow_unused=True
    )
    return None if product is None else channels_first(product).detach()


def differentiable_pass(ctx: CamContext) -> tuple[Tensor, Tensor]:
    """``(output, scores)``: a forward pass of ``ctx.inputs`` whose layer output is a leaf that requires grad.

    For contexts made without the engine's second-order pass (a dataset analysis).
    Autograd records from the layer on; the layer passes a clone downstream, so
    in-place operations after it cannot change the leaf; the hook is removed on
    every path. Attention runs with the composite (math) kernel, whose backward
    can itself be differentiated.
    """
    module = dict(ctx.model.named_modules()).get(ctx.layer)
    if module is None or module is ctx.model:
        raise CamscopeError(f"{ctx.layer!r} is not a layer inside the model: pass the name of one of its modules")
    leaves: list[Tensor] = []

    def hook(_module: torch.nn.Module, _inputs: object, output: object) -> object:
        tensor, rebuild = split_output(output, ctx.layer)
        torch.set_grad_enabled(True)  # the extra passes run under no_grad: record from here on
        leaf = tensor.detach().requires_grad_(True)
        leaves.append(leaf)
        return rebuild(leaf.clone())

    handle = register_owned_hook(module, hook)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            outputs = ctx.forward(ctx.inputs)
    finally:
        handle.remove()
    with torch.enable_grad():
        scores = ctx.target(outputs)
    if not scores.requires_grad:
        raise CamscopeError(
            "the target score does not depend on the layer's activations through autograd (the model may detach "
            "or run under no_grad): choose another layer or a gradient-free method"
        )
    check_second_derivative(scores, leaves, [ctx.layer], "shapleycam")
    return leaves[0], scores.mean(dim=1) if scores.ndim == 2 else scores


@register_method
class ShapleyCAM(CamMethod):
    r"""ShapleyCAM (Cai 2025): channel weights from the gradient and a Hessian-vector product.

    Cai, "CAMs as Shapley Value-based Explainers", arXiv:2501.06261.

    The paper models the prediction as a cooperative game over the layer's
    activations and approximates the utility by its second-order Taylor
    expansion around ``A``; the Shapley value of element ``A_k^ij`` of a
    quadratic game is then ``A_k^ij (g - H A / 2)_k^ij``, with ``g = dy/dA`` and
    ``H`` the Hessian of the score with respect to ``A``. ShapleyCAM averages
    the bracket over positions, as Grad-CAM averages the gradient:

        ``w_k = (1/Z) sum_ij (dy/dA_k^ij - 1/2 (H A)_k^ij)``;  ``M = sum_k w_k A_k``

    ``H A`` is a Hessian-vector product: the engine keeps the graph of its
    backward pass (from the layer on only: no graph below the layer) and the
    gradients are differentiated once more, so ShapleyCAM costs one forward pass
    and two backward passes down to the layer (pytorch-grad-cam 1.5.7
    differentiates twice down to the input); a model torch cannot differentiate (an
    in-place operation on a tensor a backward needs) is one error from either pass
    (:func:`camscope.engine.backward.model_backward`). A custom ``torch.autograd.Function``
    marked ``@once_differentiable`` between the layer and the score has no second
    derivative: ShapleyCAM raises a :class:`~camscope.errors.CamscopeError` rather than
    return Grad-CAM's weights without a word
    (:func:`camscope.engine.backward.check_second_derivative`); a custom backward that
    leaves autograd in another way (numpy, ``.detach()``) cannot be seen from the graph
    and drops the term. Where the score is piecewise linear
    in ``A`` (ReLU networks and a logit) ``H A = 0`` and ShapleyCAM is Grad-CAM;
    the paper recommends its ReST utility, ``y_c + log softmax(y)_c``, which is a
    ``camscope.ScoreTarget(lambda y: y[:, c] + y.log_softmax(dim=1)[:, c])`` (pytorch-grad-cam's
    ``ClassifierOutputReST``). Equal to pytorch-grad-cam's ``ShapleyCAM``. For
    token layers the game is over the patch tokens (class and register tokens
    held fixed): ``A`` in ``H A`` is the grid of patch tokens, where
    pytorch-grad-cam also moves the prefix tokens.

    Targets: any differentiable score. The weights are linear in the score, so a
    Finer target with the paper's mean before the ReLU is explained with its
    averaged score (one gradient, one Hessian-vector product); its other
    aggregations take one pair per reference. DiffCAM's direction is not a
    gradient, so it does not apply.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> rest = camscope.ScoreTarget(lambda y: y[:, 3] + y.log_softmax(dim=1)[:, 3], name="ReST")
        >>> camscope.explain(model, torch.randn(2, 3, 64, 64), method="shapleycam", target=rest).weights.shape
        torch.Size([2, 512])
    """

    name = "shapleycam"
    display_name = "ShapleyCAM"
    linear_in_gradient = True
    second_order = True

    def __call__(self, ctx: CamContext) -> CamResult:
        layer_output = ctx.layer_output
        channels_first = ctx.channels_first or _same_layout(ctx)
        if layer_output is None:
            layer_output, scores = differentiable_pass(ctx)
            with torch.enable_grad(), model_backward([ctx.layer]):
                (native,) = torch.autograd.grad(scores.sum(), layer_output, create_graph=True)
                grads = channels_first(native)
        else:
            grads = ctx.require_gradients()
        with torch.enable_grad(), model_backward([ctx.layer]):
            product = hessian_vector_product(grads, layer_output, ctx.activations, channels_first)
        terms = grads.detach() if product is None else grads.detach() - 0.5 * product
        return CamResult(weights=terms.mean(dim=ctx.spatial_dims, keepdim=True))


def _same_layout(ctx: CamContext) -> Callable[[Tensor], Tensor]:
    """The identity for a context without a layout (its layer's output must be channels first already)."""

    def check(tensor: Tensor) -> Tensor:
        if tensor.shape != ctx.activations.shape:
            raise CamscopeError(
                f"shapleycam needs the layer's layout to bring its output {list(tensor.shape)} to the activations' "
                f"{list(ctx.activations.shape)}: call it through camscope.explain or camscope.Explainer"
            )
        return tensor

    return check
