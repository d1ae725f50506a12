"""Models with several inputs: one input is explained, the others are held fixed.

A model that takes a tuple of inputs is called ``model(*inputs)``, one that takes
a dict ``model(**inputs)``. The explained input (``explained_input=`` index or key)
is the one maps are drawn on and perturbation methods mask; the other entries are
passed as they are. They must have the explained input's batch size, or a batch
of one (then shared by every row). A pass on ``N`` rows of the explained input
(masked copies, reference inputs) pairs them with the others' rows when ``N``
is the batch size, or with the single row of a batch of one.

Example:
    >>> import torch
    >>> bound = BoundInputs.of((torch.zeros(2, 3, 8, 8), torch.ones(2, 4)), explained=0)
    >>> bound.explained.shape, bound.name
    (torch.Size([2, 3, 8, 8]), 'input 0')
    >>> bound.call(lambda image, extra: image.sum() + extra.sum(), torch.ones(2, 3, 8, 8))
    tensor(392.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from camscope.errors import CamscopeError

__all__ = ["BoundInputs"]


@dataclass(frozen=True)
class BoundInputs:
    """A tuple or dict of inputs with one of them explained (the others fixed)."""

    values: tuple[Any, ...] | dict[str, Any]
    key: int | str

    @staticmethod
    def of(inputs: tuple[Any, ...] | list[Any] | Mapping[str, Any], explained: int | str | None) -> BoundInputs:
        """Check the inputs and the explained one (``None``: the first)."""
        if isinstance(inputs, Mapping):
            values: tuple[Any, ...] | dict[str, Any] = dict(inputs)
            keys: list[Any] = list(values)
        else:
            values = tuple(inputs)
            keys = list(range(len(values)))
        if not keys:
            raise CamscopeError("inputs are an empty tuple or dict: pass the model's inputs")
        key = keys[0] if explained is None else explained
        if isinstance(key, bool) or key not in keys:
            shown = ", ".join(repr(k) for k in keys)
            raise CamscopeError(f"explained_input={explained!r} is not one of the inputs (they are {shown})")
        bound = BoundInputs(values, key)
        bound._check_batches()
        return bound

    @property
    def explained(self) -> Any:
        """The explained input."""
        return self.values[self.key]  # type: ignore[index]

    @property
    def name(self) -> str:
        """How error messages name the explained input."""
        return f"input {self.key!r}" if isinstance(self.key, str) else f"input {self.key}"

    def _check_batches(self) -> None:
        explained = self.explained
        if not isinstance(explained, Tensor) or explained.ndim == 0:
            raise CamscopeError(f"the explained {self.name} must be a batch tensor, got {type(explained).__name__}")
        batch = explained.shape[0]
        for key, value in self._items():
            if key != self.key and isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] not in (1, batch):
                raise CamscopeError(
                    f"input {key!r} has {value.shape[0]} rows but the explained {self.name} has {batch}: "
                    "give every input the same batch size (or a batch of one, shared by all rows)"
                )

    def _items(self) -> list[tuple[int | str, Any]]:
        if isinstance(self.values, dict):
            return list(self.values.items())
        return list(enumerate(self.values))

    def select(self, rows: Tensor) -> BoundInputs:
        """The same inputs for a subset (or repetition) of the batch's rows."""
        batch = self.explained.shape[0]

        def pick(value: Any) -> Any:
            if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == batch and batch > 1:
                return value[rows.to(value.device)]
            return value

        return self._replace(pick, self.explained[rows.to(self.explained.device)])

    def call(self, model: Callable[..., Any], explained: Tensor) -> Any:
        """``model`` on the inputs with the explained entry replaced by ``explained`` (``N`` rows)."""
        batch, rows = self.explained.shape[0], explained.shape[0]
        if rows != batch and batch != 1:
            raise CamscopeError(
                f"a pass on {rows} rows of the explained {self.name} cannot be paired with the other inputs' {batch} "
                "rows: with a model of several inputs this method needs one sample at a time (or a gradient method)"
            )

        def pair(value: Any) -> Any:
            if rows != batch and isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == 1:
                return value.expand(rows, *value.shape[1:])
            return value

        replaced = self._replace(pair, explained)
        if isinstance(replaced.values, dict):
            return model(**replaced.values)
        return model(*replaced.values)

    def _replace(self, other: Callable[[Any], Any], explained: Tensor) -> BoundInputs:
        if isinstance(self.values, dict):
            values: tuple[Any, ...] | dict[str, Any] = {
                key: explained if key == self.key else other(value) for key, value in self.values.items()
            }
        else:
            values = tuple(explained if key == self.key else other(value) for key, value in enumerate(self.values))
        return BoundInputs(values, self.key)
