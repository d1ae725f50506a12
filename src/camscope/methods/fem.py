"""FEM, the Feature Explanation Method: channels' unusually strong responses, found by a k-sigma rule."""

from __future__ import annotations

import torch

from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.options import Option

__all__ = ["FEM"]


@register_method
class FEM(CamMethod):
    r"""FEM (Fuad et al. 2020): each channel's unusually strong responses, weighted by the channel's mean.

    Fuad, Martin, Giot, Bourqui, Benois-Pineau & Zemmari, "Features
    Understanding in 3D CNNs for Actions Recognition in Video", IPTA 2020
    (hal-02963298; no arXiv version).

    For each channel, ``mu_k`` and ``sigma_k`` are the mean and the (population)
    standard deviation of ``A_k`` over positions, and the binary mask
    ``B_k = 1[A_k > mu_k + k sigma_k]`` marks its unusually strong responses.
    The paper weights each mask by its channel's mean (the global average
    pooling that feeds the classifier):

        ``M = sum_k mu_k B_k``                               (``summed="masks"``, default)

    pytorch-grad-cam 1.5.7's ``FEM`` computes something else: it weights the
    *activations* by the fraction of their positions above the threshold,

        ``M = sum_k (mean_ij B_k^ij) A_k``                 (``summed="activations"``)

    which camscope offers under that name (equal to the peer's numbers). A
    constant channel (``sigma_k = 0``, e.g. all zeros after a ReLU) has no
    position above its threshold and adds nothing. With ``summed="masks"`` the
    map is not a weighting of ``A``, so ``Explanation.weights`` is None.

    FEM needs no gradients and ignores the target (class-agnostic): Finer and
    DiffCAM comparisons do not change the map.

    Options:
        k: how many standard deviations above the mean a response must be (default 2).
        summed: ``"masks"`` (the paper) or ``"activations"`` (pytorch-grad-cam 1.5.7).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> x = torch.randn(2, 3, 64, 64)
        >>> camscope.explain(model, x, method="fem", layer="layer3").raw.shape
        torch.Size([2, 4, 4])
        >>> camscope.explain(model, x, method="fem", layer="layer3", summed="activations").weights.shape
        torch.Size([2, 256])
    """

    name = "fem"
    channel_weights = False
    display_name = "FEM"
    uses_gradients = False
    declared_options = (
        Option("k", float, 2.0, "standard deviations above the channel's mean that count as a strong response", min=0),
        Option(
            "summed",
            str,
            "masks",
            "what is summed: the binary masks weighted by the channel means (the paper), or the activations "
            "weighted by the fraction of positions above the threshold (pytorch-grad-cam)",
            choices=("masks", "activations"),
        ),
    )

    def __call__(self, ctx: CamContext) -> CamResult:
        activations = ctx.activations
        dims = ctx.spatial_dims
        variance, mean = torch.var_mean(activations, dim=dims, correction=0, keepdim=True)
        masks = (activations > mean + self.options["k"] * variance.sqrt()).to(activations.dtype)
        if self.options["summed"] == "activations":
            return CamResult(weights=masks.mean(dim=dims, keepdim=True))
        return CamResult(raw=(mean * masks).sum(dim=1))
