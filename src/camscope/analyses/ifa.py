"""Integrated feature analysis (Li et al., IFA): one pass over a dataset, S-CAMs and FS-CAMs.

:func:`analyze` runs a CAM method over a dataset once and collects

* the distribution of the signed class-activation values ``M_c = sum_k w_k A_k``
  (``Explanation.raw``: layer resolution, before ReLU and before any per-image
  scaling) of the explained class over all pixels of all images: quantiles
  (:class:`QuantileSketch`), mean and standard deviation, and the distributions
  of the per-image maxima and minima (for the authors' variant of the scale);
* the importance matrix ``IM [features, classes]``: Eq. 4 of the paper (each
  sample explained for its true class, averaged over that class's samples) and,
  on request, Eq. 3 (every class explained for every sample, averaged over all
  samples), where an entry is the channel's contribution ``sum_ij w_k A_k^ij``;
* optionally each sample's feature profile (its Eq. 4 contributions), for outliers.

The result, an :class:`Analysis`, gives the common intensity scale of the
"S-" CAMs (:meth:`Analysis.scale`, used by ``camscope.explain(..., scale=analysis)``),
the principal features of the "FS-" CAMs (:meth:`Analysis.principal_features`,
used by ``camscope.explain(..., features=mask)``), and the paper's analyses:
overfitting (:meth:`Analysis.compare`), redundancy, outliers and confounder
candidates. Shards of a dataset merge (:meth:`Analysis.merge`), so a pass can
be split over processes: counts, extremes and quantile sketches merge exactly
(bit for bit the state of one pass over everything), sums and moments up to
float64 rounding.

Example:
    >>> import camscope, torch
    >>> from torchvision.models import resnet18
    >>> model = resnet18(num_classes=4).eval()
    >>> data = [(torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,))) for _ in range(2)]
    >>> analysis = camscope.analyze(model, data, method="gradcam", layer="layer4")
    >>> analysis.importance.shape
    torch.Size([512, 4])
    >>> explanation = camscope.explain(model, data[0][0], layer="layer4", scale=analysis)
    >>> bool(explanation.maps.abs().max() < 1)
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.engine.capture import LayerCapture, default_layer, model_state, resolve_layers, validate_inputs
from camscope.engine.explainer import Explainer
from camscope.engine.method import CamContext, CamMethod, CamResult
from camscope.errors import CamscopeError
from camscope.io import load_tensors, save_tensors
from camscope.methods.gradient import CAM, GradCAM, HiResCAM
from camscope.passes.batches import iter_batches, progress
from camscope.targets.base import ClassTarget

__all__ = [
    "Analysis",
    "Comparison",
    "Confounder",
    "Outlier",
    "QuantileSketch",
    "Redundancy",
    "TanhScale",
    "analyze",
]

_KIND = "analysis"
#: Cell indices stay below 2**(_MAGNITUDE_BITS + 1) in magnitude (see QuantileSketch).
_MAGNITUDE_BITS = 40
_MIN_EXPONENT = -1000
#: Budget (elements) for the gradients of one chunk of classes in Eq. 3.
_CHUNK_ELEMENTS = 1 << 25


# --------------------------------------------------------------------------------------
# Quantiles
# --------------------------------------------------------------------------------------


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

    def _rebinned(self, exponent: Tensor, offset: Tensor) -> Tensor:
        """These counts on the coarser grid ``(exponent, offset)``; exact because the grids nest."""
        shift = (exponent - self.exponent).clamp(0, 62)
        cells = self.offset + torch.arange(self.bins, device=self.counts.device)
        target = (
            torch.div(cells, torch.bitwise_left_shift(torch.ones_like(shift), shift), rounding_mode="floor") - offset
        )
        # Empty cells beyond the range may fall outside; only non-empty cells are guaranteed inside.
        return torch.zeros_like(self.counts).scatter_add_(0, target.clamp(0, self.bins - 1), self.counts)

    def update(self, values: Tensor) -> None:
        """Add values (any shape); runs on their device without synchronising."""
        x = values.detach().reshape(-1).to(device=self.counts.device, dtype=torch.float64)
        if x.numel() == 0:
            return
        low = torch.minimum(self.low, x.min())
        high = torch.maximum(self.high, x.max())
        exponent = torch.maximum(self._required_exponent(low, high), self.exponent)
        offset = _floor_scaled(low, exponent)
        counts = self._rebinned(exponent, offset)
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
        merged.counts = a._rebinned(exponent, offset) + b._rebinned(exponent, offset)
        merged.exponent, merged.offset = exponent, offset
        return merged

    def to(self, device: torch.device | str) -> QuantileSketch:
        copy = QuantileSketch.__new__(QuantileSketch)
        copy.bins = self.bins
        for name in ("counts", "exponent", "offset", "count", "low", "high"):
            setattr(copy, name, getattr(self, name).to(device))
        return copy

    # -- queries ----------------------------------------------------------------------

    def _order_statistics(self, ranks: Tensor, cumulative: Tensor, counts: Tensor) -> Tensor:
        """Estimates of the order statistics of 0-based ``ranks``, each inside the cell that holds it."""
        cells = torch.searchsorted(cumulative, ranks, right=True).clamp(max=self.bins - 1)
        before = cumulative[cells] - counts[cells]
        within = (ranks - before).to(torch.float64) + 0.5
        fraction = within / counts[cells].clamp(min=1).to(torch.float64)
        width = _pow2(self.exponent)
        values = (self.offset + cells).to(torch.float64) * width + fraction * width
        return values.clamp(float(self.low), float(self.high))

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
        low_value = sketch._order_statistics(lower, cumulative, sketch.counts)
        high_value = sketch._order_statistics(upper, cumulative, sketch.counts)
        low_value = torch.where(lower == 0, sketch.low, low_value)
        high_value = torch.where(upper == n - 1, sketch.high, high_value)
        low_value = torch.where(lower == n - 1, sketch.high, low_value)
        return low_value + (position - lower) * (high_value - low_value)

    def state(self, prefix: str) -> dict[str, Tensor]:
        return {
            f"{prefix}.counts": self.counts.cpu(),
            f"{prefix}.scalars_i64": torch.stack([self.exponent, self.offset, self.count]).cpu(),
            f"{prefix}.scalars_f64": torch.stack([self.low, self.high]).cpu(),
        }

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], prefix: str) -> QuantileSketch:
        counts = tensors[f"{prefix}.counts"]
        sketch = cls(counts.numel())
        sketch.counts = counts.clone()
        sketch.exponent, sketch.offset, sketch.count = (t.clone() for t in tensors[f"{prefix}.scalars_i64"])
        sketch.low, sketch.high = (t.clone() for t in tensors[f"{prefix}.scalars_f64"])
        return sketch

    def equal(self, other: QuantileSketch) -> bool:
        """The same state, bit for bit."""
        a, b = self.state("s"), other.to(self.counts.device).state("s")
        return all(torch.equal(a[k], b[k]) for k in a)


class _Moments:
    """Count, mean and sum of squared deviations (Chan et al.'s parallel update), float64."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.count = torch.tensor(0, dtype=torch.int64, device=device)
        self.mean = torch.tensor(0.0, dtype=torch.float64, device=device)
        self.m2 = torch.tensor(0.0, dtype=torch.float64, device=device)

    def update(self, values: Tensor) -> None:
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

    def merge(self, other: _Moments) -> _Moments:
        merged = _Moments()
        merged.count, merged.mean, merged.m2 = self.count.cpu(), self.mean.cpu(), self.m2.cpu()
        merged._combine(other.count.cpu(), other.mean.cpu(), other.m2.cpu())
        return merged


# --------------------------------------------------------------------------------------
# The common intensity scale
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Results of the analyses
# --------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Importance matrices of two datasets (e.g. train vs test): overfitting.

    Attributes:
        feature_difference: ``[K]`` mean over the common classes of ``IM_a - IM_b``
            (positive: the feature is more active on the first dataset).
        class_difference: ``[C]`` per class ``||IM_a[:, c] - IM_b[:, c]|| / ||IM_a[:, c]||``
            (NaN for a class missing from either dataset).
        class_correlation: ``[C]`` Pearson correlation of the two columns.
        summary: ``||IM_a - IM_b||_F / ||IM_a||_F`` over the common classes: 0 for
            identical matrices; the paper reads a large value as overfitting.
        classes: the common classes.
        top_features: the features with the largest positive ``feature_difference``.
    """

    feature_difference: Tensor
    class_difference: Tensor
    class_correlation: Tensor
    summary: float
    classes: Tensor
    top_features: list[int]

    def __str__(self) -> str:
        return (
            f"relative difference of the importance matrices: {self.summary:.3f} over {len(self.classes)} classes; "
            f"features more active on the first dataset: {self.top_features[:5]}"
        )


@dataclass
class Redundancy:
    """Features rarely activated for any class ("lazy" features that could be pruned).

    Attributes:
        share: the fraction of lazy features.
        lazy: ``[K]`` bool, ``strength <= threshold * strength.max()``.
        strength: ``[K]`` the largest ``|IM[f, c]|`` over classes.
        threshold: the relative threshold used.
    """

    share: float
    lazy: Tensor
    strength: Tensor
    threshold: float


@dataclass
class Outlier:
    """A sample whose feature profile departs from its class's column of the importance matrix."""

    index: int
    label: int
    prediction: int
    cls: int
    distance: float


@dataclass
class Confounder:
    """A class dominated by very few features: a confounder candidate to check visually (FS-CAM of them).

    Attributes:
        cls: the class.
        features: its top features, by importance.
        share: the share of the column's positive importance they hold.
        effective_features: ``(sum p)^2 / sum p^2`` of the positive importances ``p``:
            1 when a single feature holds everything.
    """

    cls: int
    features: list[int]
    share: float
    effective_features: float


# --------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------


def _float(tensor: Tensor) -> float:
    return float(tensor.detach().cpu())


class Analysis:
    """What one pass of :func:`analyze` collected; merges, saves and loads exactly.

    Attributes:
        method, layer: the CAM method and layer analysed.
        num_features, num_classes: ``K`` and ``C``.
        explain: which class the distribution was collected for (``"predicted"`` or ``"true"``).
        percentiles: the default (low, high) percentiles of :meth:`scale`.
        n_samples: images seen; ``labelled`` of them had a label and ``correct``
            of those were classified correctly; ``stand_ins``: unlabelled images
            counted in Eq. 4 under their predicted class.
        values, image_max, image_min: :class:`QuantileSketch` of the raw values and
            of the per-image maxima and minima.
        class_counts: ``[C]`` samples per class in Eq. 4.
        profiles: ``[N, K]`` per-sample Eq. 4 contributions (``profiles=True``), with
            ``profile_labels``, ``profile_predictions`` and ``profile_ids`` (the
            sample's position in the pass; shards merged later continue the count).
    """

    def __init__(
        self,
        *,
        method: str,
        layer: str,
        num_features: int,
        num_classes: int,
        explain: str = "predicted",
        percentiles: tuple[float, float] = (10.0, 90.0),
        all_classes: bool = False,
        profiles: bool = False,
        bins: int = 16384,
        device: torch.device | str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.layer = layer
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        self.explain = explain
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.info = dict(info or {})
        self.values = QuantileSketch(bins, device)
        self.image_max = QuantileSketch(bins, device)
        self.image_min = QuantileSketch(bins, device)
        self.moments = _Moments(device)
        self.im_sum = torch.zeros(self.num_features, self.num_classes, dtype=torch.float64, device=device)
        self.class_counts = torch.zeros(self.num_classes, dtype=torch.int64, device=device)
        self.im_all_sum = (
            torch.zeros(self.num_features, self.num_classes, dtype=torch.float64, device=device)
            if all_classes
            else None
        )
        self.n_samples = 0
        self.labelled = torch.tensor(0, dtype=torch.int64, device=device)
        self.correct = torch.tensor(0, dtype=torch.int64, device=device)
        self.stand_ins = torch.tensor(0, dtype=torch.int64, device=device)
        self.keep_profiles = profiles
        self._profile_chunks: list[tuple[Tensor, Tensor, Tensor]] = []
        self._profiles: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    # -- accumulation -----------------------------------------------------------------

    def _add_batch(self, result: _BatchResult) -> None:
        raw = result.raw
        self.values.update(raw)
        flat = raw.flatten(1)
        self.image_max.update(flat.amax(dim=1))
        self.image_min.update(flat.amin(dim=1))
        self.moments.update(raw)
        labelled = result.labels >= 0
        self.labelled += labelled.sum()
        self.correct += (labelled & (result.labels == result.predictions)).sum()
        self.stand_ins += (~labelled).sum()
        if result.contributions is not None:
            classes = result.classes
            self.im_sum.index_add_(1, classes, result.contributions.to(torch.float64).T)
            self.class_counts.index_add_(0, classes, torch.ones_like(classes))
            if self.keep_profiles:
                self._profile_chunks.append(
                    (result.contributions.float().cpu(), result.labels.cpu(), result.predictions.cpu())
                )
        if result.all_sum is not None and self.im_all_sum is not None:
            self.im_all_sum += result.all_sum
        self.n_samples += raw.shape[0]

    def _finish(self) -> Analysis:
        if self._profile_chunks:
            contributions, labels, predictions = (torch.cat(parts) for parts in zip(*self._profile_chunks))
            self._profiles = (contributions, labels, predictions, torch.arange(len(labels)))
            self._profile_chunks = []
        if self.n_samples and not (math.isfinite(_float(self.values.low)) and math.isfinite(_float(self.values.high))):
            raise CamscopeError("the class-activation maps contain NaN or infinite values: check the model and inputs")
        return self

    # -- distribution -----------------------------------------------------------------

    @property
    def n_values(self) -> int:
        """Number of pooled values (pixels of all maps)."""
        return int(self.values.count)

    @property
    def mean(self) -> float:
        return _float(self.moments.mean)

    @property
    def std(self) -> float:
        """Population standard deviation of the pooled values."""
        count = int(self.moments.count)
        return math.sqrt(_float(self.moments.m2) / count) if count else math.nan

    @property
    def min(self) -> float:
        return _float(self.values.low)

    @property
    def max(self) -> float:
        return _float(self.values.high)

    @property
    def accuracy(self) -> float | None:
        """Top-1 accuracy over the labelled samples (None without labels)."""
        labelled = int(self.labelled)
        return int(self.correct) / labelled if labelled else None

    def percentile(self, q: float | Sequence[float]) -> float | Tensor:
        """Percentiles ``q`` in [0, 100] of the pooled raw values, as ``numpy.percentile`` gives them.

        Accurate to within ``2 (max - min) / (bins - 2)`` (see :class:`QuantileSketch`).
        Returns a float for a scalar ``q``, else a float64 tensor.
        """
        scalar = isinstance(q, (int, float))
        values = self.values.quantile(torch.as_tensor(q, dtype=torch.float64) / 100)
        return float(values[0]) if scalar else values

    def scale(
        self,
        kind: str = "percentiles",
        percentiles: tuple[float, float] | None = None,
        targets: tuple[float, float] | None = None,
    ) -> TanhScale:
        """The common intensity scale ``tanh(a x + b)`` of S-CAMs.

        Args:
            kind: ``"percentiles"`` (the paper): ``sigma(P_low) = 0.1``,
                ``sigma(P_high) = 0.9`` over the pooled values. ``"image-extremes"``
                (the authors' code): the 90th percentile of the per-image maxima
                maps to 0.95 and the median of the per-image minima to 0.05.
            percentiles: (low, high) for ``"percentiles"`` (default: those given to
                :func:`analyze`, (10, 90)) or for ``"image-extremes"`` (default (50, 90)).
            targets: the scaled values at low and high (default (0.1, 0.9), or
                (0.05, 0.95) for ``"image-extremes"``).
        """
        info = dict(kind=kind, method=self.method, layer=self.layer)
        if kind == "percentiles":
            low_q, high_q = percentiles or self.percentiles
            low, high = self.percentile([low_q, high_q]).tolist()
            return TanhScale.fit(low, high, *(targets or (0.1, 0.9)), **info)
        if kind == "image-extremes":
            low_q, high_q = percentiles or (50.0, 90.0)
            low = float(self.image_min.quantile(low_q / 100)[0])
            high = float(self.image_max.quantile(high_q / 100)[0])
            return TanhScale.fit(low, high, *(targets or (0.05, 0.95)), **info)
        raise CamscopeError(f"unknown scale kind {kind!r}: use 'percentiles' or 'image-extremes'")

    def as_scale(self) -> TanhScale:
        """The default scale (what ``camscope.explain(..., scale=analysis)`` uses)."""
        return self.scale()

    # -- importance -------------------------------------------------------------------

    @property
    def importance(self) -> Tensor:
        """Eq. 4: ``IM[f, c]`` = mean over the samples of class c of their class-c contribution of feature f.

        ``[features, classes]`` float32 on the CPU; columns of classes without samples are 0
        (see ``class_counts``).
        """
        counts = self.class_counts.cpu().clamp(min=1).to(torch.float64)
        return (self.im_sum.cpu() / counts).float()

    @property
    def importance_all(self) -> Tensor | None:
        """Eq. 3: ``IM[f, c]`` = mean over all samples of their class-c contribution (None unless ``all_classes``)."""
        if self.im_all_sum is None:
            return None
        return (self.im_all_sum.cpu() / max(self.n_samples, 1)).float()

    @property
    def has_importance(self) -> bool:
        """Whether the method had channel weights, so that there is an importance matrix."""
        return self.n_samples == 0 or int(self.class_counts.sum()) > 0

    def _matrix(self, source: str) -> Tensor:
        if not self.has_importance:
            raise CamscopeError(
                f"method {self.method!r} has no channel weights, so this analysis has no importance matrix "
                "(only the distribution): analyze with a weight-based method such as gradcam"
            )
        if source in ("true", "eq4"):
            return self.importance
        if source in ("all", "eq3"):
            matrix = self.importance_all
            if matrix is None:
                raise CamscopeError("this analysis has no Eq. 3 matrix: run analyze(..., all_classes=True)")
            return matrix
        raise CamscopeError(f"unknown importance source {source!r}: use 'true' (Eq. 4) or 'all' (Eq. 3)")

    def _present(self, source: str = "true") -> Tensor:
        """Classes with samples (Eq. 4), or all classes (Eq. 3)."""
        if source in ("all", "eq3"):
            return torch.ones(self.num_classes, dtype=torch.bool)
        return self.class_counts.cpu() > 0

    def relative_importance(self, source: str = "true") -> Tensor:
        """``IM[f, c] - mean_c' IM[f, c']`` (mean over classes with samples), as in the paper's line graphs."""
        matrix = self._matrix(source)
        present = self._present(source)
        if not bool(present.any()):
            raise CamscopeError("the importance matrix is empty: no sample was analysed with a class")
        return matrix - matrix[:, present].mean(dim=1, keepdim=True)

    def principal_features(
        self,
        fraction: float = 0.05,
        cls: int | Sequence[int] | Tensor | None = None,
        relative_to_mean: bool = False,
        source: str = "true",
    ) -> Tensor:
        """Masks of the principal features: the top ``fraction`` of an importance-matrix column (FS-CAMs).

        ``ceil(fraction * K)`` features (at least one) with the largest importance
        for the class; ties go to the lower feature index.

        Args:
            fraction: share of the features to keep (paper: 5%; 20% MNIST, 25% ImageNet).
            cls: a class (mask ``[K]``), one class per sample (``[B, K]``, for a batch's
                targets), or None: every class (``[C, K]``; index it with the explained classes).
            relative_to_mean: rank ``IM[:, c] - mean over classes`` instead (the authors'
                "diff" matrix; they rank its absolute value, this ranks the signed value,
                so features that argue against the class are not selected).
            source: ``"true"`` (Eq. 4) or ``"all"`` (Eq. 3).

        Returns:
            A bool mask for ``camscope.explain(..., features=mask)``.
        """
        if not 0 < fraction <= 1:
            raise CamscopeError(f"fraction must be in (0, 1], got {fraction}")
        matrix = self.relative_importance(source) if relative_to_mean else self._matrix(source)
        keep = max(1, math.ceil(fraction * self.num_features - 1e-9))
        order = torch.sort(-matrix.T, dim=1, stable=True).indices[:, :keep]  # [C, keep]
        masks = torch.zeros(self.num_classes, self.num_features, dtype=torch.bool)
        masks.scatter_(1, order, True)
        if cls is None:
            return masks
        classes = torch.as_tensor(cls, dtype=torch.long)
        if bool(((classes < 0) | (classes >= self.num_classes)).any()):
            raise CamscopeError(f"class {classes.tolist()} is out of range for {self.num_classes} classes")
        present = self._present(source)
        missing = classes.reshape(-1)[~present[classes.reshape(-1)]]
        if missing.numel():
            raise CamscopeError(
                f"class {int(missing[0])} had no samples in the analysed data, so it has no importance column: "
                "analyze data that contains it, or use all_classes=True and source='all'"
            )
        return masks[classes]

    # -- analyses ---------------------------------------------------------------------

    def _check_compatible(self, other: Analysis, what: str) -> None:
        if not isinstance(other, Analysis):
            raise CamscopeError(f"can only {what} another Analysis, got {type(other).__name__}")
        mine = (self.method, self.layer, self.num_features, self.num_classes)
        theirs = (other.method, other.layer, other.num_features, other.num_classes)
        if mine != theirs:
            raise CamscopeError(
                f"cannot {what} analyses of different settings (method, layer, features, classes): {mine} vs {theirs}"
            )

    def compare(self, other: Analysis, source: str = "true", top: int = 10) -> Comparison:
        """Compare with another dataset's analysis (this one first: e.g. train vs test) for overfitting."""
        self._check_compatible(other, "compare with")
        common = self._present(source) & other._present(source)
        if not bool(common.any()):
            raise CamscopeError("the two analyses share no class with samples: nothing to compare")
        a, b = self._matrix(source).double(), other._matrix(source).double()
        difference = a - b
        feature_difference = difference[:, common].mean(dim=1)
        column_norm = a.norm(dim=0)
        class_difference = difference.norm(dim=0) / torch.where(
            column_norm > 0, column_norm, torch.ones_like(column_norm)
        )
        class_difference = torch.where(common, class_difference, torch.full_like(class_difference, math.nan))
        ac, bc = a - a.mean(0), b - b.mean(0)
        denominator = ac.norm(dim=0) * bc.norm(dim=0)
        correlation = (ac * bc).sum(0) / torch.where(denominator > 0, denominator, torch.ones_like(denominator))
        correlation = torch.where(common & (denominator > 0), correlation, torch.full_like(correlation, math.nan))
        total = a[:, common].norm()
        summary = float(difference[:, common].norm() / total) if float(total) > 0 else 0.0
        order = torch.sort(-feature_difference, stable=True).indices[:top]
        return Comparison(
            feature_difference=feature_difference.float(),
            class_difference=class_difference.float(),
            class_correlation=correlation.float(),
            summary=summary,
            classes=torch.nonzero(common).flatten(),
            top_features=order.tolist(),
        )

    def redundancy(self, threshold: float = 0.05, source: str = "true") -> Redundancy:
        """Features rarely activated for any class: ``max_c |IM[f, c]| <= threshold * max_f max_c |IM[f, c]|``."""
        present = self._present(source)
        if not bool(present.any()):
            raise CamscopeError("the importance matrix is empty: no sample was analysed with a class")
        strength = self._matrix(source)[:, present].abs().amax(dim=1)
        lazy = strength <= threshold * strength.max()
        return Redundancy(share=float(lazy.float().mean()), lazy=lazy, strength=strength, threshold=threshold)

    @property
    def profiles(self) -> Tensor | None:
        """``[N, K]`` per-sample contributions for Eq. 4's class (None unless ``profiles=True``)."""
        return None if self._profiles is None else self._profiles[0]

    @property
    def profile_labels(self) -> Tensor | None:
        return None if self._profiles is None else self._profiles[1]

    @property
    def profile_predictions(self) -> Tensor | None:
        return None if self._profiles is None else self._profiles[2]

    @property
    def profile_ids(self) -> Tensor | None:
        return None if self._profiles is None else self._profiles[3]

    def outliers(self, k: int = 10, metric: str = "cosine") -> list[Outlier]:
        """The ``k`` samples whose feature profile departs most from their class's importance column.

        Args:
            k: how many.
            metric: ``"cosine"`` (``1 - cos``: a different pattern of features,
                whatever the activation level) or ``"relative"``
                (``||profile - column|| / ||column||``: pattern and level).
        """
        if self._profiles is None:
            raise CamscopeError("outliers need the per-sample feature profiles: run analyze(..., profiles=True)")
        profiles, labels, predictions, ids = self._profiles
        classes = torch.where(labels >= 0, labels, predictions)
        columns = self.importance.T[classes].double()
        profiles = profiles.double()
        if metric == "cosine":
            distance = 1 - F.cosine_similarity(profiles, columns, dim=1, eps=1e-12)
        elif metric == "relative":
            distance = (profiles - columns).norm(dim=1) / columns.norm(dim=1).clamp(min=1e-12)
        else:
            raise CamscopeError(f"unknown outlier metric {metric!r}: use 'cosine' or 'relative'")
        order = torch.sort(-distance, stable=True).indices[: max(0, k)]
        return [
            Outlier(int(ids[i]), int(labels[i]), int(predictions[i]), int(classes[i]), float(distance[i]))
            for i in order
        ]

    def confounders(self, top: int | None = None, share: float = 0.5, source: str = "true") -> list[Confounder]:
        """Confounder candidates: classes where ``top`` features hold at least ``share`` of the positive importance.

        The paper: a confounder gives "extremely high values for some specific
        features and relatively low values for all other features". These are
        candidates to check with an FS-CAM of just those features, not verdicts.

        Args:
            top: how many features may dominate (default ``max(1, ceil(1% of K))``).
            share: the share of the column's positive importance they must hold.
            source: ``"true"`` (Eq. 4) or ``"all"`` (Eq. 3).

        Returns:
            The flagged classes, most dominated first.
        """
        top = top or max(1, math.ceil(0.01 * self.num_features))
        positive = self._matrix(source).double().clamp(min=0)
        present = self._present(source)
        total = positive.sum(dim=0)
        values, indices = torch.sort(positive, dim=0, descending=True, stable=True)
        held = values[:top].sum(dim=0) / torch.where(total > 0, total, torch.ones_like(total))
        effective = total**2 / (positive**2).sum(dim=0).clamp(min=1e-300)
        flagged = present & (total > 0) & (held >= share)
        found = [
            Confounder(int(c), indices[:top, c].tolist(), float(held[c]), float(effective[c]))
            for c in torch.nonzero(flagged).flatten()
        ]
        return sorted(found, key=lambda item: -item.share)

    # -- merge, save, load ------------------------------------------------------------

    def merge(self, other: Analysis) -> Analysis:
        """The analysis of both datasets (shards of one pass): counts exact, sums to float64 rounding."""
        self._check_compatible(other, "merge")
        if (self.explain, self.values.bins) != (other.explain, other.values.bins):
            raise CamscopeError("cannot merge analyses that explain different classes or use different bins")
        if (self.im_all_sum is None) != (other.im_all_sum is None):
            raise CamscopeError("cannot merge an analysis with an Eq. 3 matrix and one without")
        merged = Analysis(
            method=self.method,
            layer=self.layer,
            num_features=self.num_features,
            num_classes=self.num_classes,
            explain=self.explain,
            percentiles=self.percentiles,
            all_classes=self.im_all_sum is not None,
            profiles=self.keep_profiles and other.keep_profiles,
            bins=self.values.bins,
            info=self.info,
        )
        merged.values = self.values.merge(other.values)
        merged.image_max = self.image_max.merge(other.image_max)
        merged.image_min = self.image_min.merge(other.image_min)
        merged.moments = self.moments.merge(other.moments)
        merged.im_sum = self.im_sum.cpu() + other.im_sum.cpu()
        merged.class_counts = self.class_counts.cpu() + other.class_counts.cpu()
        if self.im_all_sum is not None and other.im_all_sum is not None:
            merged.im_all_sum = self.im_all_sum.cpu() + other.im_all_sum.cpu()
        merged.n_samples = self.n_samples + other.n_samples
        for name in ("labelled", "correct", "stand_ins"):
            setattr(merged, name, getattr(self, name).cpu() + getattr(other, name).cpu())
        if self._profiles is not None and other._profiles is not None:
            parts = list(zip(self._profiles, other._profiles))
            contributions, labels, predictions = (torch.cat(pair) for pair in parts[:3])
            ids = torch.cat([self._profiles[3], other._profiles[3] + self.n_samples])
            merged._profiles = (contributions, labels, predictions, ids)
        return merged

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save as safetensors with JSON metadata, atomically (``camscope.io``)."""
        tensors: dict[str, Tensor] = {}
        for name in ("values", "image_max", "image_min"):
            tensors.update(getattr(self, name).state(name))
        tensors["moments.count"] = self.moments.count.cpu().reshape(1)
        tensors["moments.f64"] = torch.stack([self.moments.mean, self.moments.m2]).cpu()
        tensors["im_sum"] = self.im_sum.cpu()
        tensors["class_counts"] = self.class_counts.cpu()
        tensors["counters"] = torch.stack([self.labelled, self.correct, self.stand_ins]).cpu()
        if self.im_all_sum is not None:
            tensors["im_all_sum"] = self.im_all_sum.cpu()
        if self._profiles is not None:
            for name, tensor in zip(
                ("profiles", "profile_labels", "profile_predictions", "profile_ids"), self._profiles
            ):
                tensors[name] = tensor
        metadata = dict(
            method=self.method,
            layer=self.layer,
            num_features=self.num_features,
            num_classes=self.num_classes,
            explain=self.explain,
            percentiles=list(self.percentiles),
            n_samples=self.n_samples,
            profiles=self._profiles is not None,
            info=self.info,
        )
        return save_tensors(path, tensors, metadata, kind=_KIND)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Analysis:
        """Load a file written by :meth:`save` (checks its kind and format version)."""
        tensors, header = load_tensors(path, kind=_KIND)
        try:
            analysis = cls(
                method=header["method"],
                layer=header["layer"],
                num_features=header["num_features"],
                num_classes=header["num_classes"],
                explain=header["explain"],
                percentiles=tuple(header["percentiles"]),
                all_classes="im_all_sum" in tensors,
                profiles=bool(header.get("profiles")),
                bins=tensors["values.counts"].numel(),
                info=header.get("info", {}),
            )
            for name in ("values", "image_max", "image_min"):
                setattr(analysis, name, QuantileSketch.from_state(tensors, name))
            analysis.moments.count = tensors["moments.count"][0].clone()
            analysis.moments.mean, analysis.moments.m2 = (t.clone() for t in tensors["moments.f64"])
            analysis.im_sum = tensors["im_sum"].clone()
            analysis.class_counts = tensors["class_counts"].clone()
            analysis.labelled, analysis.correct, analysis.stand_ins = (t.clone() for t in tensors["counters"])
            if "im_all_sum" in tensors:
                analysis.im_all_sum = tensors["im_all_sum"].clone()
            if header.get("profiles"):
                analysis._profiles = tuple(  # type: ignore[assignment]
                    tensors[name] for name in ("profiles", "profile_labels", "profile_predictions", "profile_ids")
                )
            analysis.n_samples = int(header["n_samples"])
        except KeyError as error:
            raise CamscopeError(f"{path} is an incomplete analysis file (missing {error}): write it again") from error
        return analysis

    def summary(self) -> dict[str, Any]:
        """The main numbers, JSON-friendly."""
        low, high = self.percentiles
        p_low, p_high = self.percentile([low, high]).tolist() if self.n_values else (math.nan, math.nan)
        return dict(
            method=self.method,
            layer=self.layer,
            explain=self.explain,
            samples=self.n_samples,
            values=self.n_values,
            features=self.num_features,
            classes=self.num_classes,
            classes_with_samples=int((self.class_counts > 0).sum()),
            accuracy=self.accuracy,
            mean=self.mean,
            std=self.std,
            min=self.min,
            max=self.max,
            **{f"P{low:g}": p_low, f"P{high:g}": p_high},
        )

    def __repr__(self) -> str:
        return (
            f"Analysis(method={self.method!r}, layer={self.layer!r}, samples={self.n_samples}, "
            f"features={self.num_features}, classes={self.num_classes})"
        )


# --------------------------------------------------------------------------------------
# The dataset pass
# --------------------------------------------------------------------------------------


_CONTEXT_FIELDS = {item.name for item in fields(CamContext)}


class _NeedsPerClassLoop(Exception):
    """A method asked for extra forward passes inside the batched Eq. 3 computation."""


def _no_extra_passes(*_: Any) -> Any:
    raise _NeedsPerClassLoop


def _class_gradients(logits: Tensor, activations: Tensor, rows: Tensor, retain_graph: bool) -> Tensor:
    """``d logits[b, rows[r, b]] / d activations`` for each row r: ``[R, B, ...]`` in one batched backward."""
    one_hot = F.one_hot(rows, logits.shape[1]).to(logits.dtype)  # [R, B, C]
    if rows.shape[0] == 1:
        (grads,) = torch.autograd.grad(logits, activations, one_hot[0], retain_graph=retain_graph, allow_unused=True)
        grads = torch.zeros_like(activations) if grads is None else grads
        return grads.unsqueeze(0)
    try:
        (grads,) = torch.autograd.grad(
            logits, activations, one_hot, retain_graph=retain_graph, is_grads_batched=True, allow_unused=True
        )
    except RuntimeError:
        # Some operators have no batched backward: one backward per row.
        grads = torch.stack([_class_gradients(logits, activations, row[None], retain_graph=True)[0] for row in rows])
    if grads is None:
        return torch.zeros(rows.shape[0], *activations.shape, dtype=activations.dtype, device=activations.device)
    return grads


@dataclass
class _BatchResult:
    raw: Tensor
    contributions: Tensor | None
    classes: Tensor
    labels: Tensor
    predictions: Tensor
    all_sum: Tensor | None
    num_classes: int
    num_features: int


class _Pass:
    """One method at one layer over batches: the explained map, Eq. 4 and Eq. 3 contributions."""

    def __init__(self, explainer: Explainer, name: str, module: nn.Module, all_classes: bool, class_chunk: int | None):
        self.explainer = explainer
        self.method: CamMethod = explainer.method
        self.name = name
        self.layers = [(name, module)]
        self.all_classes = all_classes
        self.class_chunk = class_chunk
        self.loop_for_all_classes = False

    def _context(
        self, inputs: Tensor, activations: Tensor, logits: Tensor, classes: Tensor, capture: LayerCapture | None
    ) -> CamContext:
        """A method's view of a batch explained for ``classes``; without ``capture`` no extra pass is allowed."""
        target = ClassTarget(classes).resolve(logits)
        explainer, name = self.explainer, self.name
        extra: dict[str, Any] = {}
        if capture is None:
            forward = gradients_at = activations_at = _no_extra_passes
        else:

            def forward(x: Tensor) -> Tensor:
                return explainer._plain_forward(x, capture)

            def gradients_at(x: Tensor) -> tuple[Tensor, Tensor]:
                return explainer._gradients_at(x, name, capture, target)

            def activations_at(x: Tensor, native: bool = False) -> Tensor:
                return explainer._activations_at(x, name, capture, native)

        if "activations_at" in _CONTEXT_FIELDS:
            extra["activations_at"] = activations_at
        return CamContext(
            model=explainer.model,
            inputs=inputs,
            layer=name,
            activations=activations,
            gradients=None,
            outputs=logits,
            target=target,
            scores=target(logits),
            forward=forward,
            gradients_at=gradients_at,
            **extra,
        )

    def _apply(self, context: CamContext) -> tuple[Tensor, Tensor | None]:
        """(raw [B, ...], contributions [B, K] or None) of one method call."""
        result: CamResult = self.method(context)
        if result.weights is None:
            return result.raw, None
        weighted = result.weights * context.activations
        return weighted.sum(dim=1), weighted.sum(dim=context.spatial_dims)

    def run(self, inputs: Tensor, labels: Tensor, explain: str) -> _BatchResult:
        """The explained raw map, Eq. 4 contributions and Eq. 3 sums of a batch (labels on the CPU)."""
        explainer, method = self.explainer, self.method
        need_grad = method.uses_gradients
        with model_state(explainer.model, explainer.eval_mode), torch.inference_mode(False):
            with LayerCapture(self.layers, need_grad=need_grad) as capture:
                if explain == "true" and bool((labels < 0).any()):
                    raise CamscopeError(
                        "explain='true' needs a label for every image, but some have none: use explain='predicted'"
                    )
                target = ClassTarget(None) if explain == "predicted" else ClassTarget(labels)
                logits, resolved, _ = explainer._pass(inputs, capture, target, need_grad)
                num_classes = logits.shape[1]
                if bool((labels >= num_classes).any()):
                    raise CamscopeError(
                        f"label {int(labels.max())} is out of range for a model with {num_classes} outputs: "
                        "check that the dataset's class indices are the model's"
                    )
                labels = labels.to(logits.device)
                native = capture.activations[self.name]
                detached = logits.detach()
                predictions = detached.argmax(dim=1)
                explained = resolved.classes()
                truth = torch.where(labels >= 0, labels, predictions)
                second = explain == "predicted" and bool((truth != explained).any())
                rows = torch.stack([explained, truth]) if second else explained[None]
                activations = explainer._channels_first(native.detach(), inputs, self.name)
                grads = _class_gradients(logits, native, rows, retain_graph=self.all_classes) if need_grad else None
                outputs = []
                for r in range(rows.shape[0]):
                    context = self._context(inputs, activations, detached, rows[r], capture)
                    if grads is not None:
                        context.gradients = explainer._channels_first(grads[r], inputs, self.name)
                    outputs.append(self._apply(context))
                raw, contributions = outputs[0]
                if second:
                    contributions = outputs[1][1]
                all_sum = None
                if self.all_classes and not self.loop_for_all_classes and not self._batchable():
                    self.loop_for_all_classes = True
                if self.all_classes and not self.loop_for_all_classes:
                    try:
                        all_sum = self._all_classes_batched(inputs, native, activations, logits)
                    except _NeedsPerClassLoop:
                        self.loop_for_all_classes = True
        if self.all_classes and self.loop_for_all_classes:
            all_sum = self._all_classes_loop(inputs, num_classes)
        return _BatchResult(
            raw=raw.detach(),
            contributions=None if contributions is None else contributions.detach(),
            classes=truth,
            labels=labels,
            predictions=predictions,
            all_sum=all_sum,
            num_classes=num_classes,
            num_features=activations.shape[1],
        )

    def _batchable(self) -> bool:
        """Eq. 3 in batched backwards: gradient methods and CAM (perturbation methods need their own passes)."""
        return self.method.uses_gradients or type(self.method) is CAM

    def _chunk_size(self, batch: int, activations: Tensor, num_classes: int) -> int:
        if self.class_chunk:
            return max(1, min(self.class_chunk, num_classes))
        per_class = 3 * batch * activations[0].numel()
        return max(1, min(num_classes, _CHUNK_ELEMENTS // max(per_class, 1)))

    def _all_classes_batched(self, inputs: Tensor, native: Tensor, activations: Tensor, logits: Tensor) -> Tensor:
        """Eq. 3 sums ``[K, C]``: every class for every sample, chunks of classes in batched backwards.

        Grad-CAM and HiResCAM contributions are computed in closed form from the
        gradients (``mean_ij G * sum_ij A`` and ``sum_ij G A``); other gradient
        methods and CAM run on the chunk as one batch of ``chunk * B`` samples
        (activations repeated; ``ctx.inputs`` stays the batch itself: a method that
        needs extra passes raises and the analysis falls back to
        :meth:`_all_classes_loop`).
        """
        batch, num_classes = logits.shape
        chunk = self._chunk_size(batch, activations, num_classes)
        total = torch.zeros(activations.shape[1], num_classes, dtype=torch.float64, device=activations.device)
        detached = logits.detach()
        spatial = tuple(range(2, activations.ndim))
        closed_form = type(self.method) in (GradCAM, HiResCAM)
        activation_sums = activations.sum(dim=spatial)
        for start in range(0, num_classes, chunk):
            classes = torch.arange(start, min(start + chunk, num_classes), device=logits.device)
            rows = classes[:, None].expand(-1, batch)  # [c, B]
            count = rows.shape[0]
            grads = None
            if self.method.uses_gradients:
                grads = _class_gradients(logits, native, rows, retain_graph=True)
                grads = self.explainer._channels_first(
                    grads.reshape(count * batch, *grads.shape[2:]), inputs, self.name
                )
            if closed_form and grads is not None:
                grads = grads.reshape(count, batch, *grads.shape[1:])
                if type(self.method) is GradCAM:
                    contributions = grads.mean(dim=tuple(d + 1 for d in spatial)) * activation_sums
                else:
                    contributions = (grads * activations).sum(dim=tuple(d + 1 for d in spatial))
            else:
                repeated = activations.repeat(count, *([1] * (activations.ndim - 1)))
                context = self._context(inputs, repeated, detached.repeat(count, 1), rows.reshape(-1), capture=None)
                context.gradients = grads
                _, contributions = self._apply(context)
                if contributions is None:
                    raise CamscopeError(
                        f"method {self.method.name!r} has no channel weights: it has no importance matrix"
                    )
            total[:, start : start + count] = contributions.reshape(count, batch, -1).sum(dim=1).T.to(torch.float64)
        return total

    def _all_classes_loop(self, inputs: Tensor, num_classes: int) -> Tensor:
        """Eq. 3 sums for methods that need extra passes (perturbation, smoothing): one explanation per class."""
        columns = []
        for cls in range(num_classes):
            explanation = self.explainer(inputs, target=cls)
            if explanation.contributions is None:
                raise CamscopeError(f"method {self.method.name!r} has no channel weights: it has no importance matrix")
            columns.append(explanation.contributions.sum(dim=0).to(torch.float64))
        return torch.stack(columns, dim=1)


def _dataset_length(data: Any, batch_size: int) -> int | None:
    try:
        if isinstance(data, torch.utils.data.DataLoader):
            return len(data)
        if isinstance(data, (str, os.PathLike)):
            return None
        from camscope.data.folders import ImageFolderData

        if isinstance(data, ImageFolderData):
            return math.ceil(len(data) / batch_size)
        if isinstance(data, Tensor):
            return math.ceil(len(data) / batch_size)
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def analyze(
    model: nn.Module,
    data: Any,
    method: str | CamMethod = "gradcam",
    layer: Any = None,
    *,
    explain: str = "predicted",
    percentiles: tuple[float, float] = (10, 90),
    all_classes: bool = False,
    class_chunk: int | None = None,
    profiles: bool = False,
    batch_size: int = 32,
    size: int = 224,
    device: torch.device | str | None = None,
    bins: int = 16384,
    show_progress: bool | None = None,
    eval_mode: bool = True,
    layout: str = "auto",
    grid: tuple[int, int] | None = None,
    prefix_tokens: int | None = None,
    **options: Any,
) -> Analysis:
    """One pass of integrated feature analysis over a dataset.

    Per batch: one forward pass and one backward down to the layer (two
    gradients in one batched backward when the explained class is the predicted
    one and a sample's label differs), then, in torch on the model's device:

    * the raw map ``M = sum_k w_k A_k`` of the explained class feeds the quantile
      sketches (all values; per-image maxima and minima) and the moments;
    * the contributions ``sum_ij w_k A_k^ij`` of each sample's true class (its
      predicted class when it has no label: counted in ``stand_ins``) are added to
      the column of that class (Eq. 4; the average over each class's samples, not
      the authors' code's last sample per class);
    * with ``all_classes``, the contributions of every class for every sample
      (Eq. 3): the gradients of chunks of classes come from one batched backward
      each (``is_grads_batched``), so 1000 classes cost about ``1000 / chunk``
      backward passes through the layers after the chosen one, not 1000 forward
      passes. Methods that need extra forward passes (Smooth Grad-CAM++,
      perturbation methods) fall back to one explanation per class.

    Memory does not depend on the dataset size (unless ``profiles``), and every
    part merges exactly across shards (:meth:`Analysis.merge`).

    Args:
        model: a classifier returning ``[B, C]`` scores.
        data: a DataLoader or iterable of ``(inputs, labels)`` batches (labels -1 for
            none), input tensors, one tensor, or an image folder (``root/CLASS/*``;
            classes by folder order).
        method: a CAM method with channel weights (all gradient methods, CAM,
            Score-CAM); methods without weights give the distribution only.
        layer: the layer (one); None picks the default.
        explain: ``"predicted"`` (the paper's default) or ``"true"``: which class the
            distribution of the values (and so the scale) is collected for.
        percentiles: default (low, high) percentiles of :meth:`Analysis.scale`.
        all_classes: also compute Eq. 3 (every class for every sample).
        class_chunk: classes per batched backward for Eq. 3 (default: by memory).
        profiles: keep each sample's Eq. 4 contributions ``[N, K]`` (outliers).
        batch_size, size: batching and image size for folders and tensors.
        device: where to run (default: the model's device).
        bins: cells of the quantile sketches (error below ``2 range / (bins - 2)``).
        show_progress: progress bar (default: when stderr is a terminal).
        eval_mode, layout, grid, prefix_tokens, **options: as for :class:`camscope.Explainer`.

    Returns:
        An :class:`Analysis`.
    """
    if explain not in ("predicted", "true"):
        raise CamscopeError(f"explain must be 'predicted' or 'true', got {explain!r}")
    low, high = (float(p) for p in percentiles)
    if not 0 <= low < high <= 100:
        raise CamscopeError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles}")
    if batch_size < 1:
        raise CamscopeError(f"batch_size must be at least 1, got {batch_size}")
    if not isinstance(model, nn.Module):
        raise CamscopeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    device = torch.device(device) if device is not None else _model_device(model)
    explainer = Explainer(
        model,
        layer=layer,
        method=method,
        eval_mode=eval_mode,
        layout=layout,
        grid=grid,
        prefix_tokens=prefix_tokens,
        **options,
    )
    prepared = (
        explainer.method.prepare_target(ClassTarget(None), model)
        if hasattr(explainer.method, "prepare_target")
        else None
    )
    if prepared is not None and not isinstance(prepared, ClassTarget):
        raise CamscopeError(
            f"method {explainer.method.name!r} explains a comparison of classes, not one class: "
            "integrated feature analysis needs a single-class method such as gradcam"
        )
    analysis: Analysis | None = None
    runner: _Pass | None = None
    batches: Iterable[tuple[Tensor, Tensor]] = iter_batches(data, batch_size=batch_size, size=size)
    total = _dataset_length(data, batch_size)
    for inputs, labels in progress(batches, "analyzing", total=total, enabled=show_progress):
        inputs = validate_inputs(model, inputs.to(device))
        if runner is None:
            chosen = layer if layer is not None else default_layer(model, inputs)
            resolved = resolve_layers(model, chosen)
            if len(resolved) != 1:
                raise CamscopeError("analyze works on one layer: pass a single layer name")
            name, module = resolved[0]
            runner = _Pass(explainer, name, module, all_classes, class_chunk)
        result = runner.run(inputs, labels.cpu(), explain)
        if analysis is None:
            analysis = Analysis(
                method=explainer.method.name,
                layer=runner.name,
                num_features=result.num_features,
                num_classes=result.num_classes,
                explain=explain,
                percentiles=(low, high),
                all_classes=all_classes,
                profiles=profiles,
                bins=bins,
                device=device,
                info={"spatial": list(result.raw.shape[1:]), "input": list(inputs.shape[1:])},
            )
        analysis._add_batch(result)
    if analysis is None:
        raise CamscopeError("the dataset gave no batches: check the folder or loader")
    return analysis._finish()
