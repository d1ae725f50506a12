"""Grad-CAM Element-Wise: HiResCAM with a ReLU on every element before the sum over channels."""

from __future__ import annotations

import torch

from camscope.engine.method import CamContext, CamMethod, CamResult, register_method

__all__ = ["GradCAMElementWise"]


@register_method
class GradCAMElementWise(CamMethod):
    r"""Grad-CAM Element-Wise (Pillai & Pirsiavash 2021): HiResCAM's products clipped at zero before the sum.

    Pillai & Pirsiavash, "Explainable Models with Consistent Interpretations",
    AAAI 2021 (no arXiv version; AAAI-8236).

    ``M = sum_k ReLU(dy/dA_k * A_k)``: each element of the gradient-weighted
    activations is clipped at zero before the sum over channels (HiResCAM sums
    the signed products). As camscope's weights multiply ``A``, the pixel-wise
    weights are ``w_k^ij = dy/dA_k^ij`` where ``dy/dA_k^ij A_k^ij > 0``, else 0;
    ``Explanation.contributions`` are the per-channel sums of the clipped products.
    Equal to pytorch-grad-cam 1.5.7's ``GradCAMElementWise``.

    Targets: any. The weights are not linear in the gradient (the ReLU), so a
    Finer or other multi-component target back-propagates each comparison (one
    batched backward) and the per-comparison maps are combined by the target's
    ``aggregate``. DiffCAM's direction is not a gradient, so it does not apply.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> e = camscope.explain(model, torch.randn(2, 3, 64, 64), method="gradcam-elementwise", layer="layer3")
        >>> e.raw.shape, bool((e.raw >= 0).all())
        (torch.Size([2, 4, 4]), True)
    """

    name = "gradcam-elementwise"
    display_name = "Grad-CAM Element-Wise"

    def __call__(self, ctx: CamContext) -> CamResult:
        grads = ctx.require_gradients()
        positive = grads * ctx.activations > 0
        return CamResult(weights=torch.where(positive, grads, torch.zeros_like(grads)))
