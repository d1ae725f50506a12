"""The ``finer-*`` methods: Finer-CAM (Zhang et al. 2025) as a method name.

``finer-gradcam``, ``finer-layercam``, ``finer-gradcampp``, ``finer-xgradcam``,
``finer-hirescam`` and ``finer-scorecam`` wrap the user's class target in a
:class:`camscope.targets.finer.Finer` with their options, so
``camscope.explain(model, x, method="finer-gradcam")`` is the explanation of
``method="gradcam", target=camscope.Finer()``.

Example:
    >>> import camscope, torch
    >>> from torchvision.models import resnet18
    >>> model = resnet18(num_classes=10).eval()
    >>> x = torch.randn(2, 3, 64, 64)
    >>> a = camscope.explain(model, x, method="gradcam", target=camscope.Finer())
    >>> b = camscope.explain(model, x, method="finer-gradcam")
    >>> torch.equal(a.raw, b.raw)
    True
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from camscope.engine.method import (
    CamContext,
    CamMethod,
    CamResult,
    aggregate_maps,
    available_methods,
    get_method,
    register_method,
)
from camscope.errors import CamscopeError
from camscope.methods.gradient import GradCAM, GradCAMpp, HiResCAM, LayerCAM, XGradCAM
from camscope.targets.base import ClassTarget, FrozenTarget, Target
from camscope.targets.finer import Finer

__all__ = [
    "FINER_OPTIONS",
    "FinerGradCAM",
    "FinerGradCAMpp",
    "FinerHiResCAM",
    "FinerLayerCAM",
    "FinerScoreCAM",
    "FinerXGradCAM",
]

#: The options of the ``finer-*`` methods (those of :class:`Finer`, less the explained class).
FINER_OPTIONS = ("references", "gamma", "select", "aggregate", "weighting", "reverse", "classifier")

# ---------------------------------------------------------------------- shortcut methods


class _FinerShortcut:
    """Mixin of the ``finer-*`` methods: their Finer options wrap the user's class target."""

    name: ClassVar[str]
    options: dict[str, Any]
    base_name: ClassVar[str]

    @classmethod
    def _base_options(cls) -> tuple[str, ...]:
        return super().option_names()  # type: ignore[misc]

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return FINER_OPTIONS + tuple(name for name in cls._base_options() if name not in FINER_OPTIONS)

    def _finer_options(self) -> dict[str, Any]:
        return {key: value for key, value in self.options.items() if key in FINER_OPTIONS}

    def _validate(self) -> None:
        """Fail at construction on a bad option, not at the first call."""
        options = self._finer_options()
        if options.get("select") == "weight-similarity" and options.get("classifier") is None:
            options["classifier"] = torch.zeros(2, 1)  # stands in for the model given later
        Finer(**options)

    def prepare_target(self, target: Target, model: nn.Module) -> Target:
        options = self._finer_options()
        if isinstance(target, FrozenTarget) and isinstance(target.inner, Finer):
            return target  # a comparison resolved on another model (the sanity check's randomised copies)
        if isinstance(target, Finer):
            if options:
                raise CamscopeError(
                    f"Finer options were given both to method {self.name!r} ({', '.join(sorted(options))}) and as a "
                    f"Finer target: give them in one place, or use method={self.base_name!r} with the Finer target"
                )
            return target
        if not isinstance(target, ClassTarget):
            raise CamscopeError(
                f"method {self.name!r} compares classes, so its target must be None (the predicted class), a class "
                f"index or one per sample, not a {type(target).__name__}; for a custom score use "
                f"method={self.base_name!r}"
            )
        if options.get("select") == "weight-similarity" and options.get("classifier") is None:
            options["classifier"] = model
        return Finer(explained=target, **options)


@register_method
class FinerGradCAM(_FinerShortcut, GradCAM):
    """Finer-CAM on Grad-CAM: ``w_k = mean_t (1/Z) sum_ij d(y_c - gamma y_{d_t})/dA_k^ij``.

    One backward of the averaged score (Grad-CAM is linear in the gradient).
    Options: those of :class:`Finer` (``references``, ``gamma``, ``select``,
    ``aggregate``, ``weighting``, ``reverse``, ``classifier``).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> e = camscope.explain(model, torch.randn(1, 3, 64, 64), method="finer-gradcam", gamma=0.6, references=3)
        >>> e.targets.references().shape
        torch.Size([1, 3])
    """

    name = "finer-gradcam"
    base_name = "gradcam"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._validate()


@register_method
class FinerGradCAMpp(_FinerShortcut, GradCAMpp):
    """Finer-CAM on Grad-CAM++: per-reference Grad-CAM++ weights of ``y_c - gamma y_{d_t}``, then aggregated.

    The ``T`` per-reference gradients come from one batched backward.
    """

    name = "finer-gradcampp"
    base_name = "gradcampp"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._validate()


@register_method
class FinerLayerCAM(_FinerShortcut, LayerCAM):
    """Finer-CAM on LayerCAM: per-reference ``ReLU(d(y_c - gamma y_{d_t})/dA)``, then aggregated.

    The ``T`` per-reference gradients come from one batched backward.
    """

    name = "finer-layercam"
    base_name = "layercam"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._validate()


@register_method
class FinerXGradCAM(_FinerShortcut, XGradCAM):
    """Finer-CAM on XGrad-CAM (linear in the gradient: one backward)."""

    name = "finer-xgradcam"
    base_name = "xgradcam"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._validate()


@register_method
class FinerHiResCAM(_FinerShortcut, HiResCAM):
    """Finer-CAM on HiResCAM (linear in the gradient: one backward)."""

    name = "finer-hirescam"
    base_name = "hirescam"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._validate()


class _Component(Target):
    """Component ``t`` of a resolved target's ``[B, T]`` scores, as a ``[B]`` score."""

    def __init__(self, target: Target, index: int) -> None:
        self.target = target
        self.index = index

    def __call__(self, outputs: Tensor) -> Tensor:
        return self.target(outputs)[:, self.index]

    def classes(self) -> Tensor | None:
        return self.target.classes()


@register_method
class FinerScoreCAM(_FinerShortcut, CamMethod):
    """Finer-CAM on Score-CAM (Eq. 9): the base method scores the masked inputs with the Finer target.

    ``scorecam`` scores each masked input with the mean of the components
    ``y_c - gamma y_{d_t}`` of one forward pass, so the references cost no
    extra passes. With ``normalization="difference"`` the weights are Eq. 9's
    ``f(x o H_k)_c - gamma f(x o H_k)_d - f(x_b)_c`` averaged over the
    references (up to a constant shift of all weights: the baseline term is the
    target's, ``y_c(x_b) - gamma y_d(x_b)``); the default is Score-CAM's own
    ``"softmax"`` over channels of those scores, so that ``gamma=0`` is exactly
    ``scorecam``. ``aggregate="max-before-relu"`` / ``"mean-after-relu"`` need
    one map per reference: Score-CAM then runs once per reference (``T`` times
    the masked passes) and the signed map is returned without channel weights.

    Delegates to the registered ``scorecam`` method at call time; its options
    (``batch_size``, ``normalization``, ``baseline``, ...) pass through.
    """

    name = "finer-scorecam"
    base_name = "scorecam"
    uses_gradients = False

    @classmethod
    def _base_options(cls) -> tuple[str, ...]:
        base = available_methods().get(cls.base_name)
        return base.option_names() if base is not None else ()

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._validate()
        if self.base_name not in available_methods():
            raise CamscopeError(
                "finer-scorecam needs the scorecam method, which is not available in this camscope; "
                "use finer-gradcam or finer-layercam"
            )
        base_options = {key: value for key, value in options.items() if key not in FINER_OPTIONS}
        self.base = get_method(self.base_name, **base_options)
        if self.base.uses_gradients:  # pragma: no cover - Score-CAM is gradient-free
            raise CamscopeError("finer-scorecam expects a gradient-free scorecam")

    def __call__(self, ctx: CamContext) -> CamResult:
        aggregate = getattr(ctx.target, "aggregate", "mean-before-relu")
        with torch.no_grad():
            components = ctx.target(ctx.outputs)
        if aggregate == "mean-before-relu" or components.ndim == 1 or components.shape[1] == 1:
            return self.base(ctx)
        maps = []
        for index in range(components.shape[1]):
            part = self.base(replace(ctx, target=_Component(ctx.target, index)))
            maps.append(part.raw if part.raw is not None else (part.weights * ctx.activations).sum(dim=1))
        return CamResult(raw=aggregate_maps(torch.stack(maps), aggregate))
