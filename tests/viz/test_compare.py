"""What a comparison changes: the numbers against a brute-force computation, and the explanations they read."""

from __future__ import annotations

import math

import pytest
import torch

import camscope
from camscope.errors import CamscopeError
from camscope.viz.compare import comparisons, explanation_shift, mass_shift, percent, shares_units
from conftest import TinyStridedCNN


def _brute_force(base: list[float], compared: list[float]) -> tuple[list[float], float, float]:
    """Difference, total variation and removed share, one number at a time."""
    b = [max(value, 0.0) for value in base]
    c = [max(value, 0.0) for value in compared]
    p = [value / sum(b) for value in b]
    q = [value / sum(c) for value in c]
    difference = [qi - pi for pi, qi in zip(p, q)]
    moved = sum(abs(d) for d in difference) / 2
    removed = sum(max(bi - ci, 0.0) for bi, ci in zip(b, c)) / sum(b)
    return difference, moved, removed


def test_the_shift_matches_a_brute_force_computation():
    generator = torch.Generator().manual_seed(0)
    base, compared = torch.randn(5, 4, 3, generator=generator), torch.randn(5, 4, 3, generator=generator)
    shift = mass_shift(base, compared, common_units=True)
    assert shift.removed is not None
    for i in range(5):
        difference, moved, removed = _brute_force(base[i].flatten().tolist(), compared[i].flatten().tolist())
        assert shift.difference[i].flatten().tolist() == pytest.approx(difference, abs=1e-12)
        assert float(shift.moved[i]) == pytest.approx(moved, abs=1e-12)
        assert float(shift.removed[i]) == pytest.approx(removed, abs=1e-12)
    assert mass_shift(base, compared).removed is None  # maps of different units: no removed share


def test_scale_does_not_move_mass_but_removes_evidence_and_disjoint_maps_move_all_of_it():
    base = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(1)) + 0.1
    halved = mass_shift(base, 0.5 * base, common_units=True)
    assert halved.moved.tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    assert halved.removed is not None and halved.removed.tolist() == pytest.approx([0.5, 0.5], abs=1e-12)
    left, right = torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)
    left[0, :, 0], right[0, :, 1] = 1.0, 1.0
    assert float(mass_shift(left, right).moved[0]) == 1.0


def test_a_map_without_positive_evidence_gives_nan_and_says_so():
    shift = mass_shift(torch.rand(2, 3, 3), torch.stack([-torch.ones(3, 3), torch.rand(3, 3)]))
    assert math.isnan(float(shift.moved[0])) and not math.isnan(float(shift.moved[1]))
    assert shift.caption(0) == "a map has no positive evidence"
    assert bool(torch.isfinite(shift.display((6, 6))).all())


def test_bad_shapes_give_one_clear_error():
    with pytest.raises(CamscopeError, match="differ in shape"):
        mass_shift(torch.rand(1, 3, 3), torch.rand(1, 4, 4))
    with pytest.raises(CamscopeError, match="batch of maps"):
        mass_shift(torch.rand(0, 3, 3), torch.rand(0, 3, 3))


def test_the_display_is_the_upsampled_difference_scaled_to_its_largest_change():
    shift = mass_shift(torch.rand(3, 4, 4), torch.rand(3, 4, 4))
    shown = shift.display((16, 16))
    assert shown.shape == (3, 16, 16)
    assert torch.allclose(shown.abs().flatten(1).amax(dim=1), torch.ones(3))
    assert shift.select(1).moved.tolist() == shift.moved[1:2].tolist()


def test_percentages_in_captions():
    assert [percent(share) for share in (0.054, 0.004, 0.0, 1.0)] == ["5%", "<1%", "0%", "100%"]


@pytest.fixture(scope="module")
def explained():
    torch.manual_seed(0)
    model = TinyStridedCNN(classes=6).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    methods = {name: camscope.explain(model, x, method=name) for name in ("gradcam", "finer-gradcam", "layercam")}
    methods["diffcam"] = camscope.explain(model, x, method="diffcam", reference=torch.randn(4, 3, 32, 32))
    return model, x, methods


def test_finer_cam_removes_the_references_share_in_grad_cam_units(explained):
    """Finer-CAM's signed map is Grad-CAM's minus gamma times the references' (linearity): removed is measured on it."""
    model, x, methods = explained
    gradcam, finer = methods["gradcam"], methods["finer-gradcam"]
    shift = explanation_shift(gradcam, finer)
    assert shift.removed is not None
    for i in range(3):
        difference, moved, removed = _brute_force(gradcam.raw[i].flatten().tolist(), finer.raw[i].flatten().tolist())
        assert shift.difference[i].flatten().tolist() == pytest.approx(difference, abs=1e-9)
        assert float(shift.moved[i]) == pytest.approx(moved, abs=1e-9)
        assert float(shift.removed[i]) == pytest.approx(removed, abs=1e-9)
    references = finer.targets.references()
    mean_reference = torch.stack(
        [camscope.explain(model, x, method="gradcam", target=references[:, r]).raw for r in range(3)]
    ).mean(dim=0)
    torch.testing.assert_close(gradcam.raw - finer.raw, 0.6 * mean_reference, rtol=1e-4, atol=1e-5)


def test_units_are_shared_within_a_method_and_its_finer_variant_only(explained):
    _, _, methods = explained
    assert shares_units(methods["gradcam"], methods["finer-gradcam"])
    assert not shares_units(methods["gradcam"], methods["diffcam"])
    assert not shares_units(methods["gradcam"], methods["layercam"])
    assert explanation_shift(methods["gradcam"], methods["diffcam"]).removed is None


def test_comparisons_pair_each_map_that_compares_with_its_base(explained):
    _, _, methods = explained
    found = comparisons(methods)
    assert {name: base for name, (base, _) in found.items()} == {"finer-gradcam": "gradcam", "diffcam": "gradcam"}
    assert comparisons({"finer-gradcam": methods["finer-gradcam"]}) == {}
