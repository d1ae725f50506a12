"""Consistency of CAMs with the model (IFA, Li et al., Sec. III-B).

Over a dataset, the per-image sum of a CAM should follow the model's score for
the explained class. :func:`consistency` correlates the two: Pearson's
coefficient when the pairs pass a test of bivariate normality, Spearman's rank
coefficient otherwise, as the paper prescribes. The paper does not name its
normality test; camscope uses Mardia's test (multivariate skewness and
kurtosis, both at level ``alpha``), a standard test of bivariate normality.

Everything is computed in torch / the Python standard library (no scipy): the
p-values of Pearson's and Spearman's coefficients use the t distribution with
``n - 2`` degrees of freedom (as scipy does), evaluated through the regularised
incomplete beta function.

Example:
    >>> import torch
    >>> from camscope.metrics.consistency import correlate
    >>> x = torch.arange(20.0)
    >>> result = correlate(x, 2 * x + 1)
    >>> round(result.pearson, 6), round(result.spearman, 6)
    (1.0, 1.0)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.capture import model_state, output_tensor
from camscope.engine.explainer import Explainer, Explanation
from camscope.engine.maps import scaled_maps
from camscope.errors import CamscopeError
from camscope.metrics.common import MetricResult, progress_option
from camscope.metrics.registry import register_metric
from camscope.models.fingerprint import model_fingerprint
from camscope.passes.engine import Batch, DatasetPass

__all__ = [
    "Consistency",
    "ConsistencyStatistics",
    "Correlation",
    "consistency",
    "consistency_summary",
    "consistency_values",
    "correlate",
    "mardia_test",
    "rankdata",
]


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1 - x) / b


def _correlation_p_value(r: float, n: int) -> float:
    """Two-sided p-value of a correlation coefficient under independence (t test, ``n - 2`` dof)."""
    if n < 3 or math.isnan(r):
        return math.nan
    dof = n - 2
    # t^2 = dof r^2 / (1 - r^2), so dof / (dof + t^2) = 1 - r^2.
    return betainc(dof / 2, 0.5, max(0.0, 1.0 - r * r))


def rankdata(values: Tensor) -> Tensor:
    """Ranks 1..n, ties given their average rank (``scipy.stats.rankdata``), float64."""
    values = values.reshape(-1)
    ordered, order = torch.sort(values, stable=True)
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    average = ends - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty(values.shape, dtype=torch.float64, device=values.device)
    ranks[order] = average[inverse]
    return ranks


def _pearson(x: Tensor, y: Tensor) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    denominator = float(xc.norm() * yc.norm())
    if denominator == 0 or not math.isfinite(denominator):
        return math.nan
    return max(-1.0, min(1.0, float((xc * yc).sum()) / denominator))


def mardia_test(x: Tensor, y: Tensor) -> tuple[float, float]:
    """Mardia's test of bivariate normality: p-values of (skewness, kurtosis).

    With ``z_i`` the whitened pairs (maximum-likelihood covariance),
    ``b1 = (1/n^2) sum_ij (z_i . z_j)^3`` and ``b2 = (1/n) sum_i |z_i|^4``;
    ``n b1 / 6`` is chi-squared with 4 degrees of freedom (with the small-sample
    factor for ``n < 20``) and ``(b2 - 8) / sqrt(64 / n)`` is standard normal.
    ``b1`` is computed from third moments in ``O(n)`` memory:
    ``b1 = sum_abc (mean_i z_ia z_ib z_ic)^2``.
    """
    data = torch.stack([x.reshape(-1), y.reshape(-1)], dim=1).to(torch.float64).cpu()
    n, p = data.shape
    if n < 4:
        return math.nan, math.nan
    centred = data - data.mean(dim=0)
    covariance = centred.T @ centred / n
    try:
        factor = torch.linalg.cholesky(covariance)
    except RuntimeError:
        return math.nan, math.nan  # a constant variable: no bivariate distribution to test
    z = torch.linalg.solve_triangular(factor, centred.T, upper=False).T
    third = torch.einsum("ia,ib,ic->abc", z, z, z) / n
    b1 = float((third**2).sum())
    b2 = float(((z**2).sum(dim=1) ** 2).mean())
    skew_statistic = n * b1 / 6
    if n < 20:
        skew_statistic *= (p + 1) * (n + 1) * (n + 3) / (n * ((n + 1) * (p + 1) - 6))
    # chi2 survival function with 4 degrees of freedom: exp(-s/2) (1 + s/2).
    skew_p = math.exp(-skew_statistic / 2) * (1 + skew_statistic / 2)
    kurtosis_z = (b2 - p * (p + 2)) / math.sqrt(8 * p * (p + 2) / n)
    kurtosis_p = math.erfc(abs(kurtosis_z) / math.sqrt(2))
    return skew_p, kurtosis_p


@dataclass
class Correlation:
    """Correlation of two paired samples, with the paper's choice of coefficient.

    Attributes:
        n: number of pairs.
        pearson, pearson_p: Pearson's coefficient and its two-sided p-value.
        spearman, spearman_p: Spearman's rank coefficient and its p-value.
        skewness_p, kurtosis_p: Mardia's test of bivariate normality.
        normal: both Mardia p-values are above ``alpha``.
        method: ``"pearson"`` when ``normal`` else ``"spearman"``.
        coefficient, p_value: those of the chosen method.
    """

    n: int
    pearson: float
    pearson_p: float
    spearman: float
    spearman_p: float
    skewness_p: float
    kurtosis_p: float
    normal: bool
    method: str
    coefficient: float
    p_value: float

    def __str__(self) -> str:
        return f"{self.method} r = {self.coefficient:.3f} (p = {self.p_value:.2g}, n = {self.n})"


def correlate(x: Tensor | Sequence[float], y: Tensor | Sequence[float], alpha: float = 0.05) -> Correlation:
    """Pearson if the pairs pass Mardia's bivariate normality test at ``alpha``, else Spearman."""
    x = torch.as_tensor(x, dtype=torch.float64).reshape(-1).cpu()
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1).cpu()
    if x.shape != y.shape:
        raise CamscopeError(f"correlate needs paired samples, got {x.numel()} and {y.numel()} values")
    n = x.numel()
    if n < 3:
        raise CamscopeError(f"a correlation needs at least 3 pairs, got {n}")
    pearson = _pearson(x, y)
    spearman = _pearson(rankdata(x), rankdata(y))
    skew_p, kurt_p = mardia_test(x, y)
    normal = bool(skew_p > alpha and kurt_p > alpha)
    method = "pearson" if normal else "spearman"
    pearson_p, spearman_p = _correlation_p_value(pearson, n), _correlation_p_value(spearman, n)
    return Correlation(
        n=n,
        pearson=pearson,
        pearson_p=pearson_p,
        spearman=spearman,
        spearman_p=spearman_p,
        skewness_p=skew_p,
        kurtosis_p=kurt_p,
        normal=normal,
        method=method,
        coefficient=pearson if normal else spearman,
        p_value=pearson_p if normal else spearman_p,
    )


def consistency_summary(result: MetricResult) -> dict[str, Any]:
    """IFA's consistency over a dataset from :func:`consistency_values` joined over its batches.

    Example:
        >>> import torch
        >>> joined = MetricResult("consistency", {"cam_sum": torch.arange(5.0), "logit": torch.arange(5.0) ** 2})
        >>> round(consistency_summary(joined)["spearman"], 6)
        1.0
    """
    if len(result) < 3:
        return {"n": len(result), "coefficient": float("nan"), "method": "too few images"}
    correlation = correlate(result.values["cam_sum"], result.values["logit"])
    return {
        "n": correlation.n,
        "coefficient": correlation.coefficient,
        "p_value": correlation.p_value,
        "method": correlation.method,
        "pearson": correlation.pearson,
        "spearman": correlation.spearman,
    }


@register_metric("consistency", kind="maps", summarize=consistency_summary)
def consistency_values(explanation: Explanation) -> MetricResult:
    """The per-image CAM sum and the explained class's score, which IFA's consistency correlates over a dataset.

    Per batch: ``cam_sum`` (the sum of the map) and ``logit`` (the explained class's logit,
    or the target's score when it has no class). ``camscope.evaluate(metrics=["consistency"])``
    joins them over the dataset and reports :func:`consistency_summary` (see
    :func:`consistency` for the statistics).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> e = camscope.explain(resnet18(num_classes=10).eval(), torch.randn(2, 3, 32, 32), layer="layer3")
        >>> sorted(consistency_values(e).values)
        ['cam_sum', 'logit']
    """
    if not isinstance(explanation, Explanation):
        raise CamscopeError("the consistency metric needs an Explanation (its logits), not a tensor of maps")
    logits, classes = explanation.logits, explanation.classes
    scores = explanation.scores if classes is None else logits.gather(1, classes[:, None].to(logits.device))[:, 0]
    return MetricResult(
        name="consistency",
        values={"cam_sum": explanation.maps.flatten(1).sum(dim=1).float(), "logit": scores.float()},
        headline="cam_sum",
        higher_is_better={},
    )


# --------------------------------------------------------------------------------------
# The dataset metric
# --------------------------------------------------------------------------------------


@dataclass
class Consistency:
    """How well the per-image CAM sums follow the model over a dataset.

    Attributes:
        name: the CAM variant (``"gradcam"``, ``"S-gradcam"``, ``"FS-S-gradcam"``).
        cam_sums: ``[N]`` the sum of each map over its pixels.
        logits: ``[N]`` the explained class's logit.
        probabilities: ``[N]`` its softmax probability.
        classes: ``[N]`` the explained class.
        logit: correlation of ``cam_sums`` with ``logits`` (the paper's metric).
        probability: correlation with ``probabilities``.
    """

    name: str
    cam_sums: Tensor
    logits: Tensor
    probabilities: Tensor
    classes: Tensor
    logit: Correlation
    probability: Correlation

    @property
    def coefficient(self) -> float:
        """The paper's number: the chosen correlation of CAM sums with logits."""
        return self.logit.coefficient

    def __str__(self) -> str:
        return f"{self.name}: {self.logit} with logits; {self.probability} with probabilities"


def _joined(parts: list[Tensor], empty: Tensor) -> Tensor:
    """The batches' parts joined along their last axis (the images); ``empty`` before any batch."""
    return torch.cat(parts, dim=-1) if parts else empty


class ConsistencyStatistics:
    """The per-image numbers of a consistency pass: CAM sums (one row per map variant), logits, probabilities, classes.

    A mergeable accumulator (:class:`camscope.passes.engine.Accumulator`): ``update``
    appends a batch, ``merge`` adds the images of a pass over another part of the
    data (in dataset order when the parts' positions are disjoint, appended when
    they were counted separately), and ``state_dict`` / ``load_state_dict`` restore it exactly. Values are float64 on
    the CPU.

    Example:
        >>> import torch
        >>> first, second = ConsistencyStatistics(1), ConsistencyStatistics(1)
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]])
        >>> first.update(torch.tensor([[4.0, 1.0]]), logits[:2], torch.tensor([0, 1]))
        >>> second.update(torch.tensor([[2.0]]), logits[2:], torch.tensor([1]))
        >>> first.merge(second).logits.tolist(), first.cam_sums.shape
        ([2.0, 1.0, 3.0], torch.Size([1, 3]))
    """

    def __init__(self, variants: int = 1) -> None:
        if variants < 1:
            raise CamscopeError(f"a consistency pass needs at least one map variant, got {variants}")
        self.variants = variants
        self._cam_sums: list[Tensor] = []
        self._logits: list[Tensor] = []
        self._probabilities: list[Tensor] = []
        self._classes: list[Tensor] = []
        self._positions: list[Tensor] = []

    def update(self, cam_sums: Tensor, logits: Tensor, classes: Tensor, start: int | None = None) -> None:
        """Add a batch: ``cam_sums`` ``[V, B]``, the model's ``logits`` ``[B, C]``, the explained ``classes``
        and the dataset position of the batch's first image (default: after the last one)."""
        cam_sums = torch.as_tensor(cam_sums).reshape(self.variants, -1)
        index = classes.reshape(-1, 1).to(logits.device)
        if cam_sums.shape[1] != index.shape[0] or logits.shape[0] != index.shape[0]:
            raise CamscopeError(
                f"a consistency batch needs as many CAM sums ({cam_sums.shape[1]}), logits ({logits.shape[0]}) "
                f"and classes ({index.shape[0]})"
            )
        logits = logits.detach()
        first = start if start is not None else (int(self.positions[-1]) + 1 if len(self) else 0)
        self._cam_sums.append(cam_sums.detach().double().cpu())
        self._logits.append(logits.gather(1, index)[:, 0].double().cpu())
        self._probabilities.append(logits.softmax(dim=1).gather(1, index)[:, 0].double().cpu())
        self._classes.append(classes.detach().reshape(-1).long().cpu())
        self._positions.append(torch.arange(first, first + index.shape[0]))

    def merge(self, other: ConsistencyStatistics) -> ConsistencyStatistics:
        """Append the images of ``other`` (a pass over other data with the same variants)."""
        if other.variants != self.variants:
            raise CamscopeError(f"cannot merge consistency statistics of {other.variants} and {self.variants} variants")
        mine, theirs = self.positions, other.positions
        if len(mine) and len(theirs) and bool(torch.isin(theirs, mine).any()):
            theirs = theirs - theirs.min() + mine.max() + 1  # parts counted separately: append
        self._cam_sums += other._cam_sums
        self._logits += other._logits
        self._probabilities += other._probabilities
        self._classes += other._classes
        self._positions = [torch.cat([mine, theirs])]
        positions = self._positions[0]
        if len(positions) > 1 and bool((positions[1:] < positions[:-1]).any()):  # interleaved parts
            order = torch.argsort(positions, stable=True)
            self._cam_sums = [self.cam_sums[:, order]]
            self._logits, self._probabilities = [self.logits[order]], [self.probabilities[order]]
            self._classes, self._positions = [self.classes[order]], [positions[order]]
        return self

    def __len__(self) -> int:
        return sum(part.shape[0] for part in self._logits)

    @property
    def cam_sums(self) -> Tensor:
        """``[V, N]``: the sum of each image's map, per variant."""
        return _joined(self._cam_sums, torch.zeros(self.variants, 0, dtype=torch.float64))

    @property
    def logits(self) -> Tensor:
        """``[N]``: the explained class's logit."""
        return _joined(self._logits, torch.zeros(0, dtype=torch.float64))

    @property
    def probabilities(self) -> Tensor:
        """``[N]``: the explained class's softmax probability."""
        return _joined(self._probabilities, torch.zeros(0, dtype=torch.float64))

    @property
    def positions(self) -> Tensor:
        """``[N]``: each image's position in the dataset."""
        return _joined(self._positions, torch.zeros(0, dtype=torch.long))

    @property
    def classes(self) -> Tensor:
        """``[N]``: the explained class."""
        return _joined(self._classes, torch.zeros(0, dtype=torch.long))

    def state_dict(self) -> dict[str, Any]:
        """The variant count and the four per-image tensors."""
        return {
            "variants": self.variants,
            "cam_sums": self.cam_sums,
            "logits": self.logits,
            "probabilities": self.probabilities,
            "classes": self.classes,
            "positions": self.positions,
        }

    def load_state_dict(self, state: dict[str, Any]) -> ConsistencyStatistics:
        """Restore what :meth:`state_dict` returned."""
        self.variants = int(state["variants"])
        self._cam_sums = [torch.as_tensor(state["cam_sums"], dtype=torch.float64).reshape(self.variants, -1)]
        self._logits = [torch.as_tensor(state["logits"], dtype=torch.float64)]
        self._probabilities = [torch.as_tensor(state["probabilities"], dtype=torch.float64)]
        self._classes = [torch.as_tensor(state["classes"], dtype=torch.long)]
        positions = state.get("positions")
        count = self._classes[0].numel()
        self._positions = [torch.arange(count) if positions is None else torch.as_tensor(positions, dtype=torch.long)]
        return self

    def results(self, names: Sequence[str], alpha: float = 0.05) -> list[Consistency]:
        """One :class:`Consistency` per variant, named by ``names``."""
        if len(names) != self.variants:
            raise CamscopeError(f"give one name per variant: {self.variants} variants, {len(names)} names")
        logits, probabilities, classes = self.logits, self.probabilities, self.classes
        return [
            Consistency(
                name=name,
                cam_sums=cam_sums,
                logits=logits,
                probabilities=probabilities,
                classes=classes,
                logit=correlate(cam_sums, logits, alpha),
                probability=correlate(cam_sums, probabilities, alpha),
            )
            for name, cam_sums in zip(names, self.cam_sums)
        ]


def _variant_name(method: str, scale: Any, features: Any) -> str:
    return ("FS-" if features is not None else "") + ("S-" if scale is not None else "") + method


def _batch_target(target: Any, batch: Batch) -> Any:
    """The explained classes of a batch: None (predicted), the labels for ``"true"``, or ``target`` as given."""
    if not isinstance(target, str):
        return target
    if target != "true":
        raise CamscopeError(f"target must be None, 'true' or a class index, got {target!r}")
    if bool((batch.labels < 0).any()):
        raise CamscopeError("target='true' needs a label for every image; some have none")
    return batch.labels


def _explain(explainer: Explainer, batch: Batch, target: Any, mask: Tensor | None) -> Explanation:
    """Explain a batch, with the channel mask of each image's explained class when ``mask`` is ``[C, K]``."""
    inputs = batch.inputs
    if mask is None or mask.ndim != 2:
        return explainer(inputs, target=target, features=mask)
    if target is None:
        with torch.no_grad(), model_state(explainer.model, explainer.eval_mode):
            target = output_tensor(explainer.model(inputs)).argmax(dim=1)
    classes = torch.as_tensor(target, device=mask.device).reshape(-1).expand(inputs.shape[0])
    return explainer(inputs, target=target, features=mask[classes])


def consistency(
    model: nn.Module,
    data: Any,
    method: str = "gradcam",
    layer: Any = None,
    *,
    target: Any = None,
    scale: Any = None,
    features: Tensor | None = None,
    alpha: float = 0.05,
    batch_size: int = 32,
    size: int = 224,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    show_progress: bool | None = None,
    distributed: bool | None = None,
    workers: int = 0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    precision: str | None = None,
    **options: Any,
) -> Consistency | list[Consistency]:
    """Correlation between the per-image sum of a CAM and the model's logit (and probability).

    ``sum_ij map_ij`` of every image against ``y_c`` of its explained class ``c``,
    over a dataset; Pearson if the pairs are bivariate normal (Mardia's test at
    ``alpha``), else Spearman. Maps are the usual ones (ReLU, per-image min-max
    to [0, 1]), or with ``scale`` the S-CAM maps ``tanh(a up(M) + b)`` in (-1, 1).
    The paper: "Integrated feature analysis for deep learning interpretation and
    class activation maps" (Li et al.).

    Args:
        model: the classifier.
        data: a DataLoader, an iterable of ``(inputs, labels)`` or of inputs, a
            tensor, or an image folder (see :class:`camscope.passes.engine.DatasetPass`).
        method: as for :func:`camscope.explain`.
        layer: as for :func:`camscope.explain`.
        target: None (each image's predicted class), ``"true"`` (its label), or a
            class index (one class for all images, as the paper's plots do: a cat
            image's CAM for "dog" should stay low when the dog logit is low).
        scale: None, an ``Analysis`` or a scale (S-CAMs), or a list of them to
            evaluate several variants in one pass (a list of results is returned).
        features: a channel mask ``[K]`` or per-class masks ``[C, K]`` (FS-CAMs;
            e.g. ``analysis.principal_features(0.05)``), indexed by the explained class.
        alpha: level of the normality test.
        batch_size: batch size for folders and tensors (a DataLoader keeps its own).
        size: image size for folders.
        device: where the batches go (default: the model's device).
        progress: the progress bar (None: when stderr is a terminal).
        show_progress: deprecated name of ``progress``.
        distributed: split the pass over a ``torch.distributed`` process group (None: when one is
            initialised; every rank returns the whole result; see :class:`camscope.passes.engine.DatasetPass`).
        workers: worker processes that load folders and map-style datasets (0: in this process).
        checkpoint: a file for the pass's state (one per rank when distributed).
        checkpoint_every: save the checkpoint every this many batches (default: only at the end).
        resume: continue from ``checkpoint`` when the file exists.
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: the model's forward runs under
            ``torch.autocast`` (:mod:`camscope.passes.precision`).
        **options: Explainer and method options.

    Returns:
        A :class:`Consistency`, or a list of them when ``scale`` is a list.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> result = consistency(model, torch.randn(12, 3, 16, 16), layer="0", batch_size=4, progress=False)
        >>> result.name, result.cam_sums.shape, result.logit.method in ("pearson", "spearman")
        ('gradcam', torch.Size([12]), True)
    """
    progress = progress_option(progress, show_progress, "consistency")
    scales = list(scale) if isinstance(scale, (list, tuple)) else [scale]
    explainer = Explainer(model, layer=layer, method=method, **options)
    batches = DatasetPass(
        model,
        data,
        batch_size=batch_size,
        size=size,
        device=device,
        progress=progress,
        description="consistency",
        restore=lambda state, _device: ConsistencyStatistics(len(scales)).load_state_dict(state),
        identity=lambda: {
            "model": model_fingerprint(model),
            "method": method,
            "layer": repr(layer),
            "target": repr(target),
            "variants": len(scales),
        },
        distributed=distributed,
        workers=workers,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        precision=precision,
    )
    mask = None if features is None else torch.as_tensor(features, device=batches.device)
    resumed = batches.resumed
    statistics = resumed if resumed is not None else ConsistencyStatistics(len(scales))
    for batch in batches.tracking(lambda: statistics):
        explanation = _explain(explainer, batch, _batch_target(target, batch), mask)
        classes = explanation.classes
        if classes is None:
            raise CamscopeError("consistency needs a class target (None, 'true' or a class index)")
        size_hw = batch.inputs.shape[2:]
        maps = [explanation.maps if v is None else scaled_maps(v, explanation, size_hw) for v in scales]
        statistics.update(
            torch.stack([m.flatten(1).sum(dim=1) for m in maps]), explanation.logits, classes, start=batch.start
        )
    statistics = batches.finish(statistics if len(statistics) else None, "consistency")
    names = [_variant_name(explainer.method.name, variant, features) for variant in scales]
    results = statistics.results(names, alpha)
    return results if isinstance(scale, (list, tuple)) else results[0]
