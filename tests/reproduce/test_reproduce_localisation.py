"""Cheap checks of the localisation report section's own computations (the pipeline is tested in test_reproduce.py)."""

from __future__ import annotations

import math

import pytest
import torch

from camscope.metrics import sanity_check
from camscope.models.zoo import SmallCNN
from camscope.reproduce import localisation


def test_a_perfect_map_scores_one_and_references_are_sane(tmp_path) -> None:
    from camscope.reproduce import Context

    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, 4:8, 5:12] = True
    masks[1, 10:14, 2:6] = True
    boxes = torch.tensor([[5, 4, 12, 8], [2, 10, 6, 14]])
    scores = localisation._measure(masks.float(), masks, boxes)
    for key in ("iou", "auprc", "energy", "hit"):
        assert scores[key].tolist() == pytest.approx([1.0, 1.0]), key
    references = localisation._baselines(Context(out=tmp_path), (2, 16, 16))
    centre = references["(reference) centred Gaussian"]
    assert centre.shape == (2, 16, 16) and float(centre[0, 7:9, 7:9].min()) == float(centre.max())
    assert torch.equal(
        references["(reference) uniform random"],
        localisation._baselines(Context(out=tmp_path), (2, 16, 16))["(reference) uniform random"],
    )


def test_paired_difference_and_standard_error() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, float("nan"), 5.0])
    b = torch.tensor([0.0, 1.0, 1.0, 1.0])
    mean, se = localisation._paired(a, b)
    diffs = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)  # the NaN pair and the unpaired image are skipped
    assert mean == pytest.approx(float(diffs.mean()))
    assert se == pytest.approx(float(diffs.std()) / math.sqrt(3))


def test_noisy_methods_go_through_the_sanity_check_with_fresh_noise_and_the_original_classes() -> None:
    torch.manual_seed(0)
    model = SmallCNN(3, 5, [[4], [8]]).eval()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    method = localisation._sanity_method("smoothgradcampp", model, {}, images, torch.tensor([0, 1]))
    assert callable(method)
    result = sanity_check(model, images, target=torch.tensor([1, 3]), method=method, layer="features")
    assert result.curves["spearman"].shape == (2, len(result.params["layers"]))
    for name in ("gradcam", "finer-gradcam"):
        assert localisation._sanity_method(name, model, {}, images, torch.tensor([0, 1])) == name


def test_sanity_status_needs_its_interval_off_the_threshold_and_groups_coinciding_maps() -> None:
    from camscope.reproduce.localisation.claims import paired, sanity_status

    assert sanity_status(torch.tensor([0.46, 0.50])) == "undecided"  # 2 images cannot separate 0.48 from 0.5
    assert sanity_status(torch.full((32,), 0.1) + 0.01 * torch.arange(32)) == "pass"
    assert sanity_status(torch.full((32,), 0.9)) == "fail"
    assert sanity_status(torch.tensor([float("nan"), float("nan"), 0.0])) == "pass"  # constant maps count as 0
    a = torch.rand(6, 4, 4, generator=torch.Generator().manual_seed(0))
    groups = localisation._groups({"x": a, "y": a + 1e-6, "z": a.flip(-1)})
    assert groups == [["x", "y"], ["z"]]
    base, low, mean, high = paired(torch.tensor([2.0, 3.0, 5.0]), torch.tensor([1.0, 1.0, 2.0]))
    assert base == pytest.approx(4 / 3) and mean == pytest.approx(2.0) and low < mean < high
