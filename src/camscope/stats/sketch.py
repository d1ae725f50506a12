"""Mergeable statistics of a stream of values: a quantile sketch and running moments.

Both follow :class:`camscope.passes.engine.Accumulator`: ``update`` with a batch
of values, an exact ``merge`` of two accumulators built on disjoint data, and
``state_dict`` / ``load_state_dict`` that restore the state bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from camscope.errors import CamscopeError
from camscope.io import checked_int, checked_tensor

__all__ = ["Moments", "QuantileSketch"]

#: Cell indices stay below 2**(_MAGNITUDE_BITS + 1) in magnitude (see QuantileSketch).
_MAGNITUDE_BITS = 40
_MIN_EXPONENT = -1000
#: The tensors of a sketch's state, in the order of ``state_dict``.
_SKETCH_STATE = ("counts", "exponent", "offset", "count", "low", "high")


def _pow2(exponent: Tensor) -> Tensor:
    """``2.0 ** exponent`` (int64, -1022..1023) as float64, exactly, built from its bits."""
    return torch.bitwise_left_shift(exponent + 1023, 52).view(torch.float64)


def _floor_scaled(values: Tensor, exponent: Tensor) -> Tensor:
    """``floor(values / 2**exponent)`` as int64; exact: dividing by a power of two only shifts the exponent."""
    return torch.floor(values * _pow2(-exponent)).to(torch.int64)


class QuantileSketch:
    """A deterministic, exactly mergeable quantile sketch with an error bound relative to the range.

    Values are counted in the cells ``[k w, (k + 1) w)`` of a dyadic grid anchored
    at 0, ``w = 2**e``. The width is the smallest power of two for which the cells
    from the minimum to the maximum seen number at most ``bins`` (and at least
    ``2**-40`` times the largest magnitude, which keeps cell indices within int64;
    this floor only matters for float64 inputs whose range is below ``2**-40`` of
    their magnitude). When new values widen the range, pairs of cells merge; the
    grids nest, so this re-binning is exact.

    Guarantees:

    * The state (width, cells, counts, minimum, maximum, count) is a function of
      the multiset of values only: the same for any order, batching or sharding.
      :meth:`merge` of two sketches equals the sketch of the union, exactly.
    * Memory is ``bins`` int64 counts, whatever the number of values.
    * :meth:`quantile` matches ``numpy.percentile`` (linear interpolation between
      order statistics) to within one cell width ``w < 2 (max - min) / (bins - 2)``:
      each order statistic is estimated inside the cell that holds it, and the
      linear interpolation of two estimates is off by at most the larger error.
      With the default 16384 bins that is below 0.0123% of the range. The minimum
      and maximum are exact.

    Args:
        bins: number of cells (at least 16).
        device: where the counts live (the model's device: updates never sync).

    Example:
        >>> import torch
        >>> sketch = QuantileSketch(bins=64)
        >>> sketch.update(torch.arange(101.0))
        >>> sketch.quantile([0.0, 1.0]).tolist()
        [0.0, 100.0]
        >>> other = QuantileSketch(bins=64)
        >>> other.update(torch.arange(101.0, 201.0))
        >>> int(sketch.merge(other).count)
        201
    """

    def __init__(self, bins: int = 16384, device: torch.device | str | None = None) -> None:
        if bins < 16:
            raise CamscopeError(f"a quantile sketch needs at least 16 bins, got {bins}")
        self.bins = int(bins)
        self.counts = torch.zeros(self.bins, dtype=torch.int64, device=device)
        self.exponent = torch.tensor(_MIN_EXPONENT, dtype=torch.int64, device=device)
        self.offset = torch.tensor(0, dtype=torch.int64, device=device)
        self.count = torch.tensor(0, dtype=torch.int64, device=device)
        self.low = torch.tensor(math.inf, dtype=torch.float64, device=device)
        self.high = torch.tensor(-math.inf, dtype=torch.float64, device=device)

    # -- state ------------------------------------------------------------------------

    @property
    def width(self) -> float:
        """The cell width ``w``."""
        return float(_pow2(self.exponent.cpu()))

    def _required_exponent(self, low: Tensor, high: Tensor) -> Tensor:
        """The smallest exponent that fits ``[low, high]`` in ``bins`` cells, floored by the magnitude."""
        device = low.device
        magnitude = torch.maximum(low.abs(), high.abs())
        _, mag_exp = torch.frexp(magnitude)
        by_magnitude = torch.where(
            magnitude > 0, mag_exp.to(torch.int64) - 1 - _MAGNITUDE_BITS, torch.tensor(_MIN_EXPONENT, device=device)
        )
        spread = high - low
        _, spread_exp = torch.frexp(spread / (self.bins - 1))
        # 2**(E-1) <= spread/(bins-1) < 2**E: width 2**(E+1) always fits, 2**(E-3) never does.
        candidates = spread_exp.to(torch.int64) + torch.arange(-3, 2, device=device)
        candidates = candidates.clamp(_MIN_EXPONENT, 1000)
        spans = _floor_scaled(high, candidates) - _floor_scaled(low, candidates) + 1
        fits = spans <= self.bins
        by_range = torch.where(fits, candidates, torch.full_like(candidates, 1 << 20)).min()
        by_range = torch.where(spread > 0, by_range, torch.tensor(_MIN_EXPONENT, device=device))
        return torch.maximum(torch.maximum(by_range, by_magnitude), torch.tensor(_MIN_EXPONENT, device=device))

    def update(self, values: Tensor) -> None:
        """Add values (any shape); runs on their device without synchronising."""
        x = values.detach().reshape(-1).to(device=self.counts.device, dtype=torch.float64)
        if x.numel() == 0:
            return
        low = torch.minimum(self.low, x.min())
        high = torch.maximum(self.high, x.max())
        exponent = torch.maximum(self._required_exponent(low, high), self.exponent)
        offset = _floor_scaled(low, exponent)
        counts = _rebinned(self, exponent, offset)
        cells = (_floor_scaled(x, exponent) - offset).clamp(0, self.bins - 1)
        counts += torch.bincount(cells, minlength=self.bins)
        self.counts, self.exponent, self.offset = counts, exponent, offset
        self.low, self.high = low, high
        self.count = self.count + x.numel()

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """The sketch of both sets of values (equal to sketching their union)."""
        if other.bins != self.bins:
            raise CamscopeError(f"cannot merge quantile sketches with {self.bins} and {other.bins} bins")
        a, b = self.to("cpu"), other.to("cpu")
        merged = QuantileSketch(self.bins)
        merged.low = torch.minimum(a.low, b.low)
        merged.high = torch.maximum(a.high, b.high)
        merged.count = a.count + b.count
        if int(merged.count) == 0:
            return merged
        exponent = torch.maximum(
            merged._required_exponent(merged.low, merged.high), torch.maximum(a.exponent, b.exponent)
        )
        offset = _floor_scaled(merged.low, exponent)
        merged.counts = _rebinned(a, exponent, offset) + _rebinned(b, exponent, offset)
        merged.exponent, merged.offset = exponent, offset
        return merged

    def to(self, device: torch.device | str) -> QuantileSketch:
        """A copy on ``device``."""
        copy = QuantileSketch.__new__(QuantileSketch)
        copy.bins = self.bins
        for name in ("counts", "exponent", "offset", "count", "low", "high"):
            setattr(copy, name, getattr(self, name).to(device))
        return copy

    # -- queries ----------------------------------------------------------------------

    def quantile(self, q: float | Sequence[float] | Tensor) -> Tensor:
        """Quantiles at fractions ``q`` in [0, 1] (``numpy.percentile(values, 100 q)``), float64 on the CPU."""
        sketch = self.to("cpu")
        n = int(sketch.count)
        if n == 0:
            raise CamscopeError("no values were collected: the dataset was empty")
        q = torch.as_tensor(q, dtype=torch.float64).reshape(-1)
        if bool(((q < 0) | (q > 1)).any()) or bool(q.isnan().any()):
            raise CamscopeError(f"quantiles must lie in [0, 1] (percentiles in [0, 100]), got {q.tolist()}")
        position = (n - 1) * q
        lower = position.floor().to(torch.int64)
        upper = (lower + 1).clamp(max=n - 1)
        cumulative = sketch.counts.cumsum(0)
        low_value = _order_statistics(sketch, lower, cumulative, sketch.counts)
        high_value = _order_statistics(sketch, upper, cumulative, sketch.counts)
        low_value = torch.where(lower == 0, sketch.low, low_value)
        high_value = torch.where(upper == n - 1, sketch.high, high_value)
        low_value = torch.where(lower == n - 1, sketch.high, low_value)
        return low_value + (position - lower) * (high_value - low_value)

    def state_dict(self) -> dict[str, Any]:
        """``bins`` and copies of the state tensors (on the sketch's device), for :meth:`load_state_dict`."""
        state: dict[str, Any] = {"bins": self.bins}
        state.update({name: getattr(self, name).clone() for name in _SKETCH_STATE})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> QuantileSketch:
        """Restore what :meth:`state_dict` returned, exactly (on the tensors' device); returns ``self``.

        Raises:
            CamscopeError: for a missing entry or a state no values can give.
        """
        try:
            bins = checked_int(state["bins"], "the number of bins", minimum=16)
            self._restore(bins, *(state[name] for name in _SKETCH_STATE))
        except KeyError as error:
            raise CamscopeError(f"a sketch state misses {error}") from error
        return self

    def _restore(self, bins: int, *tensors: Tensor) -> None:
        """Take ``tensors`` (in the order of ``_SKETCH_STATE``) after checking that they are a sketch's state."""
        counts, exponent, offset, count, low, high = tensors
        if bins < 16:
            raise CamscopeError(f"a quantile sketch needs at least 16 bins, got {bins}: the state is corrupt")
        if not isinstance(counts, Tensor) or tuple(counts.shape) != (bins,):
            got = list(counts.shape) if isinstance(counts, Tensor) else type(counts).__name__
            raise CamscopeError(f"a sketch state of {bins} bins needs {bins} counts, got {got}")
        counts = checked_tensor(counts, "the sketch's counts", [bins], torch.int64, nonnegative=True)
        exponent, offset, count = (
            checked_tensor(t, f"the sketch's {n}", [], torch.int64) for t, n in zip(tensors[1:4], _SKETCH_STATE[1:4])
        )
        low, high = (
            checked_tensor(t, f"the sketch's {n}", [], torch.float64, allow_infinite=True)
            for t, n in zip(tensors[4:], _SKETCH_STATE[4:])
        )
        n = int(count)
        if n < 0 or int(counts.sum()) != n:
            raise CamscopeError(f"a sketch of {n} values holds {int(counts.sum())} counts: the state is corrupt")
        if not _MIN_EXPONENT <= int(exponent) <= 1000:
            raise CamscopeError(f"a sketch's cell exponent {int(exponent)} is out of range: the state is corrupt")
        if n and not (
            math.isfinite(float(low))
            and math.isfinite(float(high))
            and float(low) <= float(high)
            and int(_floor_scaled(low, exponent)) == int(offset)
            and int(_floor_scaled(high, exponent)) - int(offset) < bins
        ):
            raise CamscopeError("a sketch's range does not match its cells: the state is corrupt")
        self.bins = bins
        self.counts, self.exponent, self.offset, self.count, self.low, self.high = (
            counts,
            exponent,
            offset,
            count,
            low,
            high,
        )

    def state(self, prefix: str) -> dict[str, Tensor]:
        """The tensors of an analysis file (``prefix.counts``, ``prefix.scalars_i64``, ``prefix.scalars_f64``)."""
        return {
            f"{prefix}.counts": self.counts.cpu(),
            f"{prefix}.scalars_i64": torch.stack([self.exponent, self.offset, self.count]).cpu(),
            f"{prefix}.scalars_f64": torch.stack([self.low, self.high]).cpu(),
        }

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], prefix: str) -> QuantileSketch:
        """The sketch that :meth:`state` wrote under ``prefix``.

        Raises:
            CamscopeError: for a missing tensor or a state no values can give.
        """
        try:
            counts = tensors[f"{prefix}.counts"]
            integers = checked_tensor(tensors[f"{prefix}.scalars_i64"], f"{prefix}.scalars_i64", [3], torch.int64)
            floats = tensors[f"{prefix}.scalars_f64"]
            floats = checked_tensor(floats, f"{prefix}.scalars_f64", [2], torch.float64, allow_infinite=True)
        except KeyError as error:
            raise CamscopeError(f"the {prefix} sketch misses the tensor {error}") from error
        sketch = cls(max(counts.numel(), 16))
        sketch._restore(counts.numel(), counts, *integers.unbind(0), *floats.unbind(0))
        return sketch

    def equal(self, other: QuantileSketch) -> bool:
        """The same state, bit for bit."""
        if self.bins != other.bins:
            return False
        return all(torch.equal(getattr(self, k).cpu(), getattr(other, k).cpu()) for k in _SKETCH_STATE)


class Moments:
    """Count, mean and sum of squared deviations ``M2 = sum (x - mean)^2`` of a stream of values, float64.

    Batches combine with the parallel update of Chan, Golub and LeVeque ("Updating
    formulae and a pairwise algorithm for computing sample variances", 1979):
    ``n = n_a + n_b``, ``mean = mean_a + (mean_b - mean_a) n_b / n``,
    ``M2 = M2_a + M2_b + (mean_b - mean_a)^2 n_a n_b / n``; :meth:`merge` of two
    disjoint streams equals one pass over both up to float64 rounding.

    Example:
        >>> import torch
        >>> first, second = Moments(), Moments()
        >>> first.update(torch.tensor([1.0, 2.0]))
        >>> second.update(torch.tensor([3.0, 4.0]))
        >>> merged = first.merge(second)
        >>> int(merged.count), float(merged.mean), float(merged.m2)
        (4, 2.5, 5.0)
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.count = torch.tensor(0, dtype=torch.int64, device=device)
        self.mean = torch.tensor(0.0, dtype=torch.float64, device=device)
        self.m2 = torch.tensor(0.0, dtype=torch.float64, device=device)

    def update(self, values: Tensor) -> None:
        """Add values (any shape), on this accumulator's device."""
        x = values.detach().reshape(-1).to(device=self.mean.device, dtype=torch.float64)
        if x.numel() == 0:
            return
        mean = x.mean()
        self._combine(torch.tensor(x.numel(), device=x.device), mean, ((x - mean) ** 2).sum())

    def _combine(self, count: Tensor, mean: Tensor, m2: Tensor) -> None:
        total = self.count + count
        share = count.to(torch.float64) / total.clamp(min=1).to(torch.float64)
        delta = mean - self.mean
        self.m2 = self.m2 + m2 + delta**2 * self.count.to(torch.float64) * share
        self.mean = self.mean + delta * share
        self.count = total

    def merge(self, other: Moments) -> Moments:
        """The moments of both streams (on the CPU)."""
        merged = Moments()
        merged.count, merged.mean, merged.m2 = self.count.cpu(), self.mean.cpu(), self.m2.cpu()
        merged._combine(other.count.cpu(), other.mean.cpu(), other.m2.cpu())
        return merged

    @property
    def variance(self) -> float:
        """The population variance ``M2 / n`` (NaN without values)."""
        count = int(self.count)
        return float(self.m2) / count if count else math.nan

    def state_dict(self) -> dict[str, Any]:
        """Copies of ``count``, ``mean`` and ``m2`` (on their device), for :meth:`load_state_dict`."""
        return {"count": self.count.clone(), "mean": self.mean.clone(), "m2": self.m2.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> Moments:
        """Restore what :meth:`state_dict` returned, exactly; returns ``self``.

        Raises:
            CamscopeError: for a missing entry, NaN or infinite values, or a negative count or ``M2``.
        """
        try:
            count = checked_tensor(state["count"], "the moments' count", [], torch.int64, nonnegative=True)
            mean = checked_tensor(state["mean"], "the moments' mean", [], torch.float64)
            m2 = checked_tensor(state["m2"], "the moments' M2", [], torch.float64, nonnegative=True)
        except KeyError as error:
            raise CamscopeError(f"a moments state misses {error}") from error
        self.count, self.mean, self.m2 = count, mean, m2
        return self


def _rebinned(sketch: QuantileSketch, exponent: Tensor, offset: Tensor) -> Tensor:
    """The sketch's counts on the coarser grid ``(exponent, offset)``; exact because the grids nest."""
    shift = (exponent - sketch.exponent).clamp(0, 62)
    cells = sketch.offset + torch.arange(sketch.bins, device=sketch.counts.device)
    target = torch.div(cells, torch.bitwise_left_shift(torch.ones_like(shift), shift), rounding_mode="floor") - offset
    # Empty cells beyond the range may fall outside; only non-empty cells are guaranteed inside.
    return torch.zeros_like(sketch.counts).scatter_add_(0, target.clamp(0, sketch.bins - 1), sketch.counts)


def _order_statistics(sketch: QuantileSketch, ranks: Tensor, cumulative: Tensor, counts: Tensor) -> Tensor:
    """Estimates of the order statistics of 0-based ``ranks``, each inside the cell that holds it."""
    cells = torch.searchsorted(cumulative, ranks, right=True).clamp(max=sketch.bins - 1)
    before = cumulative[cells] - counts[cells]
    within = (ranks - before).to(torch.float64) + 0.5
    fraction = within / counts[cells].clamp(min=1).to(torch.float64)
    width = _pow2(sketch.exponent)
    values = (sketch.offset + cells).to(torch.float64) * width + fraction * width
    return values.clamp(float(sketch.low), float(sketch.high))
