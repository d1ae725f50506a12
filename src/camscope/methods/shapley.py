"""ShapleyCAM: channel weights from the gradient and the Hessian-vector product of the score."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from camscope.engine.capture import register_owned_hook, split_output
from camscope.engine.maps import aggregate_maps
from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.errors import CamscopeError

__all__ = ["ShapleyCAM", "differentiable_pass", "shapley_terms"]


def differentiable_pass(ctx: CamContext) -> tuple[Tensor, Tensor]:
    """``(A, outputs)``: one forward pass of ``ctx.inputs`` whose layer output ``A`` is a leaf that requires grad.

    Autograd records from the layer on only. The layer passes a clone of ``A``
    downstream, so in-place operations after it cannot change ``A``; the hook is
    removed on every path. Attention runs with the composite (math) kernel, whose
    backward can itself be differentiated.
    """
    module = dict(ctx.model.named_modules()).get(ctx.layer)
    if module is None or module is ctx.model:
        raise CamscopeError(f"{ctx.layer!r} is not a layer inside the model: pass the name of one of its modules")
    leaves: list[Tensor] = []

    def hook(_module: torch.nn.Module, _inputs: object, output: object) -> object:
        tensor, rebuild = split_output(output, ctx.layer)
        torch.set_grad_enabled(True)  # the engine's extra passes run under no_grad; record from here on
        leaf = tensor.detach().requires_grad_(True)
        leaves.append(leaf)
        return rebuild(leaf.clone())

    handle = register_owned_hook(module, hook)
    try:
        # Fused attention kernels have no second derivative: the composite one has.
        with sdpa_kernel(SDPBackend.MATH):
            outputs = ctx.forward(ctx.inputs)
    finally:
        handle.remove()
    return leaves[0], outputs


def shapley_terms(scores: Tensor, activations: Tensor) -> Tensor:
    """``g - H A / 2`` for a score ``[B]`` built from ``activations`` (a leaf): ``g = d score / dA``, ``H`` its Hessian.

    ``H A`` is a Hessian-vector product (a second backward through the first one's
    graph); it is zero where the score is piecewise linear in ``A`` (ReLU layers
    and a logit).

    Example:
        >>> import torch
        >>> a = torch.tensor([[1.0, 2.0]], requires_grad=True)
        >>> with torch.enable_grad():
        ...     shapley_terms((a**2).sum(dim=1), a).tolist()  # g = 2a, H = 2I: 2a - a
        [[1.0, 2.0]]
    """
    (grads,) = torch.autograd.grad(scores.sum(), activations, create_graph=True)
    hvp = None
    if grads.requires_grad:
        (hvp,) = torch.autograd.grad(
            grads, activations, grad_outputs=activations.detach(), retain_graph=True, allow_unused=True
        )
    if hvp is None:
        return grads.detach()
    return (grads - 0.5 * hvp).detach()


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

    ``H A`` is a Hessian-vector product: one extra forward pass, recorded by
    autograd from the layer on, and two backward passes down to the layer (not
    below it, unlike pytorch-grad-cam 1.5.7, which differentiates down to the
    input). Where the score is piecewise linear in ``A`` (ReLU networks and a
    logit) ``H A = 0`` and ShapleyCAM is Grad-CAM; the paper recommends its ReST
    utility, ``y_c + log softmax(y)_c``, which is a
    ``camscope.ScoreTarget(lambda y: y[:, c] + y.log_softmax(dim=1)[:, c])`` (pytorch-grad-cam's
    ``ClassifierOutputReST``). Equal to pytorch-grad-cam's ``ShapleyCAM``.

    Targets: any differentiable score. The weights are linear in the score, so a
    Finer target with the paper's mean before the ReLU is explained with its
    averaged score (one gradient and one Hessian-vector product); its other
    aggregations take one pair per reference and return the combined map without
    channel weights. DiffCAM's direction is not a gradient, so it does not apply.

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
    # The engine's gradients have no graph, so the method differentiates its own pass twice.
    uses_gradients = False

    def __call__(self, ctx: CamContext) -> CamResult:
        leaf, outputs = differentiable_pass(ctx)
        with torch.enable_grad():
            scores = ctx.target(outputs)
            if not scores.requires_grad:
                raise CamscopeError(
                    "the target score does not depend on the layer's activations through autograd (the model may "
                    "detach or run under no_grad): choose another layer or a gradient-free method"
                )
            aggregate = getattr(ctx.target, "aggregate", "mean-before-relu")
            if scores.ndim == 1 or aggregate == "mean-before-relu":
                components = [scores if scores.ndim == 1 else scores.mean(dim=1)]
            else:
                components = list(scores.unbind(dim=1))
            weights = [self._channels_first(ctx, shapley_terms(score, leaf)) for score in components]
        dims = ctx.spatial_dims
        if len(weights) == 1:
            return CamResult(weights=weights[0].mean(dim=dims, keepdim=True))
        maps = torch.stack([(w.mean(dim=dims, keepdim=True) * ctx.activations).sum(dim=1) for w in weights])
        return CamResult(raw=aggregate_maps(maps, aggregate))

    @staticmethod
    def _channels_first(ctx: CamContext, tensor: Tensor) -> Tensor:
        converted = ctx.channels_first(tensor) if ctx.channels_first is not None else tensor
        if converted.shape != ctx.activations.shape:
            raise CamscopeError(
                f"shapleycam needs the layer's layout to bring its output {list(tensor.shape)} to the activations' "
                f"{list(ctx.activations.shape)}: call it through camscope.explain or camscope.Explainer"
            )
        return converted.to(ctx.activations.dtype)
