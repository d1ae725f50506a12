"""Deletion/insertion, average drop/increase, relative drop: against torchcam 0.5.0 and brute-force loops."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

import camscope
from camscope.errors import CamscopeError
from camscope.metrics import MetricResult, average_drop, deletion, increase_in_confidence, insertion, relative_drop
from camscope.metrics.common import rise_blur, rise_kernel
from camscope.targets.base import ClassDifference


class LinearModel(nn.Module):
    """logits_c = sum_{k,i,j} W[c,k,i,j] x[k,i,j]: scores of perturbed images are easy to compute by hand."""

    def __init__(self, classes: int = 4, size: int = 8) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.randn(classes, 3, size, size, generator=torch.Generator().manual_seed(3)) * 0.3
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bkij,ckij->bc", x, self.weight)


class FakeExtractor:
    """What torchcam's metrics need from a CAM extractor, returning given maps."""

    def __init__(self, model: nn.Module, maps: torch.Tensor) -> None:
        self.model = model
        self.maps = maps

    def __call__(self, class_idx=None, scores=None, normalized=True, *, targets=None, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    @contextmanager
    def _hooks_off(self):
        yield


def _maps(batch: int, size: int, seed: int = 5) -> torch.Tensor:
    maps = torch.rand(batch, size, size, generator=torch.Generator().manual_seed(seed))
    flat = maps.flatten(1)
    flat = (flat - flat.min(1, keepdim=True).values) / (
        flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values
    )
    return flat.reshape(maps.shape)


def _brute_curve(model, image, saliency, cls, step, base, insert):
    """One image, numpy loops: the RISE procedure written out."""
    h, w = saliency.shape
    order = sorted(range(h * w), key=lambda k: (-float(saliency.flatten()[k]), k))
    counts = list(range(0, h * w, step)) + [h * w]
    image, base = image.numpy(), base.numpy()
    values = []
    for count in counts:
        current = (base if insert else image).copy()
        for k in order[:count]:
            i, j = divmod(k, w)
            current[:, i, j] = image[:, i, j] if insert else base[:, i, j]
        logits = model(torch.from_numpy(current)[None]).detach()[0]
        values.append(float(torch.softmax(logits.double(), 0)[cls]))
    xs = np.array(counts) / (h * w)
    return np.array(values), float(np.trapezoid(values, xs))


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
def test_causal_metrics_match_a_brute_force_loop(kind: str) -> None:
    torch.manual_seed(0)
    model = LinearModel().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2))
    metric = deletion if kind == "deletion" else insertion
    result = metric(model, x, maps, target=[0, 2, 3], step=7, batch_size=5)
    base = torch.zeros_like(x) if kind == "deletion" else rise_blur(x)
    for b, cls in enumerate([0, 2, 3]):
        curve, auc = _brute_curve(model, x[b], maps[b], cls, 7, base[b], kind == "insertion")
        np.testing.assert_allclose(result.curves["curve"][b].numpy(), curve, atol=1e-5)
        assert result["auc"][b].item() == pytest.approx(auc, abs=1e-5)
    assert result.steps["curve"][-1].item() == 1.0 and len(result.steps["curve"]) == 11


@pytest.mark.parametrize("baseline", [None, "blur"])
def test_deletion_insertion_match_torchcam(tiny_cnn: nn.Module, images: torch.Tensor, baseline: str | None) -> None:
    from torchcam.metrics import DeletionInsertionMetric

    maps = _maps(3, 16)
    ours_del = deletion(tiny_cnn, images, maps, step=13, substrate="blur" if baseline else "zero")
    ours_ins = insertion(tiny_cnn, images, maps, step=13, substrate="blur" if baseline else "zero")
    for b in range(3):
        reference = DeletionInsertionMetric(
            FakeExtractor(tiny_cnn, maps[b : b + 1]),
            partial(torch.softmax, dim=-1),
            steps=20,
            baseline=rise_blur if baseline else None,
        )
        reference.update(images[b : b + 1])
        summary = reference.summary()
        assert ours_del["auc"][b].item() == pytest.approx(summary["deletion_auc"], abs=1e-6)
        assert ours_ins["auc"][b].item() == pytest.approx(summary["insertion_auc"], abs=1e-6)


def test_rise_blur_kernel_is_scipy_gaussian_filter_of_a_delta() -> None:
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    reference = gaussian_filter(delta, 5)  # how RISE's gkern(11, 5) builds it
    np.testing.assert_allclose(rise_kernel(11, 5).numpy(), reference, atol=1e-7)
    x = torch.randn(2, 3, 12, 12)
    kern = torch.zeros(3, 3, 11, 11)
    for c in range(3):
        kern[c, c] = torch.from_numpy(reference).float()
    expected = torch.nn.functional.conv2d(x, kern, padding=5)  # RISE: blur = conv2d(x, kern, padding=klen // 2)
    torch.testing.assert_close(rise_blur(x), expected, atol=1e-6, rtol=1e-5)


def test_deletion_summary_has_auc_of_mean_curve(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    result = deletion(tiny_cnn, images, _maps(3, 16))
    summary = result.summary()
    mean_curve = result.curves["curve"].double().mean(0)
    assert summary["auc_of_mean_curve"] == pytest.approx(
        float(torch.trapezoid(mean_curve, result.steps["curve"].double())), abs=1e-6
    )
    assert summary["auc_of_mean_curve"] == pytest.approx(summary["auc"], abs=1e-6)  # shared abscissae
    assert len(result.steps["curve"]) == 17  # default step: the width (16 px per step)


def test_batch_size_smaller_than_batch_gives_same_numbers(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    maps = _maps(3, 16)
    target = ClassDifference(None, 1, gamma=0.5)
    a = deletion(tiny_cnn, images, maps, target=target, score="logit", step=32, batch_size=64)
    b = deletion(tiny_cnn, images, maps, target=target, score="logit", step=32, batch_size=2)
    torch.testing.assert_close(a.curves["curve"], b.curves["curve"])


def test_explanation_is_accepted_and_its_target_used(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    explanation = camscope.explain(tiny_cnn, images, "gradcam", target=[1, 2, 3])
    a = deletion(tiny_cnn, images, explanation, step=64)
    b = deletion(tiny_cnn, images, explanation.maps, target=[1, 2, 3], step=64)
    torch.testing.assert_close(a.curves["curve"], b.curves["curve"])


def test_average_drop_and_increase_match_torchcam(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    from torchcam.metrics import ClassificationMetric

    maps = _maps(3, 16)
    drop = average_drop(tiny_cnn, images, maps)
    increase = increase_in_confidence(tiny_cnn, images, maps)
    for b in range(3):
        reference = ClassificationMetric(FakeExtractor(tiny_cnn, maps[b : b + 1]), partial(torch.softmax, dim=-1))
        reference.update(images[b : b + 1])
        summary = reference.summary()
        assert drop["drop"][b].item() == pytest.approx(summary["avg_drop"], abs=1e-5)
        assert increase["increase"][b].item() == summary["conf_increase"]
    assert increase.headline == "increase" and drop.headline == "drop"


def test_average_drop_closed_form() -> None:
    model = LinearModel().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    maps = _maps(2, 8)
    result = average_drop(model, x, maps, target=[1, 0])
    for b, c in enumerate([1, 0]):
        with torch.no_grad():
            y = torch.softmax(model(x[b : b + 1]).double(), 1)[0, c]
            o = torch.softmax(model(x[b : b + 1] * maps[b]).double(), 1)[0, c]
        assert result["drop"][b].item() == pytest.approx(float(max(0.0, y - o) / y), abs=1e-6)
        assert result["increase"][b].item() == float(o > y)


def test_relative_drop_matches_a_brute_force_loop() -> None:
    model = LinearModel().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(7))
    result = relative_drop(model, x, maps, fractions=(0.05, 0.1, 0.5))
    logits = model(x).detach().double()
    probs = torch.softmax(logits, 1)
    for b in range(3):
        c = int(logits[b].argmax())
        d = int(logits[b].argsort(descending=True)[1])
        for p in (0.05, 0.1, 0.5):
            count = int(64 * p + 1e-9)
            order = sorted(range(64), key=lambda k: (-float(maps[b].flatten()[k]), k))
            masked = x[b].clone()
            for k in order[:count]:
                masked[:, k // 8, k % 8] = 0
            after = torch.softmax(model(masked[None]).detach().double(), 1)[0]
            expected = (probs[b, c] - after[c]) - (probs[b, d] - after[d])
            assert result[f"rd@{p:g}"][b].item() == pytest.approx(float(expected), abs=1e-6)
    assert result.headline == "rd@0.05"
    assert result.curves["rd"].shape == (3, 3)


def test_relative_drop_versus_and_fills(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    maps = _maps(3, 16)
    given = relative_drop(tiny_cnn, images, maps, target=0, versus=[1, 2, 3])
    assert torch.isfinite(given["rd@0.1"]).all()
    for fill in ("blur", "mean", "road", torch.zeros(3, 1, 1)):
        result = relative_drop(tiny_cnn, images, maps, fill=fill)
        assert torch.isfinite(result["rd@0.05"]).all()
    zero = relative_drop(tiny_cnn, images, maps, fill="zero")
    tensor = relative_drop(tiny_cnn, images, maps, fill=torch.zeros(3, 1, 1))
    torch.testing.assert_close(zero["rd@0.1"], tensor["rd@0.1"])
    with pytest.raises(CamscopeError, match="versus must differ"):
        relative_drop(tiny_cnn, images, maps, target=1, versus=1)


def test_metric_errors(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(CamscopeError, match="maps must have shape"):
        deletion(tiny_cnn, images, torch.rand(3, 2, 16, 16))
    with pytest.raises(CamscopeError, match="step"):
        deletion(tiny_cnn, images, torch.rand(3, 16, 16), step=0)
    with pytest.raises(CamscopeError, match="fractions"):
        relative_drop(tiny_cnn, images, torch.rand(3, 16, 16), fractions=(5,))
    with pytest.raises(CamscopeError, match="substrate"):
        insertion(tiny_cnn, images, torch.rand(3, 16, 16), substrate="noise")
    with pytest.raises(CamscopeError, match="score"):
        deletion(tiny_cnn, images, torch.rand(3, 16, 16), score="softmax")
    with pytest.raises(CamscopeError, match="class target"):
        deletion(tiny_cnn, images, torch.rand(3, 16, 16), target=lambda out: out.sum(1))


def test_metric_result_cat_and_summary() -> None:
    a = MetricResult(
        "m", {"v": torch.tensor([1.0, 2.0])}, curves={"c": torch.ones(2, 3)}, steps={"c": torch.tensor([0.0, 0.5, 1.0])}
    )
    b = MetricResult(
        "m",
        {"v": torch.tensor([float("nan"), 6.0])},
        curves={"c": torch.zeros(2, 3)},
        steps={"c": torch.tensor([0.0, 0.5, 1.0])},
    )
    joined = MetricResult.cat([a, b])
    assert len(joined) == 4
    assert joined.summary() == {"v": 3.0, "n": 4}
    torch.testing.assert_close(joined.mean_curves()["c"], torch.full((3,), 0.5))
    with pytest.raises(KeyError):
        joined["missing"]
