"""Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map.

Guided backpropagation (Springenberg et al., "Striving for Simplicity: The All
Convolutional Net", arXiv:1412.6806) back-propagates through every ReLU only
the positive gradients of positive units:
``R_in = 1[x > 0] * 1[R_out > 0] * R_out``. Guided Grad-CAM (Selvaraju et al.,
"Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", arXiv:1610.02391, Sec. 3) multiplies that input gradient,
pixel by pixel, by the Grad-CAM map upsampled to the input.

The guided rule is installed without touching the model: :func:`guided_relus`
is a torch function mode, local to the thread that enters it, under which every
ReLU the forward pass runs (``nn.ReLU`` in place or not, ``F.relu``,
``torch.relu``, ``Tensor.relu_``) is recorded with the guided backward; it ends
with the ``with`` block, whatever ends it (an exception, Ctrl-C). No module is
replaced, so in-place ReLUs stay in place and the user's hooks on ReLU modules
still run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from camscope.engine.backward import input_gradient
from camscope.engine.maps import final_maps
from camscope.engine.method import CamContext, CamMethod, CamResult, register_method

__all__ = ["GuidedGradCAM", "guided_backprop", "guided_relus"]


class _GuidedReLU(torch.autograd.Function):
    """``max(x, 0)``, back-propagating ``1[out > 0] * max(grad, 0)``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0).to(grad.dtype)


class _GuidedReLUInPlace(torch.autograd.Function):
    """The in-place ReLU (``relu_``) with the guided backward; the tensor is marked as changed in place."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.mark_dirty(x)
        x.clamp_(min=0)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0).to(grad.dtype)


_OUT_OF_PLACE = frozenset({torch.relu, Tensor.relu})
_IN_PLACE = frozenset({torch.relu_, Tensor.relu_})


class _GuidedMode(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is F.relu:
            in_place = bool(kwargs.pop("inplace", args[1] if len(args) > 1 else False))
            func, args = (torch.relu_ if in_place else torch.relu), args[:1]
        relu = func in _OUT_OF_PLACE or func in _IN_PLACE
        if relu and isinstance(args[0], Tensor) and args[0].requires_grad and torch.is_grad_enabled():
            return (_GuidedReLUInPlace if func in _IN_PLACE else _GuidedReLU).apply(args[0])
        return func(*args, **kwargs)


@contextmanager
def guided_relus() -> Iterator[None]:
    """Inside the block, in this thread, every ReLU that autograd records back-propagates by the guided rule.

    ``R_in = 1[out > 0] * max(R_out, 0)`` (Springenberg et al., arXiv:1412.6806). The
    forward values are unchanged; nothing on the model changes. Other activations
    (GELU, SiLU, ReLU6) back-propagate as usual.

    Example:
        >>> import torch
        >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
        >>> with guided_relus():
        ...     y = (torch.relu(x) * torch.tensor([5.0, -1.0, 2.0])).sum()
        >>> torch.autograd.grad(y, x)[0].tolist()
        [0.0, 0.0, 2.0]
    """
    with _GuidedMode():
        yield


def guided_backprop(ctx: CamContext) -> Tensor:
    """The guided-backpropagation gradient of the target's score with respect to the inputs, ``[B, C, *spatial]``.

    One forward pass with autograd from the inputs (the capture hooks silent) under
    :func:`guided_relus`, one backward to the inputs; a target with ``[B, R]``
    components back-propagates their mean.
    """
    leaf = ctx.inputs.detach().clone().requires_grad_(True)
    with guided_relus():
        outputs = ctx.forward(leaf.clone(), grad=True)  # a copy: the model may change its input in place
    return input_gradient(ctx.target(outputs), leaf, "guided backpropagation")


@register_method
class GuidedGradCAM(CamMethod):
    r"""Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the upsampled Grad-CAM map.

    Papers: "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", arXiv:1610.02391; guided backpropagation from "Striving for
    Simplicity: The All Convolutional Net", arXiv:1412.6806.
    ``P = GB(x) * L``, ``[B, C, H, W]``, with ``GB`` the guided-backpropagation
    gradient of the score with respect to the input and
    ``L = rescale(upsample(ReLU(sum_k w_k A_k)))`` the Grad-CAM map at the input's
    resolution, in [0, 1] (``w_k = (1/Z) sum_ij dy/dA_k^ij``); the scale of ``L`` only
    scales ``P``.

    The paper shows ``P`` as an image (``extras["pixels"]``); camscope's one-channel
    map is its magnitude per pixel, ``raw = max_c |P_c|`` at the input's resolution
    (the saliency-map convention of Simonyan et al.), and ``maps`` that rescaled.
    ``extras`` also holds ``"guided_backprop"`` (``GB``) and ``"gradcam"`` (``L``).
    ``layer=`` is Grad-CAM's layer.

    Unlike pytorch-grad-cam 1.5.7's ``GuidedBackpropReLUModel`` (one image per
    call, its ReLU modules replaced by new non-in-place ``nn.ReLU`` afterwards, or
    left replaced if the call fails, their hooks lost, parameter gradients
    accumulated), the guided rule lives in a thread-local torch function mode that
    also covers functional ReLUs (see :func:`guided_relus`), batches are explained
    at once and the model is left as it was.

    Comparisons: the Grad-CAM factor has Grad-CAM's channel weights, so a Finer
    target (``y_c - gamma y_d``) gives Finer-CAM's weights there; guided
    backpropagation is not linear in the score (its clamp), so it back-propagates
    the comparison score itself. DiffCAM weights do not apply. With a target of
    several components and a non-default aggregation the guided pass runs once per
    component. Cost: the engine's Grad-CAM pass plus one forward and one backward
    pass to the input.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> e = camscope.explain(model, torch.randn(2, 3, 64, 64), method="guided-gradcam", target=[1, 4])
        >>> e.maps.shape, e.extras["pixels"].shape
        (torch.Size([2, 64, 64]), torch.Size([2, 3, 64, 64]))
    """

    name = "guided-gradcam"
    channel_weights = False
    display_name = "Guided Grad-CAM"
    linear_in_gradient = True

    def __call__(self, ctx: CamContext) -> CamResult:
        weights = ctx.require_gradients().mean(dim=ctx.spatial_dims, keepdim=True)
        heat = final_maps((weights * ctx.activations).sum(dim=1), ctx.inputs.shape[2:])
        guided = guided_backprop(ctx)
        pixels = guided * heat.unsqueeze(1).to(guided.dtype)
        return CamResult(
            raw=pixels.abs().amax(dim=1), extras={"pixels": pixels, "guided_backprop": guided, "gradcam": heat}
        )
