"""KPCA-CAM: Eigen-CAM with kernel PCA, batched in torch."""

from __future__ import annotations

import torch
from torch import Tensor

from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.engine.projection import decomposition_dtype, orient
from camscope.options import Option

__all__ = ["KERNELS", "KPCACAM", "kernel_matrix", "kernel_pca_projection"]

#: The kernels of KPCA-CAM (scikit-learn's names and formulas; degree 3 and coef0 1 as its defaults).
KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


def kernel_matrix(points: Tensor, kernel: str, gamma: float) -> Tensor:
    """The ``[B, P, P]`` kernel matrix of ``[B, P, K]`` points, as scikit-learn's ``pairwise_kernels``.

    ``linear``: ``<x, y>``; ``poly``: ``(gamma <x, y> + 1)^3``; ``sigmoid``:
    ``tanh(gamma <x, y> + 1)``; ``rbf``: ``exp(-gamma |x - y|^2)``; ``cosine``:
    ``<x, y> / (|x| |y|)`` (0 for a zero vector).

    Example:
        >>> import torch
        >>> kernel_matrix(torch.tensor([[[1.0, 0.0], [0.0, 2.0]]]), "rbf", 0.5).round(decimals=4)  # exp(-2.5)
        tensor([[[1.0000, 0.0821],
                 [0.0821, 1.0000]]])
    """
    gram = points @ points.transpose(1, 2)
    if kernel == "linear":
        return gram
    if kernel == "poly":
        return (gamma * gram + 1.0).pow(3)
    if kernel == "sigmoid":
        return torch.tanh(gamma * gram + 1.0)
    squared = gram.diagonal(dim1=1, dim2=2)
    if kernel == "rbf":
        distances = (squared[:, :, None] + squared[:, None, :] - 2 * gram).clamp(min=0)
        return torch.exp(-gamma * distances)
    norms = squared.sqrt()
    outer = norms[:, :, None] * norms[:, None, :]
    return torch.where(outer > 0, gram / torch.where(outer > 0, outer, torch.ones_like(outer)), 0.0)


def kernel_pca_projection(features: Tensor, kernel: str = "sigmoid", gamma: float | None = None) -> Tensor:
    """Every position's score on the first kernel principal component, per image.

    Args:
        features: ``[B, K, *spatial]``.
        kernel: one of :data:`KERNELS`.
        gamma: the kernel's scale (None: ``1/K``, scikit-learn's default).

    Returns:
        ``[B, *spatial]``: ``sqrt(lambda_1) v_1`` with ``(lambda_1, v_1)`` the top
        eigenpair of the double-centred kernel matrix ``H K H`` (``H = I - 11^T/P``)
        of the positions' channel-centred feature vectors, which is scikit-learn's
        ``KernelPCA(n_components=1).fit_transform``; signed so that it correlates
        positively with the mean over channels of ``features``. One batched
        ``eigh`` of ``[B, P, P]`` in float64 (float32 on MPS).
    """
    batch, channels = features.shape[:2]
    spatial = features.shape[2:]
    dtype = decomposition_dtype(features.device)
    points = torch.nan_to_num(features.detach().flatten(2).transpose(1, 2).to(dtype), nan=0.0)  # [B, P, K]
    reference = points.mean(dim=2)
    points = points - points.mean(dim=1, keepdim=True)
    matrix = kernel_matrix(points, kernel, 1.0 / channels if gamma is None else gamma)
    # Double centring, as scikit-learn's KernelCenterer: K - row means - column means + grand mean.
    rows = matrix.mean(dim=2, keepdim=True)
    matrix = matrix - rows - matrix.mean(dim=1, keepdim=True) + rows.mean(dim=1, keepdim=True)
    values, vectors = torch.linalg.eigh(matrix)
    projection = vectors[..., -1] * values[..., -1:].clamp(min=0).sqrt()
    return orient(projection, reference).reshape(batch, *spatial).to(features.dtype)


@register_method
class KPCACAM(CamMethod):
    r"""KPCA-CAM (Karmani et al. 2024): Eigen-CAM with the first kernel principal component.

    Karmani, Sivakaran, Prasad, Ali, Yang & Tang, "KPCA-CAM: Visual
    Explainability of Deep Computer Vision Models using Kernel PCA",
    arXiv:2410.00267.

    Eigen-CAM with the principal component taken in a kernel's feature space:
    the positions' feature vectors ``x_p`` (rows of the ``[P, K]`` activations of
    one image, each channel centred over positions) give the kernel matrix
    ``K_pq = k(x_p, x_q)``, which is double-centred; the map is the positions'
    scores on the first kernel principal component, ``M = sqrt(lambda_1) v_1``.
    Equal to pytorch-grad-cam 1.5.7's ``KPCA_CAM`` (scikit-learn's ``KernelPCA``)
    up to the sign, which camscope fixes as for Eigen-CAM: ``M`` correlates
    positively with the mean activation (scikit-learn makes the largest entry of
    ``v_1`` positive instead). Batched on the model's device; the cost grows as
    ``P^3`` per image (one ``P x P`` eigen-decomposition), fine for the usual
    7 x 7 to 28 x 28 layers.

    KPCA-CAM ignores the target (class-agnostic, as Eigen-CAM): Finer and DiffCAM
    comparisons do not change the map; there are no channel weights.

    Options:
        kernel: ``"sigmoid"`` (default, as pytorch-grad-cam), ``"rbf"``, ``"poly"``,
            ``"linear"`` (plain Eigen-CAM) or ``"cosine"``; see :func:`kernel_matrix`.
        gamma: the kernel's scale (None: ``1 / K``).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> camscope.explain(model, torch.randn(2, 3, 64, 64), method="kpcacam", layer="layer3", kernel="rbf").raw.shape
        torch.Size([2, 4, 4])
    """

    name = "kpcacam"
    channel_weights = False
    display_name = "KPCA-CAM"
    uses_gradients = False
    declared_options = (
        Option("kernel", str, "sigmoid", "the kernel of the kernel PCA", choices=KERNELS),
        Option("gamma", float, None, "the kernel's scale (None: 1 / channels)", positive=True),
    )

    def __call__(self, ctx: CamContext) -> CamResult:
        return CamResult(raw=kernel_pca_projection(ctx.activations, self.options["kernel"], self.options["gamma"]))
