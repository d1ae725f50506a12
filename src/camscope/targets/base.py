"""Targets: what an explanation explains.

A target maps the model's outputs to one score per sample (shape ``[B]``), or to
``R`` component scores per sample (shape ``[B, R]``) whose channel weights are
aggregated by the method (Finer-CAM's references). Methods never look at class
indices themselves, so a comparison such as ``y_c - gamma * y_d`` arrives as a
target and works with every method.

Example:
    >>> import torch
    >>> from camscope.targets.base import ClassTarget, ClassDifference
    >>> logits = torch.tensor([[1.0, 3.0, 2.0]])
    >>> ClassTarget(1)(logits)
    tensor([3.])
    >>> ClassDifference(1, 2, gamma=0.5)(logits)
    tensor([2.])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camscope.errors import CamscopeError
from camscope.targets.outputs import output_tensor

__all__ = ["ClassDifference", "ClassTarget", "FrozenTarget", "ScoreTarget", "Target", "as_target"]

ClassSpec = int | Sequence[int] | Tensor | np.ndarray


class Target:
    """Base class of targets.

    Subclasses implement :meth:`__call__`; :meth:`resolve` binds choices that
    depend on the batch (the predicted class, the reference classes) once the
    clean forward pass is known, so the same resolved target scores every
    later pass (masked inputs, noisy copies) consistently.
    """

    #: How the weights of ``[B, R]`` component scores are combined.
    aggregate: str = "mean-before-relu"

    def read(self, outputs: Any) -> Tensor:
        """The tensor this target scores, from the model's outputs as the model returns them.

        The score tensor of a classifier (:func:`camscope.targets.outputs.output_tensor`:
        a tensor, ``logits``/``out`` of a dict, ``.logits``); targets of other tasks read
        other things (a detector's boxes). The engine calls it on every forward pass,
        and methods see its result as the model's outputs, so it must give the same
        shape on every pass.
        """
        return output_tensor(outputs)

    def prepare(self, model: nn.Module) -> Target:
        """Return a target with the choices that depend on the model fixed (before any forward pass)."""
        del model  # the default has no such choice
        return self

    def expand(self, predict: Callable[[], Tensor]) -> tuple[Tensor | None, Target]:
        """The input rows to explain and the target of those rows, for targets with several maps per sample.

        ``None`` keeps the batch as it is. A target with several maps per sample
        (:class:`camscope.targets.heads.MultiLabel`) returns, for each explained row,
        the index of its input sample; ``predict()`` gives the outputs (as :meth:`read`
        gives them) of a clean forward pass on the batch, for choices that need them.
        """
        del predict  # one map per sample: no prediction needed
        return None, self

    def resolve(self, outputs: Tensor) -> Target:
        """Return a target with every batch-dependent choice fixed."""
        del outputs  # the default has no such choice
        return self

    def pool(self, activations: Tensor, size: Sequence[int]) -> Tensor | None:
        """The embedding ``[B, K]`` of the explained part of each input, from activations ``[B, K, *spatial]``.

        DiffCAM compares it with its references. None (the default): the whole input's,
        the spatial mean; a box target gives the mean over its box.
        """
        del activations, size  # None: the caller takes the whole input's mean
        return None

    def __call__(self, outputs: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def classes(self) -> Tensor | None:
        """The explained class per sample, where the target has one."""
        return None

    def baseline_scores(self, outputs: Tensor) -> Tensor:
        """The score on a baseline input that Score-CAM's increase ``S_k`` subtracts.

        The target's own score by default; a comparison subtracts only the explained
        side's score (Finer-CAM's Eq. 9: ``f(x o H_k)^c - gamma f(x o H_k)^d - f(x_b)^c``).
        """
        return self(outputs)


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _contains_bool(values: Any) -> bool:
    if _is_bool(values):
        return True
    if isinstance(values, (np.ndarray, Tensor)):
        return values.dtype in (np.bool_, torch.bool)
    if isinstance(values, Sequence) and not isinstance(values, str):
        return any(_contains_bool(v) for v in values)
    return False


def _class_tensor(classes: ClassSpec, batch: int, num_classes: int | None, what: str) -> Tensor:
    """Validate class indices and broadcast them to one per sample.

    Ints, sequences of ints, integer tensors and NumPy integers or integer arrays
    are accepted; bools (``True`` is not class 1) and floats are refused.
    """
    if _contains_bool(classes):
        raise CamscopeError(f"{what} must be class indices (ints), got a bool: True/False are not class numbers")
    if isinstance(classes, np.integer):
        classes = int(classes)
    if isinstance(classes, (Tensor, np.ndarray)) and classes.ndim == 0:
        if isinstance(classes, Tensor) and classes.is_floating_point():
            raise CamscopeError(f"{what} must hold integer class indices, got dtype {classes.dtype}")
        if isinstance(classes, np.ndarray) and not np.issubdtype(classes.dtype, np.integer):
            raise CamscopeError(f"{what} must hold integer class indices, got dtype {classes.dtype}")
        classes = int(classes)
    if isinstance(classes, int):
        if num_classes is not None and not 0 <= classes < num_classes:
            raise CamscopeError(
                f"{what} {classes} is out of range for a model with {num_classes} outputs (valid: 0..{num_classes - 1})"
            )
        tensor = torch.full((batch,), classes, dtype=torch.long)
    else:
        try:
            tensor = torch.as_tensor(classes)
        except (TypeError, ValueError, RuntimeError, OverflowError) as error:
            raise CamscopeError(
                f"{what} must be an int or a list/array/tensor of ints, got {type(classes).__name__} ({error})"
            ) from error
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            raise CamscopeError(f"{what} must hold integer class indices, got dtype {tensor.dtype}")
        tensor = tensor.long().reshape(-1)
        if tensor.numel() != batch:
            raise CamscopeError(
                f"{what} has {tensor.numel()} entries for a batch of {batch}: "
                "give one class per sample, or a single int for all samples"
            )
    if num_classes is not None:
        bad = (tensor < 0) | (tensor >= num_classes)
        if bool(bad.any()):
            value = int(tensor[bad][0])
            raise CamscopeError(
                f"{what} {value} is out of range for a model with {num_classes} outputs (valid: 0..{num_classes - 1})"
            )
    return tensor


def _class_scores(outputs: Tensor) -> Tensor:
    if outputs.ndim != 2:
        raise CamscopeError(
            f"a class target needs outputs of shape [batch, classes], got {list(outputs.shape)}; "
            "for segmentation pass target=camscope.SegmentationTarget(category, mask), for embeddings "
            "camscope.SimilarityTarget(reference), for anything else ScoreTarget(fn) with fn(outputs) -> [batch]"
        )
    return outputs


class ClassTarget(Target):
    """The score ``y_c`` of one class per sample.

    Args:
        classes: one index for every sample, or one per sample; ``None`` means
            the predicted (top-1) class.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[1.0, 3.0, 2.0], [4.0, 0.0, 1.0]])
        >>> target = ClassTarget().resolve(logits)  # the predicted classes, fixed from now on
        >>> target.classes().tolist(), target(logits).tolist()
        ([1, 0], [3.0, 4.0])
    """

    def __init__(self, classes: ClassSpec | None = None) -> None:
        self._spec = classes
        self._classes: Tensor | None = None

    def resolve(self, outputs: Tensor) -> ClassTarget:
        scores = _class_scores(outputs)
        if self._spec is None:
            classes = scores.detach().argmax(dim=1)
        else:
            classes = _class_tensor(self._spec, scores.shape[0], scores.shape[1], "target class")
        resolved = ClassTarget(self._spec)
        resolved._classes = classes.to(scores.device)
        return resolved

    def __call__(self, outputs: Tensor) -> Tensor:
        if self._classes is None:
            return self.resolve(outputs)(outputs)
        scores = _class_scores(outputs)
        return scores.gather(1, self._classes[:, None].to(scores.device))[:, 0]

    def classes(self) -> Tensor | None:
        return self._classes

    def __repr__(self) -> str:
        shown = self._classes.tolist() if self._classes is not None else self._spec
        return f"ClassTarget({shown})"


class ClassDifference(Target):
    """The difference ``y_c - gamma * y_d`` of two class scores per sample.

    This is the single-reference form of Finer-CAM's target: the map shows what
    raises class ``c`` more than class ``d``. ``gamma = 0`` gives ``y_c``.

    Args:
        explained: class ``c`` (one int, or one per sample; ``None``: predicted).
        versus: class ``d`` (one int, or one per sample).
        gamma: weight of the compared class.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[1.0, 3.0, 2.0], [4.0, 0.0, 1.0]])
        >>> ClassDifference([1, 0], 2, gamma=0.5)(logits).tolist()
        [2.0, 3.5]
    """

    def __init__(self, explained: ClassSpec | None, versus: ClassSpec, gamma: float = 1.0) -> None:
        self.explained = ClassTarget(explained)
        self.versus = ClassTarget(versus)
        self.gamma = float(gamma)

    def resolve(self, outputs: Tensor) -> ClassDifference:
        resolved = ClassDifference(None, 0, self.gamma)
        resolved.explained = self.explained.resolve(outputs)
        resolved.versus = self.versus.resolve(outputs)
        return resolved

    def __call__(self, outputs: Tensor) -> Tensor:
        return self.explained(outputs) - self.gamma * self.versus(outputs)

    def baseline_scores(self, outputs: Tensor) -> Tensor:
        """``y_c`` alone, as Finer-CAM's Eq. 9 subtracts ``f(x_b)^c``."""
        return self.explained(outputs)

    def classes(self) -> Tensor | None:
        return self.explained.classes()

    def __repr__(self) -> str:
        return f"ClassDifference({self.explained!r} - {self.gamma} * {self.versus!r})"


class ScoreTarget(Target):
    """Any differentiable score ``fn(outputs) -> [B]``.

    For a score no named target gives (segmentation: :class:`camscope.SegmentationTarget`,
    regression: :class:`camscope.RegressionTarget`, embeddings:
    :class:`camscope.SimilarityTarget`, boxes: :class:`camscope.BoxTarget`).

    Args:
        fn: maps the model's output tensor to one score per sample.
        name: a label for plots and reports.

    Example:
        >>> import torch
        >>> margin = ScoreTarget(lambda out: out[:, 0] - out.mean(dim=1), name="margin")
        >>> margin(torch.tensor([[3.0, 0.0, 0.0]]))
        tensor([2.])
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], name: str = "score") -> None:
        self.fn = fn
        self.name = name

    def __call__(self, outputs: Tensor) -> Tensor:
        scores = self.fn(outputs)
        if not isinstance(scores, Tensor) or scores.ndim not in (1, 2) or scores.shape[0] != outputs.shape[0]:
            shape = list(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise CamscopeError(
                f"ScoreTarget {self.name!r} must return one score per sample, shape [{outputs.shape[0]}], got {shape}"
            )
        return scores

    def __repr__(self) -> str:
        return f"ScoreTarget({self.name!r})"


class FrozenTarget(Target):
    """A resolved target that stays resolved: ``resolve`` returns it unchanged.

    ``explain`` resolves its target on the logits of the model it explains; wrap a
    target resolved on another model (the sanity check's randomised copies) so that
    the same classes are explained.

    Example:
        >>> import torch
        >>> resolved = ClassTarget().resolve(torch.tensor([[0.0, 1.0]]))
        >>> FrozenTarget(resolved).resolve(torch.tensor([[1.0, 0.0]])).classes().tolist()
        [1]
    """

    def __init__(self, resolved: Target) -> None:
        self.inner = resolved
        self.aggregate = resolved.aggregate

    def resolve(self, outputs: Tensor) -> FrozenTarget:
        del outputs  # already resolved
        return self

    def read(self, outputs: Any) -> Tensor:
        return self.inner.read(outputs)

    def pool(self, activations: Tensor, size: Sequence[int]) -> Tensor | None:
        return self.inner.pool(activations, size)

    def __call__(self, outputs: Tensor) -> Tensor:
        return self.inner(outputs)

    def classes(self) -> Tensor | None:
        return self.inner.classes()

    def baseline_scores(self, outputs: Tensor) -> Tensor:
        return self.inner.baseline_scores(outputs)

    def __repr__(self) -> str:
        return f"FrozenTarget({self.inner!r})"


def as_target(target: Any) -> Target:
    """Turn what users pass as ``target=`` into a :class:`Target`.

    ``None`` is the predicted class; an int, a sequence, a tensor or a NumPy array
    of ints (NumPy integers included) is one class for all samples or one per sample
    (bools are refused: ``True`` is not class 1); a callable is a
    :class:`ScoreTarget`; a :class:`Target` is kept.

    Example:
        >>> as_target(None), as_target(3), as_target([1, 2])
        (ClassTarget(None), ClassTarget(3), ClassTarget([1, 2]))
    """
    if isinstance(target, Target):
        return target
    if _contains_bool(target):
        raise CamscopeError(
            "target must be a class index, a list of class indices or a Target, got a bool: "
            "True/False are not class numbers"
        )
    if isinstance(target, np.integer):
        return ClassTarget(int(target))
    if target is None or (isinstance(target, (int, Sequence, Tensor, np.ndarray)) and not isinstance(target, str)):
        return ClassTarget(target)
    if isinstance(target, str):
        raise CamscopeError(
            f"target {target!r} is a string: pass a class index, or resolve a name with "
            "camscope.models.class_index(name)"
        )
    if callable(target):
        return ScoreTarget(target, getattr(target, "__name__", "score"))
    raise CamscopeError(f"cannot use {type(target).__name__} as a target: pass an int, a list of ints, or a Target")
