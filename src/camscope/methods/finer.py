"""Finer-CAM (Zhang et al. 2025): explain a class against the classes it is confused with.

Finer-CAM keeps the CAM method and changes *what* is explained: instead of the
logit ``y_c`` it explains the difference ``y_c - gamma * y_d`` to a similar
reference class ``d``. For Grad-CAM, by linearity of the gradient,

    alpha_k^{c,d} = alpha_k^c - gamma * alpha_k^d                       (Eq. 5-7)

and with ``T`` references the weights are averaged before the ReLU:

    L^c = ReLU( (1/T) sum_t sum_k alpha_k^{c,d_t} A_k )                  (Eq. 8)

Here this is a *target*, :class:`Finer`, whose score is the ``T`` components
``y_c - gamma * y_{d_t}`` (``[B, T]``), so it works with every method:
``camscope.explain(model, x, method="gradcam", target=camscope.Finer())``. The
engine combines the components by :attr:`Finer.aggregate`: for methods whose
weights are linear in the gradient (Grad-CAM, XGrad-CAM, HiResCAM) and the
paper's mean before the ReLU it back-propagates the averaged score once (one
backward, whatever ``T``); otherwise (Grad-CAM++, LayerCAM, or a max / a mean
after the ReLU) it takes the ``T`` per-reference gradients in one batched
backward and combines the per-reference maps. The shortcut methods
``finer-gradcam``, ``finer-layercam``, ``finer-gradcampp``, ``finer-xgradcam``,
``finer-hirescam`` and ``finer-scorecam`` wrap the user's class target in a
:class:`Finer` with their options, so
``camscope.explain(model, x, method="finer-gradcam")`` is the same explanation.

Also here: the class-similarity analysis of the paper's Figure 1 / App. A.1
(:func:`class_similarity`): the cosine similarity of classifier rows.

Example:
    >>> import camscope, torch
    >>> from torchvision.models import resnet18
    >>> model = resnet18(num_classes=10).eval()
    >>> x = torch.randn(2, 3, 64, 64)
    >>> a = camscope.explain(model, x, method="gradcam", target=camscope.Finer())
    >>> b = camscope.explain(model, x, method="finer-gradcam")
    >>> torch.equal(a.raw, b.raw), a.targets.references().shape
    (True, torch.Size([2, 3]))
"""

from __future__ import annotations

import difflib
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.engine.method import CamContext, CamMethod, CamResult, available_methods, get_method, register_method
from camscope.errors import CamscopeError
from camscope.methods.gradient import GradCAM, GradCAMpp, HiResCAM, LayerCAM, XGradCAM
from camscope.targets.base import ClassTarget, FrozenTarget, Target

__all__ = [
    "AGGREGATIONS",
    "FINER_OPTIONS",
    "SELECTION_RULES",
    "WEIGHTINGS",
    "ClassSimilarity",
    "Finer",
    "FinerGradCAM",
    "FinerGradCAMpp",
    "FinerHiResCAM",
    "FinerLayerCAM",
    "FinerScoreCAM",
    "FinerXGradCAM",
    "class_similarity",
    "classifier_weights",
]

#: How the maps of the ``T`` comparisons combine (the paper's Table 3).
AGGREGATIONS = ("mean-before-relu", "max-before-relu", "mean-after-relu")
#: How references are chosen when only their number is given.
SELECTION_RULES = ("predicted", "closest-logit", "weight-similarity")
#: How the comparisons are weighted in the aggregate.
WEIGHTINGS = ("uniform", "probability")
#: The options of the ``finer-*`` methods (those of :class:`Finer`, less the explained class).
FINER_OPTIONS = ("references", "gamma", "select", "aggregate", "weighting", "reverse", "classifier")

ReferenceSpec = int | Sequence[int] | Sequence[Sequence[int]] | Tensor


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CamscopeError(f"unknown {what} {value!r}{hint}: use one of {', '.join(choices)}")
    return value


def _explicit_references(spec: Any) -> Tensor | None:
    """Explicit reference classes as ``[T]`` (same for all samples) or ``[B, T]``; None for a count."""
    if isinstance(spec, bool):
        raise CamscopeError("references must be a number of classes or class indices, got a bool")
    if isinstance(spec, int):
        if spec < 1:
            raise CamscopeError(f"references={spec}: give at least 1 reference class (the paper uses 3)")
        return None
    if isinstance(spec, str):
        raise CamscopeError(
            f"references={spec!r} is a string: give class indices (camscope.models.loading.class_index(name) turns a name "
            "into an index)"
        )
    try:
        tensor = spec if isinstance(spec, Tensor) else torch.as_tensor(spec)
    except (TypeError, ValueError) as error:
        raise CamscopeError(
            f"references must be a count (int), a list of class indices, or one list per sample of equal length: {error}"
        ) from error
    if tensor.is_floating_point() or tensor.dtype == torch.bool or tensor.is_complex():
        raise CamscopeError(f"reference classes must be integer indices, got dtype {tensor.dtype}")
    if tensor.ndim == 0:
        tensor = tensor.reshape(1)
    if tensor.ndim > 2 or tensor.numel() == 0:
        raise CamscopeError(
            f"references must be a list of classes [T] or one list per sample [B, T], got shape {list(tensor.shape)}"
        )
    return tensor.long()


def classifier_weights(source: nn.Module | Tensor) -> Tensor:
    """The classifier rows ``w^c`` (``[C, K]``, detached) of a model, a linear layer or a weight tensor.

    A module with a ``classifier_weights()`` method (such as
    :class:`camscope.models.clip.CLIPClassifier`, whose "classifier" is its text-prompt
    embeddings) is asked for them; any other module gives the weight of its last
    ``nn.Linear`` (the head of torchvision and timm classifiers).

    Raises:
        CamscopeError: if no classifier can be found.
    """
    if isinstance(source, Tensor):
        weights = source
    elif isinstance(source, nn.Linear):
        weights = source.weight
    elif isinstance(source, nn.Module) and callable(getattr(source, "classifier_weights", None)):
        weights = source.classifier_weights()  # type: ignore[operator]
    elif isinstance(source, nn.Module):
        linears = [module for module in source.modules() if isinstance(module, nn.Linear)]
        if not linears:
            raise CamscopeError(
                f"{type(source).__name__} has no nn.Linear classifier: pass the classifier's weight matrix [C, K]"
            )
        weights = linears[-1].weight
    else:
        raise CamscopeError(
            f"cannot read classifier weights from {type(source).__name__}: pass a model or a [C, K] tensor"
        )
    if not isinstance(weights, Tensor) or weights.ndim != 2:
        shape = list(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise CamscopeError(f"classifier weights must be a matrix [classes, features], got {shape}")
    return weights.detach()


class Finer(Target):
    """The Finer-CAM target: the class against ``T`` similar reference classes.

    Its score is the ``[B, T]`` components ``y_c - gamma * y_{d_t}`` (with
    ``reverse``: ``y_{d_t} - gamma * y_c``), which the engine combines by
    ``aggregate``; with the default mean before the ReLU, the map is Eq. 8,
    ``ReLU(sum_k mean_t(alpha_k^{c,d_t}) A_k)``.

    Args:
        references: how many reference classes to choose automatically (an
            int; capped at the number of other classes), or the reference
            classes themselves: a list of indices (the same for every sample)
            or one equal-length list per sample (a ``[B, T]`` tensor). A
            ``Tensor`` is always read as class indices.
        gamma: comparison strength. 0 gives the base method exactly (the
            target is then ``y_c``); the paper uses 0.6; ``gamma > 1`` is the
            paper's extrapolation (App. C.2). Must be finite and >= 0.
        select: how references are chosen when ``references`` is a count:

            * ``"predicted"`` (paper): the highest-scoring classes other than
              the explained class (the 2nd to 4th predictions when the
              explained class is the top one);
            * ``"closest-logit"``: the classes whose logits are closest to the
              explained class's, ``|y_j - y_c|`` (the authors' code,
              pytorch-grad-cam and torchcam); equal to ``"predicted"`` when the
              explained class is the top prediction;
            * ``"weight-similarity"``: the classes whose classifier rows have the
              highest cosine similarity to the explained class's (App. A.1); needs
              ``classifier`` (the ``finer-*`` methods pass the model).
        aggregate: how the ``T`` comparison maps ``M_t = sum_k alpha_k^{c,d_t} A_k``
            combine (Table 3): ``"mean-before-relu"`` (Eq. 8, the paper's
            choice), ``"max-before-relu"`` (pixel-wise max over ``t`` of the
            signed maps; the paper does not say whether its max is over the
            weights or the maps: camscope takes the maps, the activations being
            what Sec. 4.3 says is aggregated) or ``"mean-after-relu"``
            (``mean_t ReLU(M_t)``). ``Explanation.weights`` and ``contributions``
            are the means over the references, so they describe the map exactly
            only for ``"mean-before-relu"``.
        explained: the explained class ``c``: None (the predicted class), an
            index, one index per sample, or a :class:`ClassTarget`.
        weighting: ``"uniform"`` (paper: plain average over references) or
            ``"probability"``: the comparisons are weighted by the references'
            softmax probabilities normalised over the references,
            ``p_t / sum_s p_s`` (what pytorch-grad-cam 1.5.7 and the authors'
            current code do), but *detached*: the weights are constants, so no
            gradient flows through them (those implementations differentiate
            through the softmax too). Component ``t`` is scaled by
            ``T p_t / sum_s p_s`` so that the engine's mean is the weighted mean.
        reverse: explain ``y_{d_t} - gamma * y_c`` instead (App. C.3): the traits
            of the reference classes found in the image.
        classifier: the model, its last linear layer or a ``[C, K]`` weight
            matrix, for ``select="weight-similarity"``.

    Example:
        >>> import torch
        >>> from camscope import Finer
        >>> logits = torch.tensor([[4.0, 1.0, 3.0, 2.0]])
        >>> target = Finer(references=2, gamma=0.5).resolve(logits)
        >>> target.classes().tolist(), target.references().tolist()
        ([0], [[2, 3]])
        >>> target(logits)  # y_0 - 0.5 * y_2, y_0 - 0.5 * y_3
        tensor([[2.5000, 3.0000]])
    """

    def __init__(
        self,
        references: ReferenceSpec = 3,
        gamma: float = 0.6,
        select: str = "predicted",
        aggregate: str = "mean-before-relu",
        *,
        explained: int | Sequence[int] | Tensor | ClassTarget | None = None,
        weighting: str = "uniform",
        reverse: bool = False,
        classifier: nn.Module | Tensor | None = None,
    ) -> None:
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(float(gamma)):
            raise CamscopeError(f"gamma must be a finite number, got {gamma!r}")
        if gamma < 0:
            raise CamscopeError(
                f"gamma={gamma} is negative: use gamma >= 0 (reverse=True explains the reference classes against the class)"
            )
        self.explicit = _explicit_references(references)
        self.count = None if self.explicit is not None else int(references)  # type: ignore[arg-type]
        self.spec = references
        self.gamma = float(gamma)
        self.select = _check_choice(select, SELECTION_RULES, "reference selection")
        self.aggregate = _check_choice(aggregate, AGGREGATIONS, "aggregation")
        self.weighting = _check_choice(weighting, WEIGHTINGS, "weighting")
        self.reverse = bool(reverse)
        self.classifier = classifier
        if self.select == "weight-similarity" and self.explicit is None and classifier is None:
            raise CamscopeError(
                "select='weight-similarity' compares classifier rows: pass classifier=model (or its weight matrix), "
                "or use a finer-* method, which passes the model"
            )
        self.explained = explained if isinstance(explained, ClassTarget) else ClassTarget(explained)
        self._classes: Tensor | None = None
        self._references: Tensor | None = None
        self._weights: Tensor | None = None

    # ------------------------------------------------------------------ resolution
    def _options(self) -> dict[str, Any]:
        return dict(
            references=self.spec,
            gamma=self.gamma,
            select=self.select,
            aggregate=self.aggregate,
            explained=self.explained,
            weighting=self.weighting,
            reverse=self.reverse,
            classifier=self.classifier,
        )

    def resolve(self, outputs: Tensor) -> Finer:
        """Fix the explained class, the references and their weights for this batch."""
        scores = _class_scores(outputs).detach()
        batch, num_classes = scores.shape
        if num_classes < 2:
            raise CamscopeError(
                f"Finer-CAM compares classes, but the model has {num_classes} output: it needs at least 2"
            )
        classes = self.explained.resolve(scores).classes()
        assert classes is not None
        classes = classes.to(scores.device)
        if self.explicit is not None:
            references = self._check_explicit(self.explicit.to(scores.device), classes, batch, num_classes)
        else:
            references = self._select(scores, classes, min(self.count or 1, num_classes - 1))
        resolved = Finer(**self._options())
        resolved._classes = classes
        resolved._references = references
        if self.weighting == "probability":
            probabilities = scores.softmax(dim=1).gather(1, references)
            total = probabilities.sum(dim=1, keepdim=True)
            uniform = torch.full_like(probabilities, 1.0 / references.shape[1])
            resolved._weights = torch.where(
                total > 0, probabilities / total.clamp(min=torch.finfo(total.dtype).tiny), uniform
            )
        return resolved

    def _check_explicit(self, references: Tensor, classes: Tensor, batch: int, num_classes: int) -> Tensor:
        if references.ndim == 1:
            references = references.expand(batch, -1)
        elif references.shape[0] != batch:
            raise CamscopeError(
                f"references has {references.shape[0]} rows for a batch of {batch}: give one list of classes for "
                "all samples, or one per sample"
            )
        bad = (references < 0) | (references >= num_classes)
        if bool(bad.any()):
            raise CamscopeError(
                f"reference class {int(references[bad][0])} is out of range for a model with {num_classes} outputs "
                f"(valid: 0..{num_classes - 1})"
            )
        same = references == classes[:, None]
        if bool(same.any()):
            sample = int(same.any(dim=1).nonzero()[0])
            raise CamscopeError(
                f"reference class {int(classes[sample])} is the explained class of sample {sample}: a class cannot be "
                "compared with itself; choose other references or another explained class"
            )
        ordered = references.sort(dim=1).values
        if bool((ordered[:, 1:] == ordered[:, :-1]).any()):
            raise CamscopeError("references repeat a class: give each reference class once")
        return references

    def _select(self, scores: Tensor, classes: Tensor, count: int) -> Tensor:
        index = classes[:, None]
        if self.select == "predicted":
            ranked = scores.scatter(1, index, float("-inf"))
            return ranked.topk(count, dim=1).indices
        if self.select == "closest-logit":
            distance = (scores - scores.gather(1, index)).abs().scatter(1, index, float("inf"))
            return distance.topk(count, dim=1, largest=False).indices
        weights = classifier_weights(self.classifier)  # type: ignore[arg-type]
        if weights.shape[0] != scores.shape[1]:
            raise CamscopeError(
                f"the classifier has {weights.shape[0]} rows but the model has {scores.shape[1]} outputs: pass the "
                "classifier (or weight matrix) that produces these outputs"
            )
        unit = F.normalize(weights.to(device=scores.device, dtype=torch.float32), dim=1)
        similarity = (unit[classes] @ unit.T).scatter(1, index, float("-inf"))
        return similarity.topk(count, dim=1).indices

    # ------------------------------------------------------------------ scoring
    def __call__(self, outputs: Tensor) -> Tensor:
        if self._classes is None or self._references is None:
            return self.resolve(outputs)(outputs)
        scores = _class_scores(outputs)
        explained = scores.gather(1, self._classes[:, None].to(scores.device))
        if self.gamma == 0 and not self.reverse:
            return explained[:, 0]  # exactly the base method's score
        compared = scores.gather(1, self._references.to(scores.device))
        components = compared - self.gamma * explained if self.reverse else explained - self.gamma * compared
        if self._weights is not None:
            components = components * (self._weights.shape[1] * self._weights.to(components))
        return components[:, 0] if components.shape[1] == 1 else components

    def classes(self) -> Tensor | None:
        """The explained class per sample (after :meth:`resolve`)."""
        return self._classes

    def references(self) -> Tensor | None:
        """The reference classes per sample, ``[B, T]`` (after :meth:`resolve`)."""
        return self._references

    def reference_weights(self) -> Tensor | None:
        """The weight of each comparison in the aggregate, ``[B, T]``, summing to 1 per sample."""
        if self._references is None:
            return None
        if self._weights is not None:
            return self._weights
        return torch.full(self._references.shape, 1.0 / self._references.shape[1], device=self._references.device)

    def __repr__(self) -> str:
        refs = self._references.tolist() if self._references is not None else self.spec
        if isinstance(refs, Tensor):
            refs = refs.tolist()
        explained = self._classes.tolist() if self._classes is not None else self.explained
        extras = "".join(
            [
                f", weighting={self.weighting!r}" if self.weighting != "uniform" else "",
                ", reverse=True" if self.reverse else "",
            ]
        )
        return (
            f"Finer(explained={explained}, references={refs}, gamma={self.gamma}, select={self.select!r}, "
            f"aggregate={self.aggregate!r}{extras})"
        )


def _class_scores(outputs: Tensor) -> Tensor:
    if not isinstance(outputs, Tensor) or outputs.ndim != 2:
        shape = list(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise CamscopeError(f"Finer-CAM compares class scores and needs outputs of shape [batch, classes], got {shape}")
    return outputs


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
        from dataclasses import replace

        from camscope.engine.explainer import _aggregate

        maps = []
        for index in range(components.shape[1]):
            part = self.base(replace(ctx, target=_Component(ctx.target, index)))
            maps.append(part.raw if part.raw is not None else (part.weights * ctx.activations).sum(dim=1))
        return CamResult(raw=_aggregate(torch.stack(maps), aggregate))


# ---------------------------------------------------------------------- class similarity


@dataclass
class ClassSimilarity:
    """Cosine similarity of classifier rows (the paper's Fig. 1 left, App. A.1).

    Attributes:
        matrix: ``S_pq = w^p . w^q / (|w^p| |w^q|)``, ``[C, C]``, diagonal 1 (Eq. 11).
        names: class names, where known.
    """

    matrix: Tensor
    names: list[str] | None = None

    @property
    def sorted(self) -> Tensor:
        """Eq. 12: ``S`` with 1 subtracted from the diagonal, each row sorted in descending order."""
        eye = torch.eye(self.matrix.shape[0], dtype=self.matrix.dtype, device=self.matrix.device)
        return (self.matrix - eye).sort(dim=1, descending=True).values

    def curve(self) -> tuple[Tensor, Tensor]:
        """The sorted-similarity curve: the class-wise mean and standard deviation of :attr:`sorted`, ``[C]`` each.

        Its first point is the mean similarity of a class to its most similar class.
        """
        rows = self.sorted
        return rows.mean(dim=0), rows.std(dim=0) if rows.shape[0] > 1 else torch.zeros_like(rows[0])

    def index(self, cls: int | str) -> int:
        """A class index from an index or a name (case-insensitive)."""
        count = self.matrix.shape[0]
        if isinstance(cls, str) and cls.strip().lstrip("-").isdigit():
            cls = int(cls)
        if isinstance(cls, int) and not isinstance(cls, bool):
            if not 0 <= cls < count:
                raise CamscopeError(f"class {cls} is out of range for {count} classes (valid: 0..{count - 1})")
            return cls
        if not isinstance(cls, str) or self.names is None:
            raise CamscopeError(f"class {cls!r}: give a class index (this classifier has no class names)")
        lowered = [name.lower() for name in self.names]
        if cls.strip().lower() in lowered:
            return lowered.index(cls.strip().lower())
        close = difflib.get_close_matches(cls.strip().lower(), lowered, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(self.names[lowered.index(c)]) for c in close)}?" if close else ""
        raise CamscopeError(f"unknown class {cls!r}{hint}")

    def name(self, index: int) -> str:
        return self.names[index] if self.names is not None else str(index)

    def most_similar(self, cls: int | str, k: int = 5) -> list[tuple[int, str, float]]:
        """The ``k`` classes most similar to ``cls``: ``(index, name, cosine)``, most similar first."""
        index = self.index(cls)
        row = self.matrix[index].clone()
        row[index] = float("-inf")
        k = max(0, min(int(k), row.numel() - 1))
        values, indices = row.topk(k)
        return [(int(i), self.name(int(i)), float(v)) for v, i in zip(values, indices)]

    def most_similar_pairs(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The ``k`` most similar pairs of distinct classes ``(p, q, cosine)``, ``p < q``."""
        upper = torch.triu(torch.ones_like(self.matrix, dtype=torch.bool), diagonal=1)
        values = self.matrix.masked_fill(~upper, float("-inf")).flatten()
        k = max(0, min(int(k), int(upper.sum())))
        top = values.topk(k)
        count = self.matrix.shape[0]
        return [(int(i) // count, int(i) % count, float(v)) for v, i in zip(top.values, top.indices)]

    def plot(self, path: str | os.PathLike[str], label: str | None = None) -> Path:
        """Write the sorted-similarity curve (mean with a band of one standard deviation) as a PNG."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        mean, std = (t.detach().cpu().double().numpy() for t in self.curve())
        ranks = range(1, len(mean) + 1)
        figure, axis = plt.subplots(figsize=(5, 3.5), dpi=120)
        try:
            axis.plot(ranks, mean, label=label or f"{len(mean)} classes")
            axis.fill_between(ranks, mean - std, mean + std, alpha=0.25)
            axis.set_xlabel("classes, sorted by similarity")
            axis.set_ylabel("cosine similarity of classifier weights")
            axis.set_xscale("log")
            axis.legend()
            figure.tight_layout()
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png")
        finally:
            plt.close(figure)
        from camscope.io import atomic_write_bytes

        return atomic_write_bytes(path, buffer.getvalue())


def class_similarity(source: nn.Module | Tensor, names: Sequence[str] | None = None) -> ClassSimilarity:
    """The cosine similarity of a classifier's rows (Eq. 11), with the curve of the paper's Fig. 1.

    Args:
        source: a model (its last linear layer), a linear layer, a
            :class:`camscope.models.clip.CLIPClassifier` (its prompt embeddings) or a
            ``[C, K]`` weight matrix.
        names: the class names; the ImageNet names are used for 1000 classes
            when None, CLIP prompts for a CLIP classifier.

    Example:
        >>> import torch
        >>> from camscope.methods.finer import class_similarity
        >>> similarity = class_similarity(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))
        >>> [(i, round(s, 3)) for i, _, s in similarity.most_similar(0, k=2)]
        [(1, 0.707), (2, 0.0)]
    """
    weights = classifier_weights(source).double()
    unit = F.normalize(weights, dim=1)
    matrix = (unit @ unit.T).float()
    count = matrix.shape[0]
    if names is None and isinstance(source, nn.Module) and isinstance(getattr(source, "prompts", None), list):
        names = list(source.prompts)
    if names is None and count == 1000:
        from camscope.models.loading import imagenet_classes

        names = imagenet_classes()
    if names is not None and len(names) != count:
        raise CamscopeError(f"{len(names)} class names were given for a classifier with {count} classes")
    return ClassSimilarity(matrix=matrix, names=list(names) if names is not None else None)
