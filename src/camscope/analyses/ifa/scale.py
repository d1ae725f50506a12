"""The common intensity scale of S-CAMs: ``tanh(a x + b)`` fitted to two reference values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from camscope.errors import CamscopeError

__all__ = ["TanhScale"]


@dataclass(frozen=True)
class TanhScale:
    """The common intensity scale of S-CAMs: ``sigma(x) = tanh(a x + b)``.

    ``a = (atanh(high_target) - atanh(low_target)) / (high - low)`` and
    ``b = atanh(low_target) - a low``, so that ``sigma(low) = low_target`` and
    ``sigma(high) = high_target`` exactly; with the paper's defaults (P10 -> 0.1,
    P90 -> 0.9) ``b = (P90 atanh(0.1) - P10 atanh(0.9)) / (P90 - P10)``. The map is
    strictly increasing, keeps the sign information (negative evidence maps below
    ``sigma(0)``) and lies in (-1, 1).

    Attributes:
        a, b: the slope and offset.
        low, high: the raw values mapped to ``low_target`` and ``high_target``.
        kind: how low/high were chosen (``"percentiles"`` or ``"image-extremes"``).
        method, layer: what the values were collected for (None: not checked).

    Example:
        >>> import torch
        >>> scale = TanhScale.fit(-1.0, 3.0)
        >>> [round(v, 12) for v in scale(torch.tensor([-1.0, 3.0], dtype=torch.float64)).tolist()]
        [0.1, 0.9]
    """

    a: float
    b: float
    low: float
    high: float
    low_target: float = 0.1
    high_target: float = 0.9
    kind: str = "percentiles"
    method: str | None = None
    layer: str | None = None

    @classmethod
    def fit(cls, low: float, high: float, low_target: float = 0.1, high_target: float = 0.9, **info: Any) -> TanhScale:
        """The scale that maps ``low`` to ``low_target`` and ``high`` to ``high_target``."""
        low, high = float(low), float(high)
        if not (-1 < low_target < high_target < 1):
            raise CamscopeError(f"scale targets must satisfy -1 < low < high < 1, got {low_target} and {high_target}")
        if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
            raise CamscopeError(
                f"the scale needs two distinct reference values, got {low!r} and {high!r}: the class "
                "activations barely vary over this dataset; analyze more images or use other percentiles"
            )
        a = (math.atanh(high_target) - math.atanh(low_target)) / (high - low)
        b = math.atanh(low_target) - a * low
        return cls(a=a, b=b, low=low, high=high, low_target=low_target, high_target=high_target, **info)

    def __call__(self, values: Tensor) -> Tensor:
        """``tanh(a values + b)``, in (-1, 1)."""
        return torch.tanh(self.a * values + self.b)

    def inverse(self, scaled: Tensor) -> Tensor:
        """The raw values of scaled ones: ``(atanh(y) - b) / a``."""
        return (torch.atanh(scaled) - self.b) / self.a

    def as_scale(self) -> TanhScale:
        return self
