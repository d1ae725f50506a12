"""Counterfactual part metrics against a brute-force set computation."""

from __future__ import annotations

import math

import pytest
import torch

from camscope.errors import CamscopeError
from camscope.metrics import part_scores


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(5, 12, 12, generator=g)
    flat = maps.flatten(1)
    maps = (
        (flat - flat.min(1, keepdim=True).values)
        / (flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values)
    ).reshape(maps.shape)
    parts = torch.rand(5, 6, 2, generator=g) * 12
    parts[0, 2] = float("nan")  # not visible
    parts[1, 4] = torch.tensor([30.0, 2.0])  # outside the image: not visible
    differing = torch.rand(5, 6, generator=g) > 0.5
    return maps, parts, differing


def _sets(maps, parts, b, t):
    selected, visible = set(), set()
    for p in range(parts.shape[1]):
        x, y = parts[b, p].tolist()
        if math.isnan(x) or not (0 <= x < 12 and 0 <= y < 12):
            continue
        visible.add(p)
        if maps[b, int(y), int(x)] >= t:
            selected.add(p)
    return selected, visible


def test_part_scores_match_set_arithmetic() -> None:
    maps, parts, differing = _setup()
    counter_maps, counter_parts, _ = _setup(seed=1)
    thresholds = (0.2, 0.5, 0.8)
    result = part_scores(
        maps,
        parts=parts,
        differing=differing,
        thresholds=thresholds,
        counter_maps=counter_maps,
        counter_parts=counter_parts,
    )
    for b in range(5):
        for k, t in enumerate(thresholds):
            s, visible = _sets(maps, parts, b, t)
            s2, visible2 = _sets(counter_maps, counter_parts, b, t)
            g = {p for p in visible if differing[b, p]}
            both = visible & visible2
            a, c = s & both, s2 & both
            expected = {
                "precision": len(s & g) / len(s) if s else float("nan"),
                "recall": len(s & g) / len(g) if g else float("nan"),
                "f1": 2 * len(s & g) / (len(s) + len(g)) if (s or g) else float("nan"),
                "part_iou": len(a & c) / len(a | c) if (a | c) else float("nan"),
            }
            for key, value in expected.items():
                got = result.curves[key][b, k].item()
                assert (math.isnan(got) and math.isnan(value)) or got == pytest.approx(value), (key, b, t)
    torch.testing.assert_close(result["f1"], result.curves["f1"][:, 1], equal_nan=True)
    assert result.headline == "f1"


def test_part_masks_use_coverage() -> None:
    maps = torch.zeros(1, 8, 8)
    maps[0, :, :4] = 1.0
    parts = torch.zeros(1, 3, 8, 8, dtype=torch.bool)
    parts[0, 0, 0:2, 0:2] = True  # fully highlighted
    parts[0, 1, 0:2, 3:5] = True  # half highlighted
    parts[0, 2, 6:8, 6:8] = True  # not highlighted
    differing = torch.tensor([True, True, False])
    half = part_scores(maps, parts=parts, differing=differing, coverage=0.5)
    most = part_scores(maps, parts=parts, differing=differing, coverage=0.75)
    assert (half["precision"].item(), half["recall"].item()) == (1.0, 1.0)
    assert (most["precision"].item(), most["recall"].item()) == (1.0, 0.5)
    assert math.isnan(half["part_iou"].item())


def test_part_score_errors() -> None:
    maps, parts, differing = _setup()
    with pytest.raises(CamscopeError, match="differing"):
        part_scores(maps, parts=parts, differing=differing[:, :3])
    with pytest.raises(CamscopeError, match="keypoints"):
        part_scores(maps, parts=parts[..., 0], differing=differing)
    with pytest.raises(CamscopeError, match="counter_maps"):
        part_scores(maps, parts=parts, differing=differing, counter_maps=maps)
