"""Targets for the heads people explain: probabilities, raw scores, binary, regression, multi-label.

Each is a score per sample that the map explains (its gradient for Grad-CAM,
its increase for Score-CAM, its drop for Ablation-CAM):

* :class:`SoftmaxTarget`: the class probability ``softmax(y)_c``
  (pytorch-grad-cam's ``ClassifierOutputSoftmaxTarget``);
* :class:`ReSTTarget`: ``y_c - CE(y, c) = 2 y_c - logsumexp(y)``, pre- and post-softmax
  together (pytorch-grad-cam's ``ClassifierOutputReST``, arXiv:2501.06261);
* :class:`RawScores`: the sum of every output (``RawScoresOutputTarget``, which
  pytorch-grad-cam can back-propagate only for a model of one output);
* :class:`BinaryTarget`: one logit ``y`` of a binary classifier, ``y`` for class 1
  and ``-y`` for class 0 (``BinaryClassifierOutputTarget``);
* :class:`RegressionTarget`: one output of a regression model or its negation: what
  raises the prediction, or what lowers it;
* :class:`MultiLabel`: several classes per sample in one call, one map per (sample,
  class) pair (pytorch-grad-cam needs one call per class).

The logit of one class (``ClassifierOutputTarget``) is :class:`camscope.ClassTarget`.

Example:
    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    >>> SoftmaxTarget(0)(logits), BinaryTarget([1, 0])(logits[:, :1])
    (tensor([0.8808, 0.2689]), tensor([2., -0.]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from camscope.errors import CamscopeError
from camscope.targets.base import ClassSpec, ClassTarget, Target, _class_scores, _class_tensor

__all__ = ["BinaryTarget", "MultiLabel", "RawScores", "ReSTTarget", "RegressionTarget", "SoftmaxTarget"]


class _OnClass(Target):
    """A score of one class per sample computed from all class scores (the class resolved as by ClassTarget)."""

    def __init__(self, classes: ClassSpec | None = None) -> None:
        self.spec = classes
        self.inner = ClassTarget(classes)

    def resolve(self, outputs: Tensor) -> _OnClass:
        resolved = type(self)(self.spec)
        resolved.inner = self.inner.resolve(outputs)
        return resolved

    def _classes(self, outputs: Tensor) -> Tensor:
        classes = self.inner.resolve(outputs).classes() if self.inner.classes() is None else self.inner.classes()
        assert classes is not None  # a ClassTarget always resolves to one class per sample
        return classes.to(outputs.device)

    def classes(self) -> Tensor | None:
        return self.inner.classes()

    def __repr__(self) -> str:
        classes = self.inner.classes()
        return f"{type(self).__name__}({classes.tolist() if classes is not None else self.spec})"


class SoftmaxTarget(_OnClass):
    """The probability of class ``c``: ``softmax(y)_c = exp(y_c) / sum_j exp(y_j)``.

    Its gradient is ``p_c (dy_c - sum_j p_j dy_j)``: the map also shows what lowers the
    other classes. Equal to pytorch-grad-cam's ``ClassifierOutputSoftmaxTarget``.

    Args:
        classes: one class for every sample, or one per sample; None: the predicted class.

    Example:
        >>> import torch
        >>> SoftmaxTarget().resolve(torch.tensor([[0.0, 0.0, 10.0]])).classes().tolist()
        [2]
    """

    def __call__(self, outputs: Tensor) -> Tensor:
        scores = _class_scores(outputs)
        return scores.softmax(dim=1).gather(1, self._classes(scores)[:, None])[:, 0]


class ReSTTarget(_OnClass):
    """``y_c - CE(y, c)``, the logit minus the cross-entropy of the class: ``2 y_c - logsumexp_j y_j``.

    The target proposed with pre- and post-softmax information together (arXiv:2501.06261),
    as pytorch-grad-cam's ``ClassifierOutputReST`` computes it.

    Example:
        >>> import torch
        >>> ReSTTarget(0)(torch.tensor([[1.0, 1.0]]))  # 2 * 1 - log(2 e)
        tensor([0.3069])
    """

    def __call__(self, outputs: Tensor) -> Tensor:
        scores = _class_scores(outputs)
        classes = self._classes(scores)
        return scores.gather(1, classes[:, None])[:, 0] - F.cross_entropy(scores, classes, reduction="none")


class RawScores(Target):
    """The sum of all the model's outputs per sample, ``sum_j y_j``.

    For a model of one output (a regression) this is its output, as pytorch-grad-cam's
    ``RawScoresOutputTarget``; that target returns the whole output vector, which
    pytorch-grad-cam can back-propagate only when it has one element.

    Example:
        >>> import torch
        >>> RawScores()(torch.tensor([[1.0, 2.0], [3.0, -3.0]])).tolist()
        [3.0, 0.0]
    """

    def __call__(self, outputs: Tensor) -> Tensor:
        return outputs.reshape(outputs.shape[0], -1).sum(dim=1)

    def __repr__(self) -> str:
        return "RawScores()"


def _single_output(outputs: Tensor, what: str) -> Tensor:
    """``[B]`` from outputs ``[B]`` or ``[B, 1]``."""
    if outputs.ndim == 1:
        return outputs
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return outputs[:, 0]
    raise CamscopeError(
        f"{what} needs one output per sample ([B] or [B, 1]), got {list(outputs.shape)}: "
        "for a model of several outputs use RegressionTarget(output=j) or ClassTarget"
    )


class BinaryTarget(Target):
    """One logit ``y`` of a binary classifier: ``y`` explains class 1, ``-y`` class 0.

    Equal to pytorch-grad-cam's ``BinaryClassifierOutputTarget``. The model's output is
    ``[B]`` or ``[B, 1]`` (one logit, class 1 when positive).

    Args:
        classes: 0 or 1 for every sample, or one per sample; None: the predicted class
            (1 where ``y > 0``).

    Example:
        >>> import torch
        >>> target = BinaryTarget().resolve(torch.tensor([[2.0], [-1.0]]))
        >>> target.classes().tolist(), target(torch.tensor([[2.0], [-1.0]])).tolist()
        ([1, 0], [2.0, 1.0])
    """

    def __init__(self, classes: ClassSpec | None = None) -> None:
        self.spec = classes
        self._classes: Tensor | None = None

    def resolve(self, outputs: Tensor) -> BinaryTarget:
        logits = _single_output(outputs, "BinaryTarget")
        resolved = BinaryTarget(self.spec)
        if self.spec is None:
            resolved._classes = (logits.detach() > 0).long()
        else:
            resolved._classes = _class_tensor(self.spec, logits.shape[0], 2, "binary class").to(logits.device)
        return resolved

    def __call__(self, outputs: Tensor) -> Tensor:
        if self._classes is None:
            return self.resolve(outputs)(outputs)
        logits = _single_output(outputs, "BinaryTarget")
        sign = self._classes.to(logits.device) * 2 - 1
        return logits * sign.to(logits.dtype)

    def classes(self) -> Tensor | None:
        return self._classes

    def __repr__(self) -> str:
        return f"BinaryTarget({self._classes.tolist() if self._classes is not None else self.spec})"


class RegressionTarget(Target):
    """One output of a regression model, ``y_j`` (what raises it) or ``-y_j`` (what lowers it).

    Args:
        output: the index ``j`` of the output explained (outputs ``[B, J]``; outputs ``[B]`` need 0).
        direction: ``"increase"`` (explain ``y_j``) or ``"decrease"`` (explain ``-y_j``).

    Example:
        >>> import torch
        >>> RegressionTarget(1, direction="decrease")(torch.tensor([[0.5, 2.0]])).tolist()
        [-2.0]
    """

    def __init__(self, output: int = 0, direction: str = "increase") -> None:
        if isinstance(output, bool) or not isinstance(output, (int, np.integer)) or output < 0:
            raise CamscopeError(f"output must be the index of one output (an int >= 0), got {output!r}")
        if direction not in ("increase", "decrease"):
            raise CamscopeError(f"direction must be 'increase' or 'decrease', got {direction!r}")
        self.output = int(output)
        self.direction = direction

    def __call__(self, outputs: Tensor) -> Tensor:
        values = outputs[:, None] if outputs.ndim == 1 else outputs
        if values.ndim != 2 or not 0 <= self.output < values.shape[1]:
            raise CamscopeError(
                f"RegressionTarget(output={self.output}) needs outputs [B, J] with J > {self.output}, "
                f"got {list(outputs.shape)}"
            )
        value = values[:, self.output]
        return -value if self.direction == "decrease" else value

    def __repr__(self) -> str:
        return f"RegressionTarget(output={self.output}, direction={self.direction!r})"


LabelSpec = Sequence[Sequence[int]] | Tensor | np.ndarray


class MultiLabel(Target):
    """Several classes per sample in one call: one map per (sample, class) pair, explained as one batch.

    The batch is expanded to one row per pair (the sample's input repeated), and each
    row explains its class's logit ``y_c``: one forward and one backward for all maps
    with a gradient method. The explanation has one row per pair, in sample order and
    then class order; ``explanation.targets.samples()`` gives each row's sample and
    ``explanation.classes`` its class.

    Args:
        classes: one list of classes per sample (lists may differ in length; an empty
            list gives that sample no row), or a multi-hot ``[B, C]`` tensor or array
            (bool or 0/1). None: the classes whose probability ``sigmoid(y_c)`` exceeds
            ``threshold`` (one clean forward pass more).
        threshold: for ``classes=None``.
        activation: ``"sigmoid"`` (the model outputs logits) or ``None`` (it outputs
            probabilities), for ``classes=None``.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> e = camscope.explain(resnet18(num_classes=5), torch.randn(2, 3, 64, 64), target=MultiLabel([[1, 4], [2]]))
        >>> e.maps.shape, e.targets.samples().tolist(), e.classes.tolist()
        (torch.Size([3, 64, 64]), [0, 0, 1], [1, 4, 2])
    """

    def __init__(self, classes: LabelSpec | None = None, threshold: float = 0.5, activation: str | None = "sigmoid"):
        if activation not in ("sigmoid", None):
            raise CamscopeError(f"activation must be 'sigmoid' or None, got {activation!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
            raise CamscopeError(f"threshold must be a number, got {threshold!r}")
        self.spec = classes
        self.threshold = float(threshold)
        self.activation = activation
        self._samples: Tensor | None = None
        self._classes: Tensor | None = None

    def expand(self, predict: Callable[[], Tensor]) -> tuple[Tensor | None, Target]:
        if self._samples is not None:
            return None, self  # already one row per pair
        if self.spec is None:
            outputs = _class_scores(predict())
            probabilities = outputs.sigmoid() if self.activation == "sigmoid" else outputs
            pairs = (probabilities > self.threshold).nonzero()
        else:
            pairs = _pairs(self.spec)
        if pairs.shape[0] == 0:
            raise CamscopeError(
                "no (sample, class) pair to explain: "
                + ("no class passes the threshold, lower threshold=" if self.spec is None else "the lists are empty")
            )
        expanded = MultiLabel(self.spec, self.threshold, self.activation)
        expanded._samples, expanded._classes = pairs[:, 0], pairs[:, 1]
        return expanded._samples, expanded

    def resolve(self, outputs: Tensor) -> MultiLabel:
        if self._classes is None:
            raise CamscopeError("MultiLabel is expanded by the explainer: pass it as target= to camscope.explain")
        scores = _class_scores(outputs)
        _class_tensor(self._classes.cpu(), scores.shape[0], scores.shape[1], "multi-label class")
        return self

    def __call__(self, outputs: Tensor) -> Tensor:
        if self._classes is None:
            raise CamscopeError("MultiLabel is expanded by the explainer: pass it as target= to camscope.explain")
        scores = _class_scores(outputs)
        return scores.gather(1, self._classes[:, None].to(scores.device))[:, 0]

    def classes(self) -> Tensor | None:
        return self._classes

    def samples(self) -> Tensor | None:
        """The input sample of each explained row (after expansion)."""
        return self._samples

    def __repr__(self) -> str:
        if self._classes is None:
            return f"MultiLabel({self.spec if self.spec is not None else f'threshold={self.threshold}'})"
        assert self._samples is not None
        return f"MultiLabel(pairs={list(zip(self._samples.tolist(), self._classes.tolist()))})"


def _pairs(spec: Any) -> Tensor:
    """``[P, 2]`` (sample, class) pairs from lists of classes per sample or a multi-hot matrix."""
    if isinstance(spec, (Tensor, np.ndarray)):
        matrix = torch.as_tensor(spec)
        if matrix.ndim != 2 or not (matrix.dtype == torch.bool or bool(((matrix == 0) | (matrix == 1)).all())):
            raise CamscopeError(
                f"classes as a tensor must be multi-hot [B, C] (bool or 0/1), got shape {list(matrix.shape)}: "
                "or pass one list of classes per sample"
            )
        return matrix.bool().nonzero()
    if isinstance(spec, str) or not isinstance(spec, Sequence):
        raise CamscopeError(
            f"classes must be one list of classes per sample or a multi-hot [B, C] tensor, got {spec!r}"
        )
    pairs: list[tuple[int, int]] = []
    for sample, row in enumerate(spec):
        if isinstance(row, (int, np.integer)) and not isinstance(row, bool):
            raise CamscopeError(
                f"classes must be one list per sample (e.g. [[1, 4], [2]]), got an int for sample {sample}: "
                "for one class per sample use ClassTarget"
            )
        labels = _class_tensor(list(row), len(row), None, "multi-label class") if len(row) else torch.zeros(0)
        if len(set(labels.tolist())) != len(labels):
            raise CamscopeError(f"sample {sample} lists a class twice: give each class once")
        pairs.extend((sample, int(label)) for label in labels.tolist())
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
