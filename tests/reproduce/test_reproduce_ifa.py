"""Cheap checks of the IFA report section's own computations (the whole pipeline is tested in test_reproduce.py)."""

from __future__ import annotations

import pytest
import torch

from camscope.metrics import consistency, feature_masking_accuracy
from camscope.models.zoo import SmallCNN
from camscope.reproduce import ifa


@pytest.fixture
def small() -> tuple[SmallCNN, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = SmallCNN(3, 4, [[4], [8]]).eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(24, 3, 16, 16, generator=generator)
    labels = torch.randint(0, 4, (24,), generator=generator)
    return model, images, labels


def test_per_class_readout_matches_blocking_inside_the_network(small) -> None:
    model, images, labels = small
    pooled = ifa._pooled(model, images)
    everything = torch.ones(4, 8, dtype=torch.bool)
    with torch.no_grad():
        plain = float((model(images).argmax(1) == labels).float().mean())
    assert ifa._per_class_accuracy(model, pooled, labels, everything) == pytest.approx(plain)
    # The same mask for every class is what the library's hook does at the layer.
    keep = torch.tensor([True, False, True, True, False, False, True, False])
    library = feature_masking_accuracy(model, [(images, labels)], "features", keep)
    assert ifa._per_class_accuracy(model, pooled, labels, keep.expand(4, 8)) == pytest.approx(library)


def test_random_masks_keep_the_count_and_are_seeded() -> None:
    first = ifa._random_masks(torch.Generator().manual_seed(3), 5, 16, 4)
    second = ifa._random_masks(torch.Generator().manual_seed(3), 5, 16, 4)
    assert first.sum(dim=1).tolist() == [4] * 5
    assert torch.equal(first, second)


def test_gradient_maps_of_a_gap_linear_model_sum_to_the_logit(small) -> None:
    model, images, labels = small
    # Grad-CAM, HiResCAM and XGrad-CAM coincide for global average pooling + linear (the section says so).
    assert ifa._max_difference(model, images[:8], "features") < 1e-5
    raw = consistency(model, [(images, labels)], "gradcam", layer="features", scale=[ifa._identity])[0]
    assert raw.logit.pearson > 0.99


def test_distinct_groups_and_the_drop_interval() -> None:
    from scipy import stats

    from camscope.reproduce.ifa.claims import distinct_groups, drop_interval

    methods = ["gradcam", "hirescam", "gradcampp", "xgradcam"]
    assert distinct_groups(methods, 1e-7) == [("gradcam", "hirescam", "xgradcam"), ("gradcampp",)]
    assert distinct_groups(methods, 0.1) == [(m,) for m in methods]
    low, drop, high = drop_interval(0.988, 0.889, 1024)
    se = ((0.988 * 0.012 + 0.889 * 0.111) / 1024) ** 0.5
    z = stats.norm.ppf(0.975)
    assert (low, drop, high) == pytest.approx((0.099 - z * se, 0.099, 0.099 + z * se), abs=1e-3)
    assert low < 0.10 < high  # the borderline case of earlier versions: not decided by 1,024 images
