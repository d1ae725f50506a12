"""Seg-Eigen-CAM: Eigen-CAM of the activations weighted by the absolute gradients, sign set by the peak."""

from __future__ import annotations

import torch
from torch import Tensor

from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.engine.projection import first_component_projection

__all__ = ["SegEigenCAM", "peak_sign"]


def peak_sign(projection: Tensor) -> Tensor:
    """Seg-Eigen-CAM's sign correction (Eq. 13): each map negated where ``|min| > |max|``.

    Example:
        >>> import torch
        >>> peak_sign(torch.tensor([[[-3.0, 1.0]], [[-1.0, 2.0]]])).tolist()
        [[[3.0, -1.0]], [[-1.0, 2.0]]]
    """
    flat = projection.flatten(1)
    flip = flat.amin(dim=1).abs() > flat.amax(dim=1).abs()
    return torch.where(flip.reshape(-1, *([1] * (projection.ndim - 1))), -projection, projection)


@register_method
class SegEigenCAM(CamMethod):
    r"""Seg-Eigen-CAM (Chung & Ying 2025): Eigen-CAM of ``|dy/dA| * A``, its strongest response made positive.

    Chung & Ying, "Seg-Eigen-CAM: Eigen-Value-Based Visual Explanations for
    Semantic Segmentation Models", Applied Sciences 15(13):7562, 2025
    (doi:10.3390/app15137562; no arXiv version).

    ``M = X v_1`` with ``X`` the ``[P, K]`` matrix of ``|dy/dA| * A`` (Eq. 10:
    absolute gradients, so negative evidence is kept), each channel centred over
    positions, and ``v_1`` its first right singular vector (Eq. 11-12), negated
    where its most negative value outweighs its most positive one (Eq. 13:
    ``|min M| > |max M|``), so the strongest response is positive. Equal to
    pytorch-grad-cam 1.5.7's ``SegEigenCAM``, sign included. For segmentation,
    explain a class's score summed over a region with
    ``target=camscope.ScoreTarget(lambda out: (out[:, c] * mask).sum(dim=(1, 2)))``.

    Targets: any. ``|G|`` is not linear in the gradient, so each component of a
    Finer target is back-propagated (one batched backward) and the projections
    combined by the target's ``aggregate``. There are no channel weights
    (``Explanation.weights`` is None), so DiffCAM's direction does not apply.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> camscope.explain(model, torch.randn(2, 3, 64, 64), method="segeigencam", layer="layer3").raw.shape
        torch.Size([2, 4, 4])
    """

    name = "segeigencam"
    channel_weights = False
    display_name = "Seg-Eigen-CAM"

    def __call__(self, ctx: CamContext) -> CamResult:
        weighted = ctx.require_gradients().abs() * ctx.activations
        return CamResult(raw=peak_sign(first_component_projection(weighted, center=True)))
