"""The Finer-CAM target: a class against the classes it is confused with.

Zhang et al., "Finer-CAM: Spotting the Difference Reveals Finer Details for Visual
Explanation", CVPR 2025, arXiv:2501.11309.

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
backward and combines the per-reference maps. The ``finer-*`` methods
(:mod:`camscope.methods.finer`) wrap the user's class target in a
:class:`Finer` with their options.

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

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.errors import CamscopeError
from camscope.options import Option
from camscope.targets.base import ClassTarget, Target, _contains_bool

__all__ = [
    "AGGREGATIONS",
    "FINER_OPTIONS",
    "SELECTION_RULES",
    "WEIGHTINGS",
    "Finer",
    "ReferenceSpec",
    "classifier_weights",
    "explicit_references",
]

#: How the maps of the ``T`` comparisons combine (the paper's Table 3).
AGGREGATIONS = ("mean-before-relu", "max-before-relu", "mean-after-relu")
#: How references are chosen when only their number is given.
SELECTION_RULES = ("predicted", "closest-logit", "weight-similarity")
#: How the comparisons are weighted in the aggregate.
WEIGHTINGS = ("uniform", "probability")

ReferenceSpec = int | Sequence[int] | Sequence[Sequence[int]] | Tensor


def explicit_references(spec: Any) -> Tensor | None:
    """Explicit reference classes as ``[T]`` (same for all samples) or ``[B, T]``; None for a count.

    Raises:
        CamscopeError: if ``spec`` is neither a count >= 1 nor integer class indices.

    Example:
        >>> explicit_references([[1, 2], [0, 3]]).shape, explicit_references(3)
        (torch.Size([2, 2]), None)
    """
    if _contains_bool(spec):
        raise CamscopeError(
            "references must be a number of classes or class indices, got a bool: True/False are not class numbers"
        )
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


#: The options of the comparison, as the ``finer-*`` methods declare them (Finer's arguments less ``explained``).
FINER_OPTIONS: tuple[Option, ...] = (
    Option(
        "references",
        (int, Sequence, Tensor),
        3,
        "how many reference classes to choose, or the classes (a list, or one list per sample)",
        check=explicit_references,
    ),
    Option("gamma", float, 0.6, "comparison strength: 0 is the base method, the paper uses 0.6", min=0),
    Option(
        "select", str, "predicted", "how references are chosen when only their number is given", choices=SELECTION_RULES
    ),
    Option("aggregate", str, "mean-before-relu", "how the maps of the comparisons combine", choices=AGGREGATIONS),
    Option("weighting", str, "uniform", "how the comparisons are weighted in the aggregate", choices=WEIGHTINGS),
    Option("reverse", bool, False, "explain y_d - y_c (App. C.3; gamma not used): the reference classes' traits"),
    Option("classifier", (nn.Module, Tensor), None, "model, linear layer or [C, K] weights for weight-similarity"),
)
_DECLARED = {option.name: option for option in FINER_OPTIONS}


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
    ``reverse``: ``y_{d_t} - y_c``), which the engine combines by
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
        reverse: explain ``y_{d_t} - y_c`` instead: the paper's reverse comparison
            (App. C.3: the features that "maximize y^d - y^c", the traits of the
            reference classes found in the image); ``gamma`` does not enter. The
            swapped comparison at another strength, ``y_d - gamma * y_c``, is plain
            Finer-CAM explaining ``d`` with ``references=[c]``.
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
        given = dict(
            references=references,
            gamma=gamma,
            select=select,
            aggregate=aggregate,
            weighting=weighting,
            reverse=reverse,
            classifier=classifier,
        )
        checked = {name: _DECLARED[name].validate(value, "Finer") for name, value in given.items()}
        self.explicit = explicit_references(references)
        self.count = None if self.explicit is not None else int(references)  # type: ignore[arg-type]
        self.spec = references
        self.gamma: float = checked["gamma"]
        self.select: str = checked["select"]
        self.aggregate: str = checked["aggregate"]
        self.weighting: str = checked["weighting"]
        self.reverse: bool = checked["reverse"]
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
        # App. C.3's reverse comparison maximises y^d - y^c: gamma does not enter.
        components = compared - explained if self.reverse else explained - self.gamma * compared
        if self._weights is not None:
            components = components * (self._weights.shape[1] * self._weights.to(components))
        return components[:, 0] if components.shape[1] == 1 else components

    def baseline_scores(self, outputs: Tensor) -> Tensor:
        """The explained side's score alone, per component: Eq. 9 subtracts ``f(x_b)^c`` (reversed: ``f(x_b)^{d_t}``)."""
        if self._classes is None or self._references is None:
            return self.resolve(outputs).baseline_scores(outputs)
        scores = _class_scores(outputs)
        explained = scores.gather(1, self._classes[:, None].to(scores.device))
        if self.gamma == 0 and not self.reverse:
            return explained[:, 0]
        compared = scores.gather(1, self._references.to(scores.device))
        side = compared if self.reverse else explained.expand_as(compared)
        if self._weights is not None:
            side = side * (self._weights.shape[1] * self._weights.to(side))
        return side[:, 0] if side.shape[1] == 1 else side

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
