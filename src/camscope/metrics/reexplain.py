"""Explaining other inputs (or another model) as a batch was explained: the same method, layer,
options and *classes*. Used by the metrics that explain again: coherency and ARCC (the sanity
check freezes its target the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from camscope.engine.explainer import Explanation, explain
from camscope.engine.method import CamMethod, get_method, method_class
from camscope.errors import CamscopeError
from camscope.metrics.common import clean_pass, prepare_maps
from camscope.targets.base import FrozenTarget, as_target

__all__ = ["MethodSpec", "Reexplainer", "explained_maps", "explanation_method"]

MethodSpec = str | CamMethod | Callable[[nn.Module, Tensor, Any], Tensor]
"""A camscope method name or instance, or ``callable(model, inputs, target) -> maps [B, H, W]``."""


class Reexplainer:
    """Maps of other inputs for the target a batch was explained for, ``[B, H, W]`` in [0, 1].

    The target is resolved once on the original model and inputs and frozen (its classes),
    so every later call explains the same classes. Methods that change what is explained
    (the ``finer-*`` shortcuts compare the class with similar classes) are resolved on the
    original model too. When ``maps`` is an Explanation and ``target`` is None, its own
    resolved target is used; a :class:`~camscope.targets.base.FrozenTarget` (an already
    resolved target) is used as it is.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> x = torch.randn(2, 3, 64, 64)
        >>> again = Reexplainer(model, x, camscope.explain(model, x, layer="layer4"), None, "gradcam", "layer4")
        >>> again(model, x * 0.5).shape
        torch.Size([2, 64, 64])
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Tensor,
        maps: Tensor | Explanation | None,
        target: Any,
        method: MethodSpec,
        layer: Any,
        options: dict[str, Any] | None = None,
    ) -> None:
        if inputs.ndim != 4:
            raise CamscopeError(
                f"coherency and ARCC mask images [B, C, H, W] by their maps, got inputs of shape {list(inputs.shape)}"
            )
        self.method, self.layer, self.options = method, layer, dict(options or {})
        self.size = inputs.shape[2:]
        own = (target is None and isinstance(maps, Explanation)) or isinstance(target, FrozenTarget)
        if isinstance(method, (str, CamMethod)) and not own:
            instance = method if isinstance(method, CamMethod) else get_method(method, **self.options)
            target = instance.prepare_target(as_target(target), model)
        _, resolved = clean_pass(model, inputs, target, maps)
        self.target = resolved if isinstance(resolved, FrozenTarget) else FrozenTarget(resolved)

    def __call__(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """The maps of ``inputs`` (ReLU'd and min-max scaled per image) with ``model``."""
        if callable(self.method) and not isinstance(self.method, (str, CamMethod)):
            return prepare_maps(self.method(model, inputs, self.target), self.size, normalize=True)
        explanation = explain(model, inputs, self.method, layer=self.layer, target=self.target, **self.options)
        return explanation.maps.detach()

    @property
    def method_name(self) -> str:
        """The method's name, for the result's parameters."""
        if isinstance(self.method, str):
            return self.method
        return str(getattr(self.method, "name", getattr(self.method, "__name__", "custom")))


def explanation_method(
    maps: Tensor | Explanation | None, method: MethodSpec | None, layer: Any, options: dict[str, Any] | None
) -> tuple[MethodSpec, Any, dict[str, Any] | None]:
    """The method, layer and options to explain again with: as given, else the Explanation's, else Grad-CAM."""
    if method is not None:
        return method, layer, options
    if isinstance(maps, Explanation):
        if options is None:  # the method's own options (a loaded explanation also records its model)
            names = set(method_class(maps.method).option_names())
            options = {key: value for key, value in maps.options.items() if key in names}
        return maps.method, layer if layer is not None else maps.layer, options
    return "gradcam", layer, options


def explained_maps(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation | None,
    target: Any,
    method: MethodSpec | None,
    layer: Any,
    options: dict[str, Any] | None,
) -> tuple[Tensor, Reexplainer]:
    """The maps a metric that explains again evaluates, and the :class:`Reexplainer` that explains like them.

    The method, layer and options are :func:`explanation_method`'s (the Reexplainer holds them);
    the maps are ``maps`` ReLU'd, min-max scaled per image and resized to the inputs, or, when
    ``maps`` is None, the method's maps of ``inputs``.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> x = torch.randn(2, 3, 64, 64)
        >>> original, again = explained_maps(model, x, None, None, None, "layer4", None)
        >>> original.shape, again.method_name, again.layer
        (torch.Size([2, 64, 64]), 'gradcam', 'layer4')
    """
    method, layer, options = explanation_method(maps, method, layer, options)
    again = Reexplainer(model, inputs, maps, target, method, layer, options)
    if maps is None:
        return again(model, inputs), again
    return prepare_maps(maps, inputs.shape[2:], normalize=True).to(inputs.device), again
