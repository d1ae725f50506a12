"""The result of an integrated feature analysis: distribution, importance matrices, merge, save, load."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import torch
from torch import Tensor

from camscope.analyses.ifa import findings
from camscope.analyses.ifa.batch import BatchResult
from camscope.analyses.ifa.checks import check_settings, check_tensors
from camscope.analyses.ifa.results import Comparison, Confounder, Outlier, Redundancy
from camscope.analyses.ifa.scale import TanhScale
from camscope.errors import CamscopeError
from camscope.io import TensorSpec, check_file_tensors, checked_int, checked_tensor, load_tensors, save_tensors
from camscope.stats.sketch import Moments, QuantileSketch

__all__ = ["Analysis"]

_KIND = "analysis"
#: Plain settings and counters of a state dict, in the order of :meth:`Analysis.state_dict`.
_SETTINGS = ("method", "layer", "num_features", "num_classes", "explain", "n_samples", "keep_profiles")
#: Tensors of a state dict besides the sketches and moments.
_COUNTERS = ("im_sum", "class_counts", "labelled", "correct", "stand_ins")
_SKETCHES = ("values", "image_max", "image_min")


def _float(tensor: Tensor) -> float:
    return float(tensor.detach().cpu())


def _file_specs(profiles: bool) -> dict[str, TensorSpec]:
    """The tensors of an analysis file (:meth:`Analysis.save`): ``K`` features, ``C`` classes, ``N`` profiles."""
    specs: dict[str, TensorSpec] = {}
    for sketch in ("values", "image_max", "image_min"):
        specs[f"{sketch}.counts"] = TensorSpec(torch.int64, ("bins",))
        specs[f"{sketch}.scalars_i64"] = TensorSpec(torch.int64, (3,))
        specs[f"{sketch}.scalars_f64"] = TensorSpec(torch.float64, (2,))
    specs["moments.count"] = TensorSpec(torch.int64, (1,))
    specs["moments.f64"] = TensorSpec(torch.float64, (2,))
    specs["im_sum"] = TensorSpec(torch.float64, ("K", "C"))
    specs["class_counts"] = TensorSpec(torch.int64, ("C",))
    specs["counters"] = TensorSpec(torch.int64, (3,))
    specs["im_all_sum"] = TensorSpec(torch.float64, ("K", "C"), required=False)
    if profiles:
        specs["profiles"] = TensorSpec(torch.float32, ("N", "K"))
        for name in ("profile_labels", "profile_predictions", "profile_ids"):
            specs[name] = TensorSpec(torch.int64, ("N",))
    return specs


def _profile_parts(parts: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(contributions, labels, predictions, ids) of the per-sample profiles."""
    contributions, labels, predictions, ids = parts
    return contributions, labels, predictions, ids


def _merged_profiles(
    first: tuple[Tensor, Tensor, Tensor, Tensor], second: tuple[Tensor, Tensor, Tensor, Tensor], offset: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Two parts' profiles in dataset order: by their ids when these are disjoint (shards of one pass,
    e.g. batch ``i`` of an iterable on rank ``i % world``), else the second after the first (separate passes)."""
    if bool(torch.isin(second[3], first[3]).any()):
        second = (*second[:3], second[3] + offset)
    parts = [torch.cat(pair) for pair in zip(first, second)]
    order = torch.argsort(parts[3], stable=True)
    return _profile_parts([part[order] for part in parts])


def _chunks_with_ids(
    chunks: Sequence[Sequence[Tensor]], gathered: tuple[Tensor, ...] | None
) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Profile chunks of a saved state; chunks saved without ids (camscope 0.1) count on from the gathered ones."""
    restored: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    count = 0 if gathered is None else gathered[3].numel()
    for chunk in chunks:
        ids = chunk[3].clone() if len(chunk) > 3 else torch.arange(count, count + chunk[1].numel())
        restored.append((chunk[0].clone(), chunk[1].clone(), chunk[2].clone(), ids))
        count += chunk[1].numel()
    return restored


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
        self.moments = Moments(device)
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
        self._profile_chunks: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        self._profiles: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    # -- accumulation -----------------------------------------------------------------

    def update(self, result: BatchResult, start: int | None = None) -> None:
        """Add one batch: its raw maps to the sketches and moments, its contributions to the matrices.

        ``start`` is the dataset position of the batch's first sample (the profiles' ids;
        default: counted on from the samples added so far).
        """
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
                first = self.n_samples if start is None else start
                ids = torch.arange(first, first + raw.shape[0])
                self._profile_chunks.append(
                    (result.contributions.float().cpu(), result.labels.cpu(), result.predictions.cpu(), ids)
                )
        if result.all_sum is not None and self.im_all_sum is not None:
            self.im_all_sum += result.all_sum
        self.n_samples += raw.shape[0]

    def finish(self) -> Analysis:
        """End the pass: gather the profiles and check that the maps were finite; returns ``self``."""
        if self._profile_chunks:
            profiles = _profile_parts([torch.cat(parts) for parts in zip(*self._profile_chunks)])
            if self._profiles is not None:  # a pass resumed from a state dict continues the profiles
                profiles = _profile_parts([torch.cat(pair) for pair in zip(self._profiles, profiles)])
            self._profiles = profiles
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

    @overload
    def percentile(self, q: float) -> float: ...

    @overload
    def percentile(self, q: Sequence[float] | Tensor) -> Tensor: ...

    def percentile(self, q: float | Sequence[float] | Tensor) -> float | Tensor:
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
        if kind == "percentiles":
            low_q, high_q = percentiles or self.percentiles
            low, high = self.percentile([low_q, high_q]).tolist()
            low_target, high_target = targets or (0.1, 0.9)
        elif kind == "image-extremes":
            low_q, high_q = percentiles or (50.0, 90.0)
            low = float(self.image_min.quantile(low_q / 100)[0])
            high = float(self.image_max.quantile(high_q / 100)[0])
            low_target, high_target = targets or (0.05, 0.95)
        else:
            raise CamscopeError(f"unknown scale kind {kind!r}: use 'percentiles' or 'image-extremes'")
        return TanhScale.fit(low, high, low_target, high_target, kind=kind, method=self.method, layer=self.layer)

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

    def matrix(self, source: str = "true") -> Tensor:
        """The importance matrix ``[features, classes]``: ``"true"`` (Eq. 4, :attr:`importance`) or ``"all"`` (Eq. 3).

        Raises:
            CamscopeError: for a method without channel weights, an Eq. 3 matrix that
                was not computed, or an unknown source.
        """
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

    def present_classes(self, source: str = "true") -> Tensor:
        """Classes with samples (Eq. 4), or all classes (Eq. 3)."""
        if source in ("all", "eq3"):
            return torch.ones(self.num_classes, dtype=torch.bool)
        return self.class_counts.cpu() > 0

    def relative_importance(self, source: str = "true") -> Tensor:
        """``IM[f, c] - mean_c' IM[f, c']`` (mean over classes with samples), as in the paper's line graphs."""
        matrix = self.matrix(source)
        present = self.present_classes(source)
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
        matrix = self.relative_importance(source) if relative_to_mean else self.matrix(source)
        keep = max(1, math.ceil(fraction * self.num_features - 1e-9))
        order = torch.sort(-matrix.T, dim=1, stable=True).indices[:, :keep]  # [C, keep]
        masks = torch.zeros(self.num_classes, self.num_features, dtype=torch.bool)
        masks.scatter_(1, order, True)
        if cls is None:
            return masks
        classes = torch.as_tensor(cls, dtype=torch.long)
        if bool(((classes < 0) | (classes >= self.num_classes)).any()):
            raise CamscopeError(f"class {classes.tolist()} is out of range for {self.num_classes} classes")
        present = self.present_classes(source)
        missing = classes.reshape(-1)[~present[classes.reshape(-1)]]
        if missing.numel():
            raise CamscopeError(
                f"class {int(missing[0])} had no samples in the analysed data, so it has no importance column: "
                "analyze data that contains it, or use all_classes=True and source='all'"
            )
        return masks[classes]

    # -- analyses ---------------------------------------------------------------------

    def compare(self, other: Analysis, source: str = "true", top: int = 10) -> Comparison:
        """Compare with another dataset's analysis (this one first: e.g. train vs test) for overfitting.

        See :func:`camscope.analyses.ifa.findings.compare`.
        """
        return findings.compare(self, other, source=source, top=top)

    def redundancy(self, threshold: float = 0.05, source: str = "true") -> Redundancy:
        """Features rarely activated for any class: ``max_c |IM[f, c]| <= threshold * max_f max_c |IM[f, c]|``."""
        return findings.redundancy(self, threshold=threshold, source=source)

    def outliers(self, k: int = 10, metric: str = "cosine") -> list[Outlier]:
        """The ``k`` samples whose feature profile departs most from their class's importance column.

        Args:
            k: how many.
            metric: ``"cosine"`` (``1 - cos``: a different pattern of features,
                whatever the activation level) or ``"relative"``
                (``||profile - column|| / ||column||``: pattern and level).
        """
        return findings.outliers(self, k=k, metric=metric)

    def confounders(self, top: int | None = None, share: float = 0.5, source: str = "true") -> list[Confounder]:
        """Confounder candidates: classes where ``top`` features hold at least ``share`` of the positive importance.

        See :func:`camscope.analyses.ifa.findings.confounders`.
        """
        return findings.confounders(self, top=top, share=share, source=source)

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

    # -- merge, save, load ------------------------------------------------------------

    def merge(self, other: Analysis) -> Analysis:
        """The analysis of both datasets (shards of one pass): counts exact, sums to float64 rounding."""
        findings.check_compatible(self, other, "merge")
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
            merged._profiles = _merged_profiles(self._profiles, other._profiles, self.n_samples)
        return merged

    def state_dict(self) -> dict[str, Any]:
        """Everything the analysis holds, as plain values and tensors (copies, on their device).

        :meth:`load_state_dict` (or :meth:`from_state_dict`) restores it exactly, also
        in the middle of a pass (profiles not yet gathered by :meth:`finish` included),
        so a pass can be checkpointed and resumed (``torch.save`` the dict).

        Example:
            >>> analysis = Analysis(method="gradcam", layer="layer4", num_features=8, num_classes=3, bins=64)
            >>> restored = Analysis.from_state_dict(analysis.state_dict())
            >>> (restored.method, restored.num_features, restored.values.bins)
            ('gradcam', 8, 64)
        """
        state: dict[str, Any] = {name: getattr(self, name) for name in _SETTINGS}
        state["percentiles"] = list(self.percentiles)
        state["info"] = copy.deepcopy(self.info)
        for name in _SKETCHES:
            state[name] = getattr(self, name).state_dict()
        state["moments"] = self.moments.state_dict()
        for name in _COUNTERS:
            state[name] = getattr(self, name).clone()
        state["im_all_sum"] = None if self.im_all_sum is None else self.im_all_sum.clone()
        state["profiles"] = None if self._profiles is None else [t.clone() for t in self._profiles]
        state["profile_chunks"] = [[t.clone() for t in chunk] for chunk in self._profile_chunks]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> Analysis:
        """Restore what :meth:`state_dict` returned, settings included, exactly; returns ``self``.

        Raises:
            CamscopeError: for a missing entry, settings of the wrong type, or
                tensors of the wrong shape or with values no pass can give.
        """
        try:
            check_settings(state)
            for name in _SETTINGS:
                setattr(self, name, copy.copy(state[name]))
            low, high = state["percentiles"]
            self.percentiles = (float(low), float(high))
            self.info = copy.deepcopy(state["info"])
            for name in _SKETCHES:
                getattr(self, name).load_state_dict(state[name])
            self.moments.load_state_dict(state["moments"])
            for name in _COUNTERS:
                setattr(self, name, state[name].clone())
            self.im_all_sum = None if state["im_all_sum"] is None else state["im_all_sum"].clone()
            profiles = state["profiles"]
            self._profiles = None if profiles is None else _profile_parts([t.clone() for t in profiles])
            self._profile_chunks = _chunks_with_ids(state["profile_chunks"], self._profiles)
            check_tensors(self)
        except KeyError as error:
            raise CamscopeError(f"an incomplete analysis state (missing {error})") from error
        except CamscopeError as error:
            raise CamscopeError(f"not a valid analysis state: {error}") from error
        except (TypeError, ValueError, AttributeError) as error:
            raise CamscopeError(f"not a valid analysis state: a bad entry ({error})") from error
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Analysis:
        """A new analysis restored from :meth:`state_dict` (see :meth:`load_state_dict`)."""
        try:
            check_settings(state)
            analysis = cls(
                method=state["method"],
                layer=state["layer"],
                num_features=state["num_features"],
                num_classes=state["num_classes"],
                bins=checked_int(state["values"]["bins"], "bins", minimum=16),
            )
        except KeyError as error:
            raise CamscopeError(f"an incomplete analysis state (missing {error})") from error
        except CamscopeError as error:
            raise CamscopeError(f"not a valid analysis state: {error}") from error
        except (TypeError, ValueError, AttributeError) as error:
            raise CamscopeError(f"not a valid analysis state: a bad entry ({error})") from error
        return analysis.load_state_dict(state)

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
        """Load a file written by :meth:`save`.

        Raises:
            CamscopeError: for another kind of file, a newer format version, or a file
                whose tensors are not exactly those :meth:`save` writes (names, dtypes,
                shapes) or whose values no analysis can give.
        """
        tensors, header = load_tensors(path, kind=_KIND)
        try:
            check_settings(header, header=True)
            sizes = {"K": header["num_features"], "C": header["num_classes"]}
        except KeyError as error:
            raise CamscopeError(f"{path} is an incomplete analysis file (missing {error}): write it again") from error
        except CamscopeError as error:
            raise CamscopeError(f"{path} is not a valid analysis file ({error}): write it again") from error
        check_file_tensors(tensors, _file_specs(bool(header.get("profiles"))), path, sizes=sizes)
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
                bins=max(tensors["values.counts"].numel(), 16),
                info=header.get("info", {}),
            )
            for name in ("values", "image_max", "image_min"):
                setattr(analysis, name, QuantileSketch.from_state(tensors, name))
            f64 = checked_tensor(tensors["moments.f64"], "moments.f64", [2], torch.float64)
            analysis.moments.load_state_dict(
                {"count": tensors["moments.count"].reshape(()), "mean": f64[0], "m2": f64[1]}
            )
            analysis.im_sum = tensors["im_sum"].clone()
            analysis.class_counts = tensors["class_counts"].clone()
            counters = checked_tensor(tensors["counters"], "counters", [3], torch.int64)
            analysis.labelled, analysis.correct, analysis.stand_ins = counters.unbind(0)
            if "im_all_sum" in tensors:
                analysis.im_all_sum = tensors["im_all_sum"].clone()
            if header.get("profiles"):
                analysis._profiles = _profile_parts(
                    [tensors[name] for name in ("profiles", "profile_labels", "profile_predictions", "profile_ids")]
                )
            analysis.n_samples = header["n_samples"]
            check_tensors(analysis)
        except KeyError as error:
            raise CamscopeError(f"{path} is an incomplete analysis file (missing {error}): write it again") from error
        except (TypeError, ValueError, RuntimeError) as error:  # CamscopeError included
            raise CamscopeError(f"{path} is not a valid analysis file ({error}): write it again") from error
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
