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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.capture import model_state, output_tensor
from camscope.engine.explainer import Explainer, _scaled_maps
from camscope.errors import CamscopeError
from camscope.passes.batches import iter_batches, progress

__all__ = ["Consistency", "Correlation", "consistency", "correlate", "mardia_test", "rankdata"]


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


def _variant_name(method: str, scale: Any, features: Any) -> str:
    return ("FS-" if features is not None else "") + ("S-" if scale is not None else "") + method


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
    show_progress: bool | None = None,
    **options: Any,
) -> Consistency | list[Consistency]:
    """Correlation between the per-image sum of a CAM and the model's logit (and probability).

    ``sum_ij map_ij`` of every image against ``y_c`` of its explained class ``c``,
    over a dataset; Pearson if the pairs are bivariate normal (Mardia's test at
    ``alpha``), else Spearman. Maps are the usual ones (ReLU, per-image min-max
    to [0, 1]), or with ``scale`` the S-CAM maps ``tanh(a up(M) + b)`` in (-1, 1).

    Args:
        model: the classifier.
        data: a DataLoader, an iterable of ``(inputs, labels)`` or of inputs, a
            tensor, or an image folder (see :func:`camscope.passes.batches.iter_batches`).
        method, layer: as for :func:`camscope.explain`.
        target: None (each image's predicted class), ``"true"`` (its label), or a
            class index (one class for all images, as the paper's plots do: a cat
            image's CAM for "dog" should stay low when the dog logit is low).
        scale: None, an ``Analysis`` or a scale (S-CAMs), or a list of them to
            evaluate several variants in one pass (a list of results is returned).
        features: a channel mask ``[K]`` or per-class masks ``[C, K]`` (FS-CAMs;
            e.g. ``analysis.principal_features(0.05)``), indexed by the explained class.
        alpha: level of the normality test.
        batch_size, size, device, show_progress: the dataset pass.
        **options: Explainer and method options.

    Returns:
        A :class:`Consistency`, or a list of them when ``scale`` is a list.
    """
    scales = list(scale) if isinstance(scale, (list, tuple)) else [scale]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    explainer = Explainer(model, layer=layer, method=method, **options)
    per_class = features is not None and torch.as_tensor(features).ndim == 2
    mask = None if features is None else torch.as_tensor(features, device=device)
    sums: list[list[Tensor]] = [[] for _ in scales]
    logits_list, probabilities_list, classes_list = [], [], []
    for inputs, labels in progress(iter_batches(data, batch_size, size=size), "consistency", enabled=show_progress):
        inputs = inputs.to(device)
        batch_target = target
        if isinstance(target, str):
            if target != "true":
                raise CamscopeError(f"target must be None, 'true' or a class index, got {target!r}")
            if bool((labels < 0).any()):
                raise CamscopeError("target='true' needs a label for every image; some have none")
            batch_target = labels.to(device)
        if per_class and batch_target is None:
            with torch.no_grad(), model_state(model, explainer.eval_mode):
                batch_target = output_tensor(model(inputs)).argmax(dim=1)
        batch_features = mask
        if per_class:
            classes = torch.as_tensor(batch_target, device=device).reshape(-1).expand(inputs.shape[0])
            batch_features = mask[classes]
        explanation = explainer(inputs, target=batch_target, features=batch_features)
        classes = explanation.classes
        if classes is None:
            raise CamscopeError("consistency needs a class target (None, 'true' or a class index)")
        logits = explanation.logits
        logits_list.append(logits.gather(1, classes[:, None])[:, 0].detach().double().cpu())
        probabilities_list.append(logits.softmax(dim=1).gather(1, classes[:, None])[:, 0].detach().double().cpu())
        classes_list.append(classes.cpu())
        for index, variant in enumerate(scales):
            maps = explanation.maps if variant is None else _scaled_maps(variant, explanation, inputs.shape[2:])
            sums[index].append(maps.flatten(1).sum(dim=1).double().cpu())
    if not logits_list:
        raise CamscopeError("the dataset gave no batches: check the folder or loader")
    logits, probabilities, classes = torch.cat(logits_list), torch.cat(probabilities_list), torch.cat(classes_list)
    name = explainer.method.name
    results = []
    for index, variant in enumerate(scales):
        cam_sums = torch.cat(sums[index])
        results.append(
            Consistency(
                name=_variant_name(name, variant, features),
                cam_sums=cam_sums,
                logits=logits,
                probabilities=probabilities,
                classes=classes,
                logit=correlate(cam_sums, logits, alpha),
                probability=correlate(cam_sums, probabilities, alpha),
            )
        )
    return results if isinstance(scale, (list, tuple)) else results[0]
