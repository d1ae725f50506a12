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
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from camscope.engine.maps import aggregate_maps
from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.errors import CamscopeError
from camscope.methods.gradient import GradCAM, GradCAMpp, HiResCAM, LayerCAM, XGradCAM
from camscope.methods.perturbation import ScoreCAM
from camscope.targets.base import ClassTarget, FrozenTarget, Target
from camscope.targets.finer import FINER_OPTIONS, Finer

__all__ = [
    "FINER_OPTIONS",
    "FinerGradCAM",
    "FinerGradCAMpp",
    "FinerHiResCAM",
    "FinerLayerCAM",
    "FinerScoreCAM",
    "FinerXGradCAM",
    "finer_method",
]

_FINER_NAMES = frozenset(option.name for option in FINER_OPTIONS)


class _Component(Target):
    """Component ``t`` of a resolved target's ``[B, T]`` scores, as a ``[B]`` score."""

    def __init__(self, target: Target, index: int) -> None:
        self.target = target
        self.index = index

    def __call__(self, outputs: Tensor) -> Tensor:
        return self.target(outputs)[:, self.index]

    def classes(self) -> Tensor | None:
        return self.target.classes()

    def baseline_scores(self, outputs: Tensor) -> Tensor:
        scores = self.target.baseline_scores(outputs)
        return scores[:, self.index] if scores.ndim == 2 else scores


class _FinerShortcut(CamMethod):
    """What every ``finer-*`` method adds to its base: its Finer options wrap the user's class target.

    Gradient methods get the ``T`` comparisons from the engine (one backward of
    the averaged score when the base is linear in the gradient, else one batched
    backward). Gradient-free bases score each perturbed pass with the mean of
    the ``T`` components (one pass for all references); the aggregations
    ``"max-before-relu"`` and ``"mean-after-relu"`` need one map per reference,
    so the base then runs once per reference and the signed map is returned.
    """

    base_name: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.finer_given = sorted(_FINER_NAMES & set(options))

    def prepare_target(self, target: Target, model: nn.Module) -> Target:
        if isinstance(target, FrozenTarget) and isinstance(target.inner, Finer):
            return target  # a comparison resolved on another model (the sanity check's randomised copies)
        if isinstance(target, Finer):
            if self.finer_given:
                raise CamscopeError(
                    f"Finer options were given both to method {self.name!r} ({', '.join(self.finer_given)}) and as "
                    f"a Finer target: give them in one place, or use method={self.base_name!r} with the Finer target"
                )
            return target
        if not isinstance(target, ClassTarget):
            raise CamscopeError(
                f"method {self.name!r} compares classes, so its target must be None (the predicted class), a class "
                f"index or one per sample, not a {type(target).__name__}; for a custom score use "
                f"method={self.base_name!r}"
            )
        options = {name: self.options[name] for name in _FINER_NAMES}
        if options["select"] == "weight-similarity" and options["classifier"] is None:
            options["classifier"] = model
        return Finer(explained=target, **options)

    def __call__(self, ctx: CamContext) -> CamResult:
        aggregate = getattr(ctx.target, "aggregate", "mean-before-relu")
        if self.uses_gradients or self.aggregates_components or aggregate == "mean-before-relu":
            return super().__call__(ctx)
        with torch.no_grad():
            components = ctx.target(ctx.outputs)
        if components.ndim == 1 or components.shape[1] == 1:
            return super().__call__(ctx)
        maps = []
        for index in range(components.shape[1]):
            part = super().__call__(replace(ctx, target=_Component(ctx.target, index)))
            maps.append(part.signed_map(ctx.activations))
        return CamResult(raw=aggregate_maps(torch.stack(maps), aggregate))


def finer_method(base: type[CamMethod], label: str, note: str) -> type[CamMethod]:
    """Register ``finer-<base.name>``: ``base`` explaining a :class:`Finer` comparison of the user's class.

    Its options are Finer's (:data:`FINER_OPTIONS`) followed by the base method's.
    ``label`` names the base in the docstring, ``note`` says how the comparison is computed.
    """

    name = f"Finer{base.__name__}"
    namespace = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": (
            f"Finer-CAM on {label}: {note}\n\n    Options: those of :class:`camscope.targets.finer.Finer` "
            f"({', '.join(option.name for option in FINER_OPTIONS)}), then those of ``{base.name}``.\n"
        ),
        "name": f"finer-{base.name}",
        "display_name": f"Finer-CAM ({base.display_name or base.name})",
        "base_name": base.name,
        "declared_options": (
            *FINER_OPTIONS,
            *(option for option in base.declared_options if option.name not in _FINER_NAMES),
        ),
    }
    return register_method(cast("type[CamMethod]", type(name, (_FinerShortcut, base), namespace)))


FinerGradCAM = finer_method(
    GradCAM,
    "Grad-CAM",
    """``w_k = mean_t (1/Z) sum_ij d(y_c - gamma y_{d_t})/dA_k^ij``.

    One backward of the averaged score (Grad-CAM is linear in the gradient).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> e = camscope.explain(model, torch.randn(1, 3, 64, 64), method="finer-gradcam", gamma=0.6, references=3)
        >>> e.targets.references().shape
        torch.Size([1, 3])""",
)
FinerGradCAMpp = finer_method(
    GradCAMpp,
    "Grad-CAM++",
    """per-reference Grad-CAM++ weights of ``y_c - gamma y_{d_t}``, then aggregated.

    The ``T`` per-reference gradients come from one batched backward.""",
)
FinerLayerCAM = finer_method(
    LayerCAM,
    "LayerCAM",
    """per-reference ``ReLU(d(y_c - gamma y_{d_t})/dA)``, then aggregated.

    The ``T`` per-reference gradients come from one batched backward.""",
)
FinerXGradCAM = finer_method(XGradCAM, "XGrad-CAM", "linear in the gradient: one backward.")
FinerHiResCAM = finer_method(HiResCAM, "HiResCAM", "linear in the gradient: one backward.")
FinerScoreCAM = finer_method(
    ScoreCAM,
    "Score-CAM (Eq. 9)",
    """Score-CAM scores the masked inputs with the Finer target.

    ``scorecam`` scores each masked input with the mean of the components
    ``y_c - gamma y_{d_t}`` of one forward pass, so the references cost no
    extra passes. With ``normalization="difference"`` the weights are Eq. 9's
    ``f(x o H_k)_c - gamma f(x o H_k)_d - f(x_b)_c`` averaged over the
    references (up to a constant shift of all weights: the baseline term is the
    target's, ``y_c(x_b) - gamma y_d(x_b)``); the default is Score-CAM's own
    ``"softmax"`` over channels of those scores, so that ``gamma=0`` is exactly
    ``scorecam``. ``aggregate="max-before-relu"`` / ``"mean-after-relu"`` need
    one map per reference: Score-CAM then runs once per reference (``T`` times
    the masked passes) and the signed map is returned without channel weights.""",
)
