"""Projection CAMs: Eigen-CAM and Eigen-Grad-CAM.

The map is the projection of each position's feature vector on the first
principal component of the (weighted) activations of the image. The
decomposition is a batched eigen-decomposition of the smaller Gram matrix
(``K x K`` channels or ``P x P`` positions) in float64: the same first
component as a reduced SVD, without ever forming a full ``P x P`` SVD
(pytorch-grad-cam's full-matrix SVD takes 15 s and 3 GB for one image at a
112 x 112 layer).
"""

from __future__ import annotations

import torch
from torch import Tensor

from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.errors import CamscopeError
from camscope.options import Option

__all__ = ["CENTER", "EigenCAM", "EigenGradCAM", "first_component_projection"]

#: The option of both projection methods.
CENTER = Option("center", bool, True, "centre each channel over positions before the decomposition")


def first_component_projection(features: Tensor, center: bool = True) -> Tensor:
    """Project every position on the first principal component, sign fixed.

    Args:
        features: ``[B, K, *spatial]`` (channels first).
        center: subtract each channel's mean over positions first (PCA, as
            pytorch-grad-cam); ``False`` decomposes the raw matrix (the Eigen-CAM
            paper's ``A = U S V^T``, ``L = A v_1``).

    Returns:
        ``[B, *spatial]``: ``X v_1`` with ``X`` the ``[P, K]`` matrix of each image
        (centred or not) and ``v_1`` its first right singular vector, signed so
        that the projection correlates positively with the mean over channels of
        ``features`` (ties: the largest entry is made positive). NaNs count as 0.

    The right singular vector comes from ``eigh(X^T X)`` when ``K <= P``, else the
    projection is ``sqrt(lambda_1) u_1`` from ``eigh(X X^T)``; both in float64
    (float32 on MPS), batched over images.
    """
    if features.ndim < 3:
        raise CamscopeError(f"expected activations [B, K, *spatial], got shape {list(features.shape)}")
    batch, channels = features.shape[:2]
    spatial = features.shape[2:]
    dtype = torch.float32 if features.device.type == "mps" else torch.float64
    matrix = torch.nan_to_num(features.detach().flatten(2).transpose(1, 2).to(dtype), nan=0.0)  # [B, P, K]
    reference = matrix.mean(dim=2)  # mean over channels, [B, P]
    if center:
        matrix = matrix - matrix.mean(dim=1, keepdim=True)
    positions = matrix.shape[1]
    if channels <= positions:
        gram = matrix.transpose(1, 2) @ matrix  # [B, K, K]
        _, vectors = torch.linalg.eigh(gram)
        projection = (matrix @ vectors[..., -1:]).squeeze(-1)
    else:
        gram = matrix @ matrix.transpose(1, 2)  # [B, P, P]
        values, vectors = torch.linalg.eigh(gram)
        projection = vectors[..., -1] * values[..., -1:].clamp(min=0).sqrt()
    centred_reference = reference - reference.mean(dim=1, keepdim=True)
    correlation = ((projection - projection.mean(dim=1, keepdim=True)) * centred_reference).sum(dim=1)
    peak = projection.gather(1, projection.abs().argmax(dim=1, keepdim=True)).squeeze(1)
    sign = torch.where(correlation != 0, correlation.sign(), peak.sign())
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    projection = projection * sign[:, None]
    return projection.reshape(batch, *spatial).to(features.dtype)


@register_method
class EigenCAM(CamMethod):
    r"""Eigen-CAM (Muhammad & Yeasin 2020): the first principal component of the activations.

    ``M = X v_1`` reshaped to the layer's grid, with ``X = [P, K]`` the
    activations of one image (each channel centred over positions by default, as
    pytorch-grad-cam 1.5.7 does; ``center=False`` is the paper's plain SVD) and
    ``v_1`` the first right singular vector. The sign of a singular vector is
    arbitrary; camscope fixes it so that ``M`` correlates positively with the
    mean activation ``(1/K) sum_k A_k`` (pytorch-grad-cam keeps whatever sign
    LAPACK returns, so its ReLU can erase the salient region). Equal to
    pytorch-grad-cam's ``get_2d_projection`` up to that sign.

    Eigen-CAM is class-agnostic: the target does not change the map. It has no
    channel weights (``Explanation.weights`` and ``contributions`` are None).

    Options:
        center: centre each channel over positions before the decomposition
            (default True).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> camscope.explain(model, torch.randn(2, 3, 64, 64), method="eigencam", layer="layer3").raw.shape
        torch.Size([2, 4, 4])
    """

    name = "eigencam"
    display_name = "Eigen-CAM"
    uses_gradients = False

    declared_options = (CENTER,)

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult(raw=first_component_projection(ctx.activations, self.options["center"]))


@register_method
class EigenGradCAM(CamMethod):
    r"""Eigen-Grad-CAM: Eigen-CAM of the gradient-weighted activations ``G * A``.

    ``M = X v_1`` with ``X`` the ``[P, K]`` matrix of ``dy/dA * A`` (centred by
    default), as pytorch-grad-cam 1.5.7's ``EigenGradCAM``. Unlike Eigen-CAM it
    depends on the target. The sign is fixed so that ``M`` correlates
    positively with ``(1/K) sum_k G_k A_k``, the (scaled) HiResCAM map, so the
    positive side is the evidence for the target.

    Options:
        center: centre each channel over positions first (default True).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> camscope.explain(model, torch.randn(1, 3, 64, 64), method="eigengradcam", layer="layer3", target=2).raw.shape
        torch.Size([1, 4, 4])
    """

    name = "eigengradcam"
    display_name = "Eigen-Grad-CAM"
    uses_gradients = True

    declared_options = (CENTER,)

    def __call__(self, ctx: CamContext) -> CamResult:
        weighted = ctx.require_gradients() * ctx.activations
        return CamResult(raw=first_component_projection(weighted, self.options["center"]))
