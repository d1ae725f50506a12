"""Sparseness and entropy against brute-force formulas and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy

from camscope.metrics import entropy, sparseness


def test_sparseness_is_the_mean_absolute_difference_gini() -> None:
    maps = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(0)) - 0.2
    result = sparseness(maps)
    for b in range(3):
        a = maps[b].flatten().abs().double().numpy()
        gini = np.abs(a[:, None] - a[None, :]).sum() / (2 * len(a) * a.sum())
        assert result["gini"][b].item() == pytest.approx(gini, abs=1e-6)
    assert sparseness(torch.ones(1, 4, 4))["gini"].item() == pytest.approx(0.0)
    single = torch.zeros(1, 4, 4)
    single[0, 1, 1] = 3
    assert sparseness(single)["gini"].item() == pytest.approx(1 - 1 / 16)
    assert math.isnan(sparseness(torch.zeros(1, 4, 4))["gini"].item())


def test_sparseness_with_quantus_epsilon() -> None:
    maps = torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(1))
    a = np.sort(maps.flatten().abs().double().numpy() + 1e-7)
    n = len(a)
    expected = np.sum((2 * np.arange(1, n + 1) - n - 1) * a) / (n * np.sum(a))  # quantus 0.6.0's formula
    assert sparseness(maps, eps=1e-7)["gini"].item() == pytest.approx(expected, abs=1e-6)


def test_entropy_matches_scipy() -> None:
    maps = torch.rand(3, 7, 7, generator=torch.Generator().manual_seed(2))
    maps[1, :3] = 0
    result = entropy(maps)
    for b in range(3):
        assert result["entropy"][b].item() == pytest.approx(scipy_entropy(maps[b].flatten().double().numpy()), abs=1e-5)
    assert entropy(torch.ones(1, 4, 4))["entropy"].item() == pytest.approx(math.log(16), abs=1e-6)
    assert math.isnan(entropy(torch.zeros(1, 4, 4))["entropy"].item())
