"""Principal-component projections of per-image feature matrices, batched in torch.

Eigen-CAM, Eigen-Grad-CAM, Seg-Eigen-CAM and the ``eigen_smooth`` option project
each position's feature vector on the first principal component of the image's
``[P, K]`` matrix. The decomposition is a batched eigen-decomposition of the
smaller Gram matrix (``K x K`` channels or ``P x P`` positions) in float64: the
same first component as a reduced SVD, without ever forming a full ``P x P`` SVD
(pytorch-grad-cam's full-matrix SVD takes 15 s and 3 GB for one image at a
112 x 112 layer).
"""

from __future__ import annotations

import torch
from torch import Tensor

from camscope.errors import CamscopeError

__all__ = ["decomposition_dtype", "first_component_projection", "orient"]


def decomposition_dtype(device: torch.device) -> torch.dtype:
    """float64 for eigen-decompositions, float32 on MPS (which has no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


def orient(projection: Tensor, reference: Tensor) -> Tensor:
    """``projection`` ``[B, P]`` times a sign per image, so that it correlates positively with ``reference``.

    Where the correlation is zero, the entry of largest magnitude is made positive.

    Example:
        >>> import torch
        >>> orient(torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[0.0, 3.0, 1.0]])).tolist()
        [[-1.0, 2.0, -0.5]]
    """
    centred_reference = reference - reference.mean(dim=1, keepdim=True)
    correlation = ((projection - projection.mean(dim=1, keepdim=True)) * centred_reference).sum(dim=1)
    peak = projection.gather(1, projection.abs().argmax(dim=1, keepdim=True)).squeeze(1)
    sign = torch.where(correlation != 0, correlation.sign(), peak.sign())
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return projection * sign[:, None]


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

    Example:
        >>> import torch
        >>> features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[2.0, 4.0], [6.0, 8.0]]]])
        >>> [round(v, 3) for v in first_component_projection(features).flatten().tolist()]  # centred, scaled
        [-3.354, -1.118, 1.118, 3.354]
    """
    if features.ndim < 3:
        raise CamscopeError(f"expected activations [B, K, *spatial], got shape {list(features.shape)}")
    batch, channels = features.shape[:2]
    spatial = features.shape[2:]
    dtype = decomposition_dtype(features.device)
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
    return orient(projection, reference).reshape(batch, *spatial).to(features.dtype)
