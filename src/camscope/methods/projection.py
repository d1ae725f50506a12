"""Projection CAMs: Eigen-CAM and Eigen-Grad-CAM.

The map is the projection of each position's feature vector on the first
principal component of the (weighted) activations of the image, computed by
:func:`camscope.engine.projection.first_component_projection` (a batched
eigen-decomposition of the smaller Gram matrix, in float64).
"""

from __future__ import annotations

from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.engine.projection import first_component_projection
from camscope.options import Option

__all__ = ["CENTER", "EigenCAM", "EigenGradCAM", "first_component_projection"]

#: The option of both projection methods.
CENTER = Option("center", bool, True, "centre each channel over positions before the decomposition")


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
    channel_weights = False
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
    channel_weights = False
    display_name = "Eigen-Grad-CAM"
    uses_gradients = True

    declared_options = (CENTER,)

    def __call__(self, ctx: CamContext) -> CamResult:
        weighted = ctx.require_gradients() * ctx.activations
        return CamResult(raw=first_component_projection(weighted, self.options["center"]))
