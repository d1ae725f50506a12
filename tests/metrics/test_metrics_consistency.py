"""The statistics of the consistency metric (Sec. III-B of the IFA paper) against scipy and their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from camscope.metrics.consistency import correlate, mardia_test, rankdata


def test_statistics_match_scipy():
    g = np.random.default_rng(8)
    for n in (5, 12, 40, 500):
        x = g.normal(size=n)
        y = 0.6 * x + g.normal(size=n)
        y[: n // 5] = np.round(y[: n // 5])  # some ties
        x[:2] = x[2]
        result = correlate(torch.tensor(x), torch.tensor(y))
        pearson = stats.pearsonr(x, y)
        spearman = stats.spearmanr(x, y)
        assert result.pearson == pytest.approx(pearson[0], abs=1e-12)
        assert result.pearson_p == pytest.approx(pearson[1], rel=1e-8, abs=1e-300)
        assert result.spearman == pytest.approx(spearman[0], abs=1e-12)
        assert result.spearman_p == pytest.approx(spearman[1], rel=1e-8, abs=1e-300)
        np.testing.assert_allclose(rankdata(torch.tensor(y)).numpy(), stats.rankdata(y))
    # A strong correlation over many samples: a tiny p-value, still right.
    x = g.normal(size=5000)
    y = x + 2.0 * g.normal(size=5000)
    assert correlate(torch.tensor(x), torch.tensor(y)).pearson_p == pytest.approx(stats.pearsonr(x, y)[1], rel=1e-6)


def _mardia_brute_force(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    data = np.stack([x, y], axis=1)
    n, p = data.shape
    centred = data - data.mean(axis=0)
    inverse = np.linalg.inv(centred.T @ centred / n)
    d = centred @ inverse @ centred.T
    b1 = (d**3).sum() / n**2
    b2 = (np.diag(d) ** 2).mean()
    skew = n * b1 / 6
    if n < 20:
        skew *= (p + 1) * (n + 1) * (n + 3) / (n * ((n + 1) * (p + 1) - 6))
    kurtosis = (b2 - p * (p + 2)) / np.sqrt(8 * p * (p + 2) / n)
    return stats.chi2.sf(skew, p * (p + 1) * (p + 2) / 6), 2 * stats.norm.sf(abs(kurtosis))


def test_mardia_test_matches_its_definition_and_decides_the_coefficient():
    g = np.random.default_rng(9)
    for n in (10, 60, 300):
        x, y = g.normal(size=n), g.exponential(size=n)
        np.testing.assert_allclose(mardia_test(torch.tensor(x), torch.tensor(y)), _mardia_brute_force(x, y), rtol=1e-9)
    normal = g.multivariate_normal([0, 0], [[1, 0.7], [0.7, 1]], size=400)
    result = correlate(torch.tensor(normal[:, 0]), torch.tensor(normal[:, 1]))
    assert result.normal and result.method == "pearson" and result.coefficient == result.pearson
    skewed = g.exponential(size=(400, 2))
    result = correlate(torch.tensor(skewed[:, 0]), torch.tensor(skewed[:, 0] + skewed[:, 1]))
    assert not result.normal and result.method == "spearman" and result.coefficient == result.spearman
    assert math.isnan(correlate([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]).pearson)
