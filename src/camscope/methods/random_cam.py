"""Random-CAM: uniformly random channel weights, the baseline every map should beat."""

from __future__ import annotations

import torch

from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.options import Option

__all__ = ["RandomCAM"]


@register_method
class RandomCAM(CamMethod):
    r"""Random-CAM: ``w_k ~ U(-1, 1)`` independently per image and channel; ``M = sum_k w_k A_k``.

    A baseline with no paper of its own: the map keeps the layer's spatial
    structure but no evidence for any class, which is what a randomisation test
    compares with (Adebayo et al., "Sanity Checks for Saliency Maps",
    arXiv:1810.03292). pytorch-grad-cam 1.5.7's ``RandomCAM`` draws the same
    distribution with NumPy's global generator; camscope draws on the model's
    device with ``generator`` (or torch's global generator), without computing
    gradients.

    Targets: the weights ignore the target, so Finer and DiffCAM comparisons do
    not change the map.

    Options:
        generator: a ``torch.Generator`` on the activations' device for
            reproducible weights (None: torch's global generator).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> e = camscope.explain(model, torch.randn(2, 3, 64, 64), method="randomcam",
        ...                      generator=torch.Generator().manual_seed(0))
        >>> e.weights.shape, bool(e.weights.abs().max() <= 1)
        (torch.Size([2, 512]), True)
    """

    name = "randomcam"
    display_name = "Random-CAM"
    uses_gradients = False
    declared_options = (Option("generator", torch.Generator, None, "random generator for reproducible weights"),)

    def __call__(self, ctx: CamContext) -> CamResult:
        activations = ctx.activations
        dtype = torch.promote_types(activations.dtype, torch.float32)
        uniform = torch.rand(
            activations.shape[:2], generator=self.options["generator"], device=activations.device, dtype=dtype
        )
        return CamResult(weights=ctx.expand((2 * uniform - 1).to(activations.dtype)))
