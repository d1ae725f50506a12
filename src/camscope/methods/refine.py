"""RefineCAM: the product of one method's normalised maps at several layers."""

from __future__ import annotations

from typing import Any

from torch import nn

from camscope.engine.method import CamContext, CamMethod, CamResult, get_method, method_class, register_method
from camscope.errors import CamscopeError
from camscope.methods.gradient import GradCAMpp
from camscope.options import Option
from camscope.targets.base import Target

__all__ = ["RefineCAM"]


@register_method
class RefineCAM(CamMethod):
    r"""RefineCAM (Domeniconi et al. 2026): the product of a method's normalised maps at several layers.

    Domeniconi, Stramiglio, Lombardi & Salti, "How to Evaluate and Refine your
    CAM", arXiv:2605.14641.

    A meta-method over a base CAM method (Grad-CAM++ by default, as the authors'
    code): the base method's map at each of ``L`` layers is made non-negative and
    min-max scaled per image to [0, 1], all are brought to one resolution, and
    their element-wise product is min-max scaled again:

        ``maps = normalize(prod_l normalize(ReLU(M_l)))``

    A region survives only where every layer agrees, which removes most of the
    noise of early, high-resolution layers while keeping their detail. Pass the
    layers as a list (``layer=["layer2", "layer3", "layer4"]``); one layer gives
    the base method's map. ``Explanation.raw`` is the unnormalised product and
    ``Explanation.layers`` the per-layer explanations. ``fuse="product"`` does the
    same for any method.

    Like pytorch-grad-cam 1.5.7's ``RefineCAM`` (the authors' code), each layer's
    map is upsampled to the input before the product. Its loop meant to rescale
    each map to [0, 1] rebinds a local name and changes nothing, but its base
    maps are already min-max scaled, so its numbers are those of the formula
    above; camscope's are equal to them. torchcam 0.5.0 multiplies at the largest
    layer's resolution instead (the same where the layers share the input's
    resolution).

    Targets: those of the base method (a Finer target compares classes at every
    layer).

    Options:
        base: the base method, a registered name or a method instance with its own
            options (default ``"gradcampp"``).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> e = camscope.explain(model, torch.randn(1, 3, 64, 64), method="refinecam", layer=["layer3", "layer4"])
        >>> e.maps.shape, sorted(e.layers)
        (torch.Size([1, 64, 64]), ['layer3', 'layer4'])
    """

    name = "refinecam"
    display_name = "RefineCAM"
    fusion = "product"
    declared_options = (
        Option("base", (str, CamMethod), "gradcampp", "the method whose maps at several layers are multiplied"),
    )

    def __new__(cls, **options: Any) -> RefineCAM:
        # The engine reads uses_gradients and linear_in_gradient from the class: take them from the base's.
        if cls is RefineCAM:
            cls = _refined(_base_class(options.get("base", "gradcampp")))
        return super().__new__(cls)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.base = _base_method(self.options["base"])

    def prepare_target(self, target: Target, model: nn.Module) -> Target:
        return self.base.prepare_target(target, model)

    def __call__(self, ctx: CamContext) -> CamResult:
        return self.base(ctx)


def _base_class(base: Any) -> type[CamMethod]:
    """The class of a base given as a name or an instance (Grad-CAM++'s for a bad one: ``__init__`` reports it)."""
    if isinstance(base, CamMethod):
        return type(base)
    try:
        return method_class(base) if isinstance(base, str) else GradCAMpp
    except CamscopeError:
        return GradCAMpp


def _base_method(base: Any) -> CamMethod:
    method = get_method(base)
    if isinstance(method, RefineCAM):
        raise CamscopeError("refinecam's base cannot be refinecam: choose the method whose maps are multiplied")
    return method


_REFINED: dict[tuple[bool, bool, bool], type[RefineCAM]] = {}


def _refined(base: type[CamMethod]) -> type[RefineCAM]:
    """RefineCAM with the base's ``uses_gradients``, ``linear_in_gradient`` and ``channel_weights`` (one class per
    combination, not registered)."""
    flags = (base.uses_gradients, base.linear_in_gradient, base.channel_weights)
    if flags not in _REFINED:
        namespace: dict[str, Any] = {"__module__": __name__, "__doc__": RefineCAM.__doc__}
        namespace.update(uses_gradients=flags[0], linear_in_gradient=flags[1], channel_weights=flags[2])
        _REFINED[flags] = type("RefineCAM", (RefineCAM,), namespace)
    return _REFINED[flags]
