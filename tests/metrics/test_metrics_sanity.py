"""Sanity check: Spearman and SSIM against scipy and skimage; randomisation must change a real CAM."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from camscope.errors import CamscopeError
from camscope.metrics import cascade_layers, sanity_check
from camscope.metrics.sanity import spearman, ssim


def test_spearman_matches_scipy_with_ties() -> None:
    a = torch.rand(3, 9, 9, generator=torch.Generator().manual_seed(0))
    b = torch.rand(3, 9, 9, generator=torch.Generator().manual_seed(1))
    a[0] = torch.round(a[0] * 3)
    b[1, :4] = 0.5
    ours = spearman(a, b)
    for i in range(3):
        assert ours[i].item() == pytest.approx(
            spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic, abs=1e-6
        )
    assert torch.isnan(spearman(torch.ones(1, 3, 3), b[:1, :3, :3])).all()


def test_ssim_matches_skimage() -> None:
    a = torch.rand(2, 16, 20, generator=torch.Generator().manual_seed(2))
    b = (a + 0.3 * torch.rand(2, 16, 20, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    ours = ssim(a, b)
    for i in range(2):
        reference = structural_similarity(a[i].double().numpy(), b[i].double().numpy(), data_range=1.0)
        assert ours[i].item() == pytest.approx(reference, abs=1e-6)
    with pytest.raises(CamscopeError, match="at least 7"):
        ssim(torch.rand(1, 5, 5), torch.rand(1, 5, 5))


def test_cascade_order_is_top_down(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    assert cascade_layers(tiny_cnn, images) == ["fc", "features.2", "features.0"]
    assert cascade_layers(tiny_cnn, images, group="block") == ["fc", "features"]


def test_randomisation_changes_gradcam(tiny_cnn: nn.Module) -> None:
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    result = sanity_check(tiny_cnn, x, method="gradcam", layer="features.2", target=[0, 1, 2, 3])
    assert all(torch.equal(before[k], v) for k, v in tiny_cnn.state_dict().items())  # the model is untouched
    assert result.params["layers"] == ["fc", "features.2", "features.0"]
    assert result.curves["spearman"].shape == (4, 3)
    assert result.params["verdict"] == "pass"
    assert result["spearman"].mean().item() < 0.5
    assert (result.curves["ssim"] < 0.99).all()
    again = sanity_check(tiny_cnn, x, method="gradcam", layer="features.2", target=[0, 1, 2, 3])
    torch.testing.assert_close(result.curves["spearman"], again.curves["spearman"])  # seeded


def test_model_independent_maps_fail(tiny_cnn: nn.Module) -> None:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    seen_classes = []

    def edges(model: nn.Module, inputs: torch.Tensor, target) -> torch.Tensor:
        seen_classes.append(target.classes().tolist())
        return inputs.abs().sum(1)

    result = sanity_check(tiny_cnn, x, method=edges, target=[3, 1])
    assert result.params["verdict"] == "fail" and result.params["first_below"] is None
    torch.testing.assert_close(result.curves["spearman"], torch.ones(2, 3))
    torch.testing.assert_close(result.curves["ssim"], torch.ones(2, 3))
    assert result["passed"].tolist() == [0.0, 0.0]
    assert all(classes == [3, 1] for classes in seen_classes)  # the original classes are explained


def test_sanity_errors(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(CamscopeError, match="no such layers"):
        sanity_check(tiny_cnn, images, layers=["nope"])
    with pytest.raises(CamscopeError, match="group"):
        cascade_layers(tiny_cnn, images, group="stage")


def test_finer_methods_compare_the_original_classes_on_every_copy(tiny_cnn: nn.Module, monkeypatch) -> None:
    import camscope.metrics.sanity as sanity

    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    explain = sanity.explain
    expected = explain(tiny_cnn, x, "finer-gradcam", layer="features.2", references=2)
    probe = torch.randn(3, expected.logits.shape[1], generator=torch.Generator().manual_seed(10))
    scored = []

    def spy(model, inputs, method, **kwargs):
        explanation = explain(model, inputs, method, **kwargs)
        scored.append(explanation.targets(probe))  # [B, 2]: y_c - gamma y_d for each reference d
        return explanation

    monkeypatch.setattr(sanity, "explain", spy)
    result = sanity_check(tiny_cnn, x, method="finer-gradcam", layer="features.2", options={"references": 2})
    assert result.curves["spearman"].shape == (3, 3)
    assert len(scored) == 4  # the original maps and one per randomised layer
    for scores in scored:  # every copy compares the class with the references chosen on the original model
        torch.testing.assert_close(scores, expected.targets(probe))
