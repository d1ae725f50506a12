"""Gradient CAMs: CAM, Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM and Smooth Grad-CAM++.

Each computes channel (or pixel) weights from the captured activations ``A``
and the gradients ``G = d score / d A`` (CAM from the classifier's weights);
the engine forms the signed map ``M = sum_k w_k * A_k``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.errors import CamscopeError
from camscope.options import Option

__all__ = ["CAM", "GradCAM", "GradCAMpp", "HiResCAM", "LayerCAM", "SmoothGradCAMpp", "XGradCAM"]


def _classifier_after(model: nn.Module, channels: int) -> nn.Linear:
    """The last linear layer of the model, which CAM needs to take ``channels`` features."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise CamscopeError("CAM needs a model that ends in a linear classifier; use gradcam for other models")
    classifier = linears[-1]
    if classifier.in_features != channels:
        raise CamscopeError(
            f"CAM needs the layer to feed global pooling and one linear layer, but the last linear layer takes "
            f"{classifier.in_features} features and the layer has {channels} channels: choose the last "
            "convolutional layer, or use gradcam (equal to CAM up to 1/Z there)"
        )
    return classifier


@register_method
class CAM(CamMethod):
    """Class activation mapping (Zhou et al. 2016).

    ``w_k^c = W[c, k]``, the classifier's weight, for a layer that feeds global
    average pooling and one linear layer. For any target that is a function of
    the logits (a class, a difference of classes), the weights are
    ``(d score / d logits) @ W``, so ``y_c - gamma y_d`` gives
    ``W[c] - gamma W[d]``.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> camscope.explain(model, torch.randn(1, 3, 64, 64), method="cam", layer="layer4").raw.shape
        torch.Size([1, 2, 2])
    """

    name = "cam"
    display_name = "CAM"
    uses_gradients = False
    linear_in_gradient = True

    def __call__(self, ctx: CamContext) -> CamResult:
        classifier = _classifier_after(ctx.model, ctx.activations.shape[1])
        with torch.enable_grad():
            logits = ctx.outputs.detach().requires_grad_(True)
            scores = ctx.target(logits)
            if scores.ndim == 2:
                scores = scores.mean(dim=1)
            (dscore,) = torch.autograd.grad(scores.sum(), logits)
        weights = dscore @ classifier.weight.detach()
        return CamResult(weights=ctx.expand(weights))


@register_method
class GradCAM(CamMethod):
    """Grad-CAM (Selvaraju et al. 2017).

    ``w_k = (1/Z) sum_ij dy/dA_k^ij``; ``M = sum_k w_k A_k``.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> camscope.explain(model, torch.randn(2, 3, 64, 64), method="gradcam").maps.shape
        torch.Size([2, 64, 64])
    """

    name = "gradcam"
    display_name = "Grad-CAM"
    linear_in_gradient = True

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult(weights=ctx.require_gradients().mean(dim=ctx.spatial_dims, keepdim=True))


def _gradcampp_alpha(grad2: Tensor, grad3: Tensor, activations: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Grad-CAM++ Eq. 19 with the exponential score: ``g^2 / (2 g^2 + sum_ab A_ab g^3)``; 0 where g = 0."""
    denominator = 2 * grad2 + activations.sum(dim=dims, keepdim=True) * grad3
    alpha = grad2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    return torch.where(grad2 != 0, alpha, torch.zeros_like(alpha))


@register_method
class GradCAMpp(CamMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018).

    ``w_k = sum_ij alpha_k^ij ReLU(dy/dA_k^ij)`` with
    ``alpha = g^2 / (2 g^2 + sum_ab A_k^ab g^3)`` (the paper's closed form for
    an exponential score, as in the reference code and pytorch-grad-cam);
    ``alpha = 0`` where the gradient is zero. Unlike pytorch-grad-cam 1.5.7, no
    ``eps = 1e-6`` is added to the denominator (it biases layers with small
    gradients); unlike torchcam 0.5.0, the sum over positions multiplies the
    activations only (torchcam sums ``A * g^3``, and its in-place division on a
    masked copy leaves ``alpha = g^2``).
    """

    name = "gradcampp"
    display_name = "Grad-CAM++"

    def __call__(self, ctx: CamContext) -> CamResult:
        grads = ctx.require_gradients()
        grad2 = grads.pow(2)
        alpha = _gradcampp_alpha(grad2, grad2 * grads, ctx.activations, ctx.spatial_dims)
        weights = (alpha * grads.clamp(min=0)).sum(dim=ctx.spatial_dims, keepdim=True)
        return CamResult(weights=weights)


@register_method
class XGradCAM(CamMethod):
    """XGrad-CAM (Fu et al. 2020).

    ``w_k = sum_ij (A_k^ij / sum_ab A_k^ab) dy/dA_k^ij`` (a channel whose
    activations sum to zero gets weight 0).
    """

    name = "xgradcam"
    display_name = "XGrad-CAM"
    linear_in_gradient = True

    def __call__(self, ctx: CamContext) -> CamResult:
        dims = ctx.spatial_dims
        total = ctx.activations.sum(dim=dims, keepdim=True)
        share = ctx.activations / torch.where(total != 0, total, torch.ones_like(total))
        return CamResult(weights=(share * ctx.require_gradients()).sum(dim=dims, keepdim=True))


@register_method
class LayerCAM(CamMethod):
    """LayerCAM (Jiang et al. 2021).

    Pixel-wise weights ``w_k^ij = ReLU(dy/dA_k^ij)``; ``M = sum_k w_k A_k``.
    """

    name = "layercam"
    display_name = "LayerCAM"

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult(weights=ctx.require_gradients().clamp(min=0))


@register_method
class HiResCAM(CamMethod):
    """HiResCAM (Draelos & Carin 2020), the "pixel-wise Grad-CAM" of the IFA paper.

    ``M = sum_k (dy/dA_k) * A_k`` element-wise; its sum over pixels equals the
    logit change along A for a layer followed by linear operations.
    """

    name = "hirescam"
    display_name = "HiResCAM"
    linear_in_gradient = True

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult(weights=ctx.require_gradients())


@register_method
class SmoothGradCAMpp(CamMethod):
    """Smooth Grad-CAM++ (Omeiza et al. 2019).

    Grad-CAM++ with the gradient powers averaged over ``samples`` noisy copies
    ``x + N(0, std^2)`` of the input: ``alpha`` uses the means of ``g^2`` and
    ``g^3``, the ReLU term the mean of ``g``; activations are those of the
    clean input. The noisy copies of a batch run as one batch per sample draw.

    Options:
        samples: number of noisy copies (default 4, as torchcam).
        std: standard deviation of the noise (default 0.3, as torchcam).
        generator: a ``torch.Generator`` for reproducible noise.
    """

    name = "smoothgradcampp"
    display_name = "Smooth Grad-CAM++"
    declared_options = (
        Option("samples", int, 4, "number of noisy copies of the input", positive=True),
        Option("std", float, 0.3, "standard deviation of the input noise", min=0),
        Option("generator", torch.Generator, None, "random generator for reproducible noise"),
    )

    def __call__(self, ctx: CamContext) -> CamResult:
        samples, std, generator = self.options["samples"], self.options["std"], self.options["generator"]
        grad1 = torch.zeros_like(ctx.activations)
        grad2 = torch.zeros_like(ctx.activations)
        grad3 = torch.zeros_like(ctx.activations)
        for _ in range(samples):
            noise = torch.randn(ctx.inputs.shape, generator=generator, device=ctx.inputs.device, dtype=ctx.inputs.dtype)
            _, grads = ctx.gradients_at(ctx.inputs + std * noise)
            grad1 += grads
            grad2 += grads.pow(2)
            grad3 += grads.pow(3)
        grad1, grad2, grad3 = grad1 / samples, grad2 / samples, grad3 / samples
        alpha = _gradcampp_alpha(grad2, grad3, ctx.activations, ctx.spatial_dims)
        weights = (alpha * grad1.clamp(min=0)).sum(dim=ctx.spatial_dims, keepdim=True)
        return CamResult(weights=weights)
