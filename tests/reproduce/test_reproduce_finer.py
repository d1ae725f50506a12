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


def test_effect_size_rule_needs_five_percent_of_the_base() -> None:
    base = torch.full((400,), 1.0)
    small = paired_difference(base + 0.03 + 0.001 * torch.randn(400, generator=torch.Generator().manual_seed(2)), base)
    assert small.significant and not small.better and small.outcome == "no clear difference"
    large = paired_difference(base + 0.06, base)
    assert large.better and large.relative == pytest.approx(0.06)


def test_cam_subtraction_matches_a_per_image_loop() -> None:
    import camscope
    from camscope.models.zoo import SmallCNN
    from camscope.reproduce.finer.measure import FinerData, cam_subtraction_maps

    torch.manual_seed(0)
    model = SmallCNN(3, 5, [[4], [8]]).eval()
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2])
    ranked = torch.tensor([[1, 2, 3], [0, 2, 4], [4, 3, 1]])
    data = FinerData(images, labels, None, ranked, None, None, None, None, None, None, None)  # type: ignore[arg-type]
    maps = cam_subtraction_maps(model, data, gamma=0.6, references=3)
    for i in range(3):
        x = images[i : i + 1]

        def relu_cam(c: int, x: torch.Tensor = x) -> torch.Tensor:
            return camscope.explain(model, x, "gradcam", layer="features", target=c).raw[0].clamp(min=0)

        diff = relu_cam(int(labels[i])) - 0.6 * sum(relu_cam(int(d)) for d in ranked[i]) / 3
        up = torch.nn.functional.interpolate(diff.clamp(min=0)[None, None], size=(16, 16), mode="bilinear")[0, 0]
        expected = (up - up.min()) / (up.max() - up.min()) if up.max() > up.min() else torch.zeros_like(up)
        torch.testing.assert_close(maps[i], expected, rtol=1e-5, atol=1e-6)


def test_the_fig_9b_claim_compares_finer_with_cam_subtraction_on_both_shares() -> None:
    from camscope.reproduce.finer.claims import subtraction_claim
    from camscope.reproduce.finer.measure import COMPARED

    noise = 0.001 * torch.randn(200, generator=torch.Generator().manual_seed(0))
    base = torch.full((200,), 0.5) + noise

    def comparisons(box_gain: float, part_gain: float) -> dict:
        gains = dict.fromkeys(COMPARED, 0.0) | {"share_box": box_gain, "share_differing": part_gain}
        return {("finer-vs-subtraction", key): paired_difference(base + gain, base) for key, gain in gains.items()}

    assert subtraction_claim({}, "easy") is None
    assert subtraction_claim(comparisons(0.1, 0.1), "easy").verdict == HOLDS
    assert subtraction_claim(comparisons(0.1, -0.1), "medium").verdict == PARTLY
    claim = subtraction_claim(comparisons(-0.1, 0.01), "hard")  # +2% is under the 5% effect size
    assert claim.verdict == FAILS and "Fig. 9b" in claim.claim and claim.previous is None and claim.level == "hard"
    # The easy level's verdict is compared with the previous version of the report; the others are new.
    assert subtraction_claim(comparisons(-0.1, 0.01), "easy").previous == FAILS
