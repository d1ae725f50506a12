"""DiffCAM's target: the example's class in a reference bank, where it has one.

Example:
    >>> import torch
    >>> outputs = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    >>> target = ExampleTarget(1).resolve(outputs)
    >>> target.classes().tolist(), target(outputs).tolist()
    ([1, 1], [0.75, 0.5])
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import Tensor

from camscope.data.folders import UNLABELLED
from camscope.errors import CamscopeError
from camscope.targets.base import Target

__all__ = ["ExampleTarget", "LabelledReferences", "scores_bank_classes"]


class LabelledReferences(Protocol):
    """What the target needs of a reference bank: its labels (``-1``: unlabelled samples)."""

    @property
    def labels(self) -> list[int]: ...


class ExampleTarget(Target):
    """DiffCAM's target: the example's class in the bank, if any; scores where the outputs are class scores.

    DiffCAM needs no score, so the model's outputs may be embeddings or
    feature maps. Explicit classes (``target=``) are bank labels; otherwise the
    predicted class comes from the model's outputs when they score exactly the
    bank's classes ``0..C-1`` (``predict="model"`` forces it), and else from the
    nearest class mean, which the method binds after computing the embeddings.
    """

    def __init__(self, spec: Any = None, bank: LabelledReferences | None = None, predict: str = "auto") -> None:
        self.spec = spec
        self.bank = bank
        self.predict = predict
        self._classes: Tensor | None = None
        self.explicit = spec is not None

    def resolve(self, outputs: Tensor) -> ExampleTarget:
        resolved = ExampleTarget(self.spec, self.bank, self.predict)
        batch = outputs.shape[0]
        if self.spec is not None:
            classes = self.spec
            if isinstance(classes, Tensor) and classes.ndim == 0:
                classes = int(classes)
            if isinstance(classes, bool):
                raise CamscopeError("target must be a class label, got a bool")
            try:
                tensor = (
                    torch.full((batch,), classes) if isinstance(classes, int) else torch.as_tensor(classes).reshape(-1)
                )
            except (TypeError, ValueError, RuntimeError):
                tensor = None
            if tensor is None or not _is_integer(tensor) or tensor.numel() != batch:
                raise CamscopeError(
                    f"target must be one class label, or one per sample ({batch}), got {self.spec!r} "
                    "(bank.label_of(name) turns a class name into its label)"
                )
            resolved._classes = self.check_classes(tensor.long(), outputs).to(outputs.device)
        elif self.predict == "model" or (self.predict == "auto" and scores_bank_classes(outputs, self.bank)):
            if outputs.ndim != 2:
                raise CamscopeError(
                    f"predict='model' needs class scores [B, classes] from the model, got {list(outputs.shape)}: "
                    "use predict='nearest' (nearest class mean) or pass target="
                )
            resolved._classes = outputs.detach().argmax(dim=1)
        return resolved

    def check_classes(self, classes: Tensor, outputs: Tensor) -> Tensor:
        """Explicit classes are labels of a labelled bank, or else classes of the model's outputs ``[B, C]``."""
        labels = sorted(label for label in (self.bank.labels if self.bank is not None else []) if label != UNLABELLED)
        values = sorted({int(c) for c in classes.tolist()})
        if labels:
            missing = [c for c in values if c not in set(labels)]
            if missing:
                shown = ", ".join(str(label) for label in labels[:12]) + (" ..." if len(labels) > 12 else "")
                raise CamscopeError(
                    f"target class {missing[0]} is not in the reference bank, which has labels {shown}: "
                    "pass target= with bank labels (bank.label_of(name) turns a class name into its label)"
                )
            return classes
        if outputs.ndim != 2:
            raise CamscopeError(
                f"target= names classes of the model's outputs, but they are {list(outputs.shape)}, not class "
                "scores [batch, classes]: DiffCAM against a reference group needs no target, leave it out"
            )
        bad = [c for c in values if not 0 <= c < outputs.shape[1]]
        if bad:
            raise CamscopeError(
                f"target class {bad[0]} is out of range for a model with {outputs.shape[1]} outputs "
                f"(valid: 0..{outputs.shape[1] - 1})"
            )
        return classes

    def bind(self, classes: Tensor) -> None:
        """Record the classes the method chose (nearest class mean)."""
        if self._classes is None:
            self._classes = classes

    def __call__(self, outputs: Tensor) -> Tensor:
        classes = self._classes
        if (
            classes is not None
            and outputs.ndim == 2
            and classes.numel() == outputs.shape[0]
            and bool(((classes >= 0) & (classes < outputs.shape[1])).all())
        ):
            return outputs.gather(1, classes[:, None].to(outputs.device))[:, 0]
        return torch.full(
            (outputs.shape[0],),
            math.nan,
            dtype=outputs.dtype if outputs.is_floating_point() else torch.float32,
            device=outputs.device,
        )

    def classes(self) -> Tensor | None:
        return self._classes

    def class_names(self) -> list[str] | None:
        """The explained classes by the bank's names (the labels are the bank's, not the model's classes).

        None when no class was found, or without a bank that names its classes.

        Example:
            >>> from types import SimpleNamespace
            >>> bank = SimpleNamespace(labels=[0, 1], class_name=["cats", "cups"].__getitem__)  # a ReferenceBank's names
            >>> target = ExampleTarget(1, bank).resolve(torch.zeros(2, 5))
            >>> target.class_names(), target
            (['cups', 'cups'], ExampleClass([1, 1] = cups, cups))
        """
        name = getattr(self.bank, "class_name", None)
        if self._classes is None or name is None:
            return None
        return [str(name(int(c))) for c in self._classes.tolist()]

    def __repr__(self) -> str:
        shown = self._classes.tolist() if self._classes is not None else self.spec
        names = self.class_names()
        return f"ExampleClass({shown}{' = ' + ', '.join(names) if names else ''})"


def _is_integer(tensor: Tensor) -> bool:
    return not (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool)


def scores_bank_classes(outputs: Tensor, bank: LabelledReferences | None) -> bool:
    """Whether ``outputs`` are class scores ``[B, C]`` of exactly the bank's labels ``0..C-1``."""
    if bank is None or outputs.ndim != 2:
        return False
    labels = sorted(label for label in bank.labels if label != UNLABELLED)
    return bool(labels) and outputs.shape[1] == len(labels) and labels == list(range(len(labels)))
