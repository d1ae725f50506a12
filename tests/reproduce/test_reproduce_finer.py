"""The Finer-CAM report section's helpers against plain loops and scipy (the pipeline is tested in test_reproduce.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from camscope.reproduce import FAILS, HOLDS, PARTLY
from camscope.reproduce.finer.measure import all_or_some, energy_share, paired_difference


def test_paired_difference_matches_numpy_and_scipy() -> None:
    generator = torch.Generator().manual_seed(0)
    new, old = torch.rand(50, generator=generator), torch.rand(50, generator=generator)
    new[3] = float("nan")  # a pair with an undefined value is skipped
    comparison = paired_difference(new, old)
    difference = (new.double() - old.double()).numpy()
    difference = difference[np.isfinite(difference)]
    half = stats.norm.ppf(0.975) * difference.std(ddof=1) / math.sqrt(difference.size)
    assert comparison.n == 49
    assert comparison.mean == pytest.approx(difference.mean(), abs=1e-12)
    assert (comparison.low, comparison.high) == pytest.approx(
        (difference.mean() - half, difference.mean() + half), abs=1e-12
    )
    shifted = paired_difference(new + 1, old)
    assert shifted.better and not shifted.worse and shifted.outcome == "better"
    assert paired_difference(old, new + 1).worse
    assert math.isnan(paired_difference(torch.tensor([float("nan")]), torch.tensor([0.0])).mean)


def test_energy_share_matches_a_loop() -> None:
    generator = torch.Generator().manual_seed(1)
    maps = torch.randn(5, 8, 8, generator=generator)
    maps[1] = -1.0  # ReLU'd to zero everywhere: points at nothing, scores 0
    regions = torch.rand(5, 8, 8, generator=generator) > 0.7
    regions[2] = False  # no ground truth: NaN
    share = energy_share(maps, regions)
    for i in range(5):
        cam = maps[i].clamp(min=0)
        cam = (cam - cam.min()) / (cam.max() - cam.min()) if cam.max() > cam.min() else torch.zeros_like(cam)
        inside = sum(float(cam[y, x]) for y in range(8) for x in range(8) if regions[i, y, x])
        total = float(cam.sum())
        if not regions[i].any():
            assert math.isnan(share[i])
        else:
            expected = inside / total if total > 0 else 0.0
            assert float(share[i]) == pytest.approx(expected, abs=1e-6)


def test_all_or_some() -> None:
    assert all_or_some([True, True, True]) == HOLDS
    assert all_or_some([True, False, False]) == PARTLY
    assert all_or_some([False, False]) == FAILS
    assert all_or_some([]) == FAILS
