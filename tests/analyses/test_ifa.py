"""Integrated feature analysis: quantile sketch, scale, importance matrices, analyses, metrics, plots, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import camscope
from camscope.analyses.ifa import Analysis, QuantileSketch, TanhScale
from camscope.errors import CamscopeError
from camscope.metrics import consistency, feature_masking_accuracy
from camscope.metrics.consistency import correlate, mardia_test, rankdata


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dataset(batches: int = 3, batch: int = 6, classes: int = 5, size: int = 16, seed: int = 0):
    g = _generator(seed)
    return [
        (torch.randn(batch, 3, size, size, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(batches)
    ]


# --------------------------------------------------------------------------------------
# Quantile sketch
# --------------------------------------------------------------------------------------

_QS = np.array([0, 0.1, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 100])


def _samples(kind: str, g: torch.Generator) -> torch.Tensor:
    if kind == "normal":
        return torch.randn(50_000, generator=g)
    if kind == "lognormal":
        return torch.randn(50_000, generator=g).exp()
    if kind == "offset":  # far from zero: a histogram anchored at 0 with relative bins would fail here
        return 1000 + torch.rand(50_000, generator=g)
    if kind == "ties":
        return torch.randint(-3, 4, (20_000,), generator=g).float()
    if kind == "outlier":  # one extreme value stretches the range
        return torch.cat([torch.randn(5_000, generator=g) * 1e-3, torch.tensor([1e6, -5.0])])
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["normal", "lognormal", "offset", "ties", "outlier"])
def test_sketch_quantiles_match_numpy_within_the_guarantee(kind):
    x = _samples(kind, _generator(1)).float()
    sketch = QuantileSketch()
    for chunk in x.split(1237):
        sketch.update(chunk)
    estimate = sketch.quantile(torch.tensor(_QS / 100)).numpy()
    reference = np.percentile(x.double().numpy(), _QS)
    spread = float(x.max() - x.min())
    error = np.abs(estimate - reference).max()
    assert error <= 0.001 * spread  # the requirement
    assert error <= 2 * spread / (sketch.bins - 2)  # the documented bound
    assert sketch.width < 2 * spread / (sketch.bins - 2)
    assert estimate[0] == reference[0] and estimate[-1] == reference[-1]  # min and max exact
    assert int(sketch.count) == x.numel()


def test_sketch_small_and_constant_inputs():
    sketch = QuantileSketch()
    sketch.update(torch.tensor([2.5]))
    assert sketch.quantile([0.0, 0.5, 1.0]).tolist() == [2.5, 2.5, 2.5]
    sketch.update(torch.full((10,), 2.5))
    assert sketch.quantile(0.3).item() == 2.5
    zeros = QuantileSketch()
    zeros.update(torch.zeros(5))
    assert zeros.quantile(0.5).item() == 0.0
    two = QuantileSketch()
    two.update(torch.tensor([-1.0, 3.0]))
    torch.testing.assert_close(two.quantile([0.0, 0.25, 1.0]), torch.tensor([-1.0, 0.0, 3.0], dtype=torch.float64))
    with pytest.raises(CamscopeError, match="empty"):
        QuantileSketch().quantile(0.5)
    with pytest.raises(CamscopeError, match=r"\[0, 1\]"):
        two.quantile(1.5)


@pytest.mark.parametrize("kind", ["normal", "offset", "outlier"])
def test_sketch_merge_equals_the_whole_bit_for_bit(kind):
    g = _generator(2)
    x = _samples(kind, g).float()
    whole = QuantileSketch(bins=512)
    whole.update(x)
    order = torch.randperm(x.numel(), generator=g)
    shards = [QuantileSketch(bins=512) for _ in range(3)]
    for i, part in enumerate(x[order].split(x.numel() // 3 + 1)):
        for chunk in part.split(101):  # other batching, other order
            shards[i].update(chunk)
    merged = shards[2].merge(shards[0]).merge(shards[1]).merge(QuantileSketch(bins=512))
    assert merged.equal(whole)
    assert QuantileSketch(bins=512).merge(whole).equal(whole)


# --------------------------------------------------------------------------------------
# The common intensity scale
# --------------------------------------------------------------------------------------


def test_tanh_scale_is_exact_at_the_references_and_monotonic():
    scale = TanhScale.fit(-0.3, 2.0)
    values = scale(torch.tensor([-0.3, 2.0], dtype=torch.float64))
    torch.testing.assert_close(values, torch.tensor([0.1, 0.9], dtype=torch.float64), rtol=0, atol=1e-12)
    # b as METHODS.md restates it: (P90 atanh(0.1) - P10 atanh(0.9)) / (P90 - P10).
    assert scale.b == pytest.approx((2.0 * math.atanh(0.1) - (-0.3) * math.atanh(0.9)) / 2.3)
    grid = torch.linspace(-50, 50, 10_001, dtype=torch.float64)
    mapped = scale(grid)
    assert bool((mapped[1:] >= mapped[:-1]).all()) and bool((mapped.abs() < 1).all() | (mapped.abs() == 1).any())
    assert bool((mapped[4000:6001].diff() > 0).all())  # strictly increasing where tanh is not saturated
    torch.testing.assert_close(scale.inverse(scale(grid[4000:6001])), grid[4000:6001])
    other = TanhScale.fit(1.0, 5.0, 0.05, 0.95)
    torch.testing.assert_close(
        other(torch.tensor([1.0, 5.0], dtype=torch.float64)), torch.tensor([0.05, 0.95], dtype=torch.float64)
    )
    with pytest.raises(CamscopeError, match="distinct"):
        TanhScale.fit(1.0, 1.0)
    with pytest.raises(CamscopeError, match="targets"):
        TanhScale.fit(0.0, 1.0, 0.9, 0.1)


def test_analysis_scales_use_the_percentiles_and_the_image_extremes(tiny_cnn):
    data = _dataset()
    analysis = camscope.analyze(tiny_cnn, data, layer="features.2")
    raws = torch.cat([camscope.explain(tiny_cnn, x, layer="features.2").raw for x, _ in data])
    p10, p90 = np.percentile(raws.double().numpy(), [10, 90])
    scale = analysis.scale()
    assert (scale.low, scale.high) == pytest.approx((p10, p90), abs=1e-3 * float(raws.max() - raws.min()))
    torch.testing.assert_close(
        scale(torch.tensor([scale.low, scale.high], dtype=torch.float64)), torch.tensor([0.1, 0.9], dtype=torch.float64)
    )
    extremes = analysis.scale("image-extremes")
    maxima, minima = raws.flatten(1).amax(1).double().numpy(), raws.flatten(1).amin(1).double().numpy()
    span = float(raws.max() - raws.min())
    assert extremes.high == pytest.approx(np.percentile(maxima, 90), abs=1e-3 * span)
    assert extremes.low == pytest.approx(np.percentile(minima, 50), abs=1e-3 * span)
    assert (extremes.low_target, extremes.high_target, extremes.kind) == (0.05, 0.95, "image-extremes")
    custom = analysis.scale(percentiles=(25, 75), targets=(0.2, 0.8))
    assert custom.low == pytest.approx(np.percentile(raws.double().numpy(), 25), abs=1e-3 * span)
    with pytest.raises(CamscopeError, match="kind"):
        analysis.scale("minmax")


def test_explain_with_scale_gives_signed_s_cams(strided_cnn, images):
    data = _dataset(classes=4)
    analysis = camscope.analyze(strided_cnn, data, layer="stage")
    scale = analysis.scale()
    explanation = camscope.explain(strided_cnn, images, layer="stage", scale=analysis)
    expected = torch.tanh(scale.a * camscope.engine.explainer.upsample(explanation.raw, images.shape[2:]) + scale.b)
    torch.testing.assert_close(explanation.maps, expected)
    # Signed, in (-1, 1), comparable across images; negative evidence is kept below sigma(0) = tanh(b).
    up = camscope.engine.explainer.upsample(explanation.raw, images.shape[2:])
    assert bool((explanation.maps.abs() < 1).all()) and bool((up < 0).any())
    assert bool((explanation.maps[up < 0] < math.tanh(scale.b)).all())
    # A scale object works too; FS and S combine (FS-S-Grad-CAM).
    mask = analysis.principal_features(0.25, cls=explanation.classes)
    both = camscope.explain(strided_cnn, images, layer="stage", scale=scale, features=mask)
    fs = camscope.explain(strided_cnn, images, layer="stage", features=mask)
    torch.testing.assert_close(both.raw, fs.raw)
    torch.testing.assert_close(both.maps, scale(camscope.engine.explainer.upsample(fs.raw, images.shape[2:])))
    # The plain explanation is unchanged by the new keyword.
    torch.testing.assert_close(
        camscope.explain(strided_cnn, images, layer="stage").maps,
        camscope.explain(strided_cnn, images, layer="stage", scale=None).maps,
    )
    with pytest.raises(CamscopeError, match="method"):
        camscope.explain(strided_cnn, images, method="gradcampp", layer="stage", scale=analysis)
    with pytest.raises(CamscopeError, match="layer"):
        camscope.explain(strided_cnn, images, layer="stem", scale=analysis)
    with pytest.raises(CamscopeError, match="single layer"):
        camscope.explain(strided_cnn, images, layer=["stem", "stage"], scale=TanhScale.fit(0, 1))
    with pytest.raises(CamscopeError, match="scale="):
        camscope.explain(strided_cnn, images, layer="stage", scale="p90")


# --------------------------------------------------------------------------------------
# The dataset pass and the importance matrices against brute-force loops
# --------------------------------------------------------------------------------------


def _brute_force_eq4(model, data, method, layer, **options):
    total = torch.zeros(0)
    counts = None
    for x, labels in data:
        for i in range(x.shape[0]):
            e = camscope.explain(model, x[i : i + 1], method=method, layer=layer, target=int(labels[i]), **options)
            if counts is None:
                total = torch.zeros(e.contributions.shape[1], e.logits.shape[1], dtype=torch.float64)
                counts = torch.zeros(e.logits.shape[1])
            total[:, labels[i]] += e.contributions[0].double()
            counts[labels[i]] += 1
    return (total / counts.clamp(min=1)).float(), counts


def _brute_force_eq3(model, data, method, layer, **options):
    columns = []
    n = sum(x.shape[0] for x, _ in data)
    classes = model(data[0][0][:1]).shape[1]
    for c in range(classes):
        column = sum(
            camscope.explain(model, x[i : i + 1], method=method, layer=layer, target=c, **options)
            .contributions[0]
            .double()
            for x, _ in data
            for i in range(x.shape[0])
        )
        columns.append(column / n)
    return torch.stack(columns, dim=1).float()


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "xgradcam", "layercam", "cam"])
@pytest.mark.parametrize("explain", ["predicted", "true"])
def test_eq4_matches_a_brute_force_loop(tiny_cnn, method, explain):
    data = _dataset()
    layer = "features.2"
    analysis = camscope.analyze(tiny_cnn, data, method=method, layer=layer, explain=explain)
    expected, counts = _brute_force_eq4(tiny_cnn, data, method, layer)
    torch.testing.assert_close(analysis.importance, expected, rtol=1e-4, atol=1e-6)
    assert analysis.class_counts.tolist() == counts.long().tolist()
    assert analysis.n_samples == 18 and int(analysis.stand_ins) == 0


def test_the_distribution_is_that_of_the_explained_class(tiny_cnn):
    data = _dataset()
    for explain, target in (("predicted", lambda labels: None), ("true", lambda labels: labels)):
        analysis = camscope.analyze(tiny_cnn, data, layer="features.2", explain=explain)
        raws = torch.cat([camscope.explain(tiny_cnn, x, layer="features.2", target=target(y)).raw for x, y in data])
        values = raws.double().numpy()
        q = [1, 10, 50, 90, 99]
        span = values.max() - values.min()
        np.testing.assert_allclose(analysis.percentile(q).numpy(), np.percentile(values, q), atol=1e-3 * span)
        assert analysis.n_values == values.size
        assert analysis.min == pytest.approx(values.min(), rel=1e-6) and analysis.max == pytest.approx(
            values.max(), rel=1e-6
        )
        assert analysis.mean == pytest.approx(values.mean(), rel=1e-4, abs=1e-9)
        assert analysis.std == pytest.approx(values.std(), rel=1e-4)
        assert isinstance(analysis.percentile(50), float)


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "gradcampp", "xgradcam", "cam"])
def test_eq3_matches_a_brute_force_loop(strided_cnn, method):
    data = _dataset(batches=2, batch=4, classes=4)
    analysis = camscope.analyze(strided_cnn, data, method=method, layer="stage", all_classes=True, class_chunk=3)
    expected = _brute_force_eq3(strided_cnn, data, method, "stage")
    torch.testing.assert_close(analysis.importance_all, expected, rtol=1e-4, atol=1e-6)
    default_chunks = camscope.analyze(strided_cnn, data, method=method, layer="stage", all_classes=True)
    torch.testing.assert_close(default_chunks.importance_all, analysis.importance_all, rtol=1e-5, atol=1e-7)
    # Eq. 4 is the true-class part of the same contributions.
    eq4, _ = _brute_force_eq4(strided_cnn, data, method, "stage")
    torch.testing.assert_close(analysis.importance, eq4, rtol=1e-4, atol=1e-6)


def test_eq3_falls_back_to_one_explanation_per_class_for_methods_with_extra_passes(strided_cnn):
    # Smooth Grad-CAM++ recomputes gradients on noisy inputs; with std=0 it is deterministic.
    data = _dataset(batches=1, batch=3, classes=4)
    options = dict(samples=2, std=0.0)
    analysis = camscope.analyze(strided_cnn, data, method="smoothgradcampp", layer="stage", all_classes=True, **options)
    expected = _brute_force_eq3(strided_cnn, data, "smoothgradcampp", "stage", **options)
    torch.testing.assert_close(analysis.importance_all, expected, rtol=1e-4, atol=1e-6)


def test_thousand_classes_stay_affordable():
    # Eq. 3 with 1000 classes: chunks of classes in batched backwards, not 1000 passes.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1000)
    ).eval()
    data = [(torch.randn(4, 3, 8, 8), torch.tensor([0, 999, 5, 5]))]
    calls = []
    model[4].register_forward_hook(lambda *args: calls.append(1))
    analysis = camscope.analyze(model, data, layer="0", all_classes=True)
    assert len(calls) == 1  # one forward pass for the batch
    assert analysis.importance_all.shape == (8, 1000)
    # Grad-CAM contributions of a GAP + linear head: W[c, k] * mean_ij ReLU'(A) A... check two columns by brute force.
    for c in (3, 999):
        expected = (
            sum(camscope.explain(model, data[0][0][i : i + 1], layer="0", target=c).contributions[0] for i in range(4))
            / 4
        )
        torch.testing.assert_close(analysis.importance_all[:, c], expected, rtol=1e-4, atol=1e-7)


def test_tokens_and_volumes(tiny_vit, tiny_3d):
    g = _generator(3)
    data = [(torch.randn(4, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 3]))]
    analysis = camscope.analyze(tiny_vit, data)
    expected, _ = _brute_force_eq4(tiny_vit, data, "gradcam", analysis.layer)
    torch.testing.assert_close(analysis.importance, expected, rtol=1e-4, atol=1e-6)
    volumes = [(torch.randn(2, 1, 8, 8, 8, generator=g), torch.tensor([0, 2]))]
    analysis = camscope.analyze(tiny_3d, volumes, layer="features.2")
    expected, _ = _brute_force_eq4(tiny_3d, volumes, "gradcam", "features.2")
    torch.testing.assert_close(analysis.importance, expected, rtol=1e-4, atol=1e-6)
    assert analysis.info["spatial"] == [4, 4, 4]


def test_unlabelled_samples_use_their_prediction(tiny_cnn):
    x = torch.randn(5, 3, 16, 16, generator=_generator(4))
    analysis = camscope.analyze(tiny_cnn, x, layer="features.2", batch_size=2)
    predictions = tiny_cnn(x).argmax(1)
    expected, _ = _brute_force_eq4(tiny_cnn, [(x, predictions)], "gradcam", "features.2")
    torch.testing.assert_close(analysis.importance, expected, rtol=1e-4, atol=1e-6)
    assert int(analysis.stand_ins) == 5 and analysis.accuracy is None
    with pytest.raises(CamscopeError, match="explain='true' needs a label"):
        camscope.analyze(tiny_cnn, x, layer="features.2", explain="true")


def test_bad_arguments_have_clear_errors(tiny_cnn):
    data = _dataset()
    with pytest.raises(CamscopeError, match="out of range"):
        camscope.analyze(tiny_cnn, [(data[0][0], torch.full((6,), 7))], layer="features.2")
    with pytest.raises(CamscopeError, match="explain must be"):
        camscope.analyze(tiny_cnn, data, explain="both")
    with pytest.raises(CamscopeError, match="percentiles"):
        camscope.analyze(tiny_cnn, data, percentiles=(90, 10))
    with pytest.raises(CamscopeError, match="one layer"):
        camscope.analyze(tiny_cnn, data, layer=["features.0", "features.2"])
    with pytest.raises(CamscopeError, match="no batches"):
        camscope.analyze(tiny_cnn, [], layer="features.2")
    analysis = camscope.analyze(tiny_cnn, data, layer="features.2")
    with pytest.raises(CamscopeError, match="fraction"):
        analysis.principal_features(0)
    with pytest.raises(CamscopeError, match="profiles=True"):
        analysis.outliers()
    with pytest.raises(CamscopeError, match="all_classes=True"):
        analysis.principal_features(source="all")


# --------------------------------------------------------------------------------------
# Merge, save, load
# --------------------------------------------------------------------------------------


def _assert_same_analysis(a: Analysis, b: Analysis) -> None:
    for name in ("values", "image_max", "image_min"):
        assert getattr(a, name).equal(getattr(b, name)), name
    assert torch.equal(a.class_counts.cpu(), b.class_counts.cpu())
    assert a.n_samples == b.n_samples and int(a.correct) == int(b.correct) and int(a.labelled) == int(b.labelled)
    torch.testing.assert_close(a.im_sum.cpu(), b.im_sum.cpu(), rtol=1e-12, atol=1e-15)
    if a.im_all_sum is not None:
        torch.testing.assert_close(a.im_all_sum.cpu(), b.im_all_sum.cpu(), rtol=1e-12, atol=1e-15)
    assert int(a.moments.count) == int(b.moments.count)
    assert a.mean == pytest.approx(b.mean, rel=1e-12, abs=1e-15) and a.std == pytest.approx(b.std, rel=1e-12)
    assert a.percentile([10, 90]).tolist() == b.percentile([10, 90]).tolist()


def test_merge_of_two_shards_equals_the_whole(tiny_cnn):
    data = _dataset(batches=4)
    options = dict(layer="features.2", all_classes=True, profiles=True)
    whole = camscope.analyze(tiny_cnn, data, **options)
    first = camscope.analyze(tiny_cnn, data[:1], **options)
    second = camscope.analyze(tiny_cnn, data[1:], batch_size=4, **options)
    merged = first.merge(second)
    _assert_same_analysis(merged, whole)
    torch.testing.assert_close(merged.profiles, whole.profiles)
    assert merged.profile_ids.tolist() == list(range(24))
    assert torch.equal(merged.profile_labels, whole.profile_labels)
    with pytest.raises(CamscopeError, match="different settings"):
        whole.merge(camscope.analyze(tiny_cnn, data[:1], layer="features.0"))


def test_save_and_load_round_trip(tiny_cnn, tmp_path):
    data = _dataset()
    analysis = camscope.analyze(tiny_cnn, data, layer="features.2", all_classes=True, profiles=True)
    path = analysis.save(tmp_path / "run.analysis")
    loaded = Analysis.load(path)
    _assert_same_analysis(loaded, analysis)
    assert (loaded.method, loaded.layer, loaded.explain, loaded.percentiles) == (
        "gradcam",
        "features.2",
        "predicted",
        (10.0, 90.0),
    )
    torch.testing.assert_close(loaded.profiles, analysis.profiles)
    torch.testing.assert_close(loaded.importance_all, analysis.importance_all)
    assert loaded.scale() == analysis.scale()
    # Shards saved by different processes merge after loading.
    _assert_same_analysis(loaded.merge(analysis), analysis.merge(analysis))
    assert not list(tmp_path.glob("*.tmp"))
    bad = tmp_path / "bad.safetensors"
    camscope.io.save_tensors(bad, {"x": torch.zeros(1)}, {}, kind="something")
    with pytest.raises(CamscopeError, match="not a 'analysis'"):
        Analysis.load(bad)


# --------------------------------------------------------------------------------------
# Principal features and feature masking on a model with known signal channels
# --------------------------------------------------------------------------------------

_SIGNAL = {0: [3, 11, 17], 1: [0, 8, 21], 2: [5, 14, 23]}
_CHANNELS = 24


class SignalNet(nn.Module):
    """Only the channels in ``_SIGNAL[c]`` carry class c; the others add the same amount to every logit."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(_CHANNELS, _CHANNELS, 1, bias=False)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(_CHANNELS, len(_SIGNAL))
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(_CHANNELS)[:, :, None, None])
            noise = torch.empty(_CHANNELS).uniform_(-0.5, 0.5, generator=_generator(5))
            weight = noise.expand(len(_SIGNAL), -1).clone()  # the same for every class: no class signal
            for channels in _SIGNAL.values():
                weight[:, channels] = 0.0
            for c, channels in _SIGNAL.items():
                weight[c, channels] = 1.0
            self.fc.weight.copy_(weight)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.features(x)).mean(dim=(2, 3)))


def _signal_data(per_class: int = 20, seed: int = 6, batch: int = 10):
    g = _generator(seed)
    images, labels = [], []
    for c, channels in _SIGNAL.items():
        x = torch.rand(per_class, _CHANNELS, 6, 6, generator=g)  # noise channels: U(0, 1)
        for other in _SIGNAL.values():
            x[:, other] *= 0.2  # signal channels of other classes: weak
        x[:, channels] = 1 + torch.rand(per_class, len(channels), 6, 6, generator=g)  # this class: strong
        images.append(x)
        labels.append(torch.full((per_class,), c))
    x, y = torch.cat(images), torch.cat(labels)
    order = torch.randperm(len(y), generator=g)
    x, y = x[order], y[order]
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]


def test_known_signal_channels_are_the_principal_features_and_keep_the_accuracy():
    model = SignalNet().eval()
    data = _signal_data()
    analysis = camscope.analyze(model, data, layer="features")
    assert analysis.accuracy == 1.0
    fraction = 3 / _CHANNELS
    for relative in (False, True):
        masks = analysis.principal_features(fraction, relative_to_mean=relative)
        for c, channels in _SIGNAL.items():
            assert torch.nonzero(masks[c]).flatten().tolist() == sorted(channels)
            assert torch.equal(analysis.principal_features(fraction, cls=c, relative_to_mean=relative), masks[c])
    assert analysis.principal_features(fraction, cls=[2, 0]).shape == (2, _CHANNELS)
    principal = analysis.principal_features(fraction).any(dim=0)
    accuracies = feature_masking_accuracy(
        model, data, "features", {"all": None, "principal": principal, "non-principal": ~principal}
    )
    assert accuracies["all"] == 1.0 and accuracies["principal"] == 1.0
    assert accuracies["non-principal"] <= 0.5  # class-independent features alone: one class for everything
    assert feature_masking_accuracy(model, data, "features", analysis.principal_features(fraction)) == 1.0
    # The hook really blocks the channels inside the network.
    x = data[0][0]
    blocked = model.fc(model.relu(model.features(x) * principal.float()[:, None, None]).mean(dim=(2, 3)))
    assert not torch.allclose(blocked, model(x))
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_feature_masking_checks_the_mask_and_labels():
    model = SignalNet().eval()
    data = _signal_data(per_class=2)
    with pytest.raises(CamscopeError, match="channels"):
        feature_masking_accuracy(model, data, "features", torch.ones(5, dtype=torch.bool))
    with pytest.raises(CamscopeError, match="labelled"):
        feature_masking_accuracy(model, [x for x, _ in data], "features")
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_outliers_find_a_mislabelled_sample():
    model = SignalNet().eval()
    data = _signal_data()
    x, y = data[1]
    flipped = y.clone()
    flipped[4] = (y[4] + 1) % 3
    data[1] = (x, flipped)
    analysis = camscope.analyze(model, data, layer="features", profiles=True)
    found = analysis.outliers(k=3)
    assert found[0].index == 14 and found[0].label == int(flipped[4]) and found[0].prediction == int(y[4])
    assert found[0].distance > found[1].distance
    assert analysis.outliers(k=1, metric="relative")[0].index == 14


def _synthetic(matrix: torch.Tensor, counts: list[int] | None = None) -> Analysis:
    features, classes = matrix.shape
    analysis = Analysis(method="gradcam", layer="layer", num_features=features, num_classes=classes)
    counts_tensor = torch.tensor(counts or [1] * classes)
    analysis.im_sum = matrix.double() * counts_tensor
    analysis.class_counts = counts_tensor
    return analysis


def test_compare_redundancy_and_confounders_on_known_matrices():
    g = _generator(7)
    matrix = torch.rand(10, 4, generator=g)
    matrix[7:] = 0.001  # lazy features
    matrix[:, 2] = 0.01
    matrix[4, 2] = 5.0  # class 2 rests on one feature
    train = _synthetic(matrix, [3, 3, 3, 3])
    assert train.compare(train).summary == 0.0
    test = matrix.clone()
    test[1] -= 0.5  # feature 1 is less active on the test set
    comparison = train.compare(_synthetic(test, [2, 2, 2, 0]))
    assert comparison.top_features[0] == 1
    assert comparison.classes.tolist() == [0, 1, 2]
    assert math.isnan(float(comparison.class_difference[3]))
    expected = (matrix - test)[:, :3].norm() / matrix[:, :3].norm()
    assert comparison.summary == pytest.approx(float(expected), rel=1e-6)
    assert comparison.feature_difference[1] == pytest.approx(0.5, rel=1e-5)
    assert str(comparison).startswith("relative difference")
    redundancy = train.redundancy(threshold=0.05)
    assert torch.nonzero(redundancy.lazy).flatten().tolist() == [7, 8, 9]
    assert redundancy.share == pytest.approx(0.3)
    confounders = train.confounders(top=1, share=0.5)
    assert [item.cls for item in confounders] == [2]
    assert confounders[0].features == [4] and confounders[0].share > 0.9
    assert confounders[0].effective_features < 1.1


# --------------------------------------------------------------------------------------
# Consistency (Sec. III-B) and its statistics against scipy
# --------------------------------------------------------------------------------------


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


class BlobNet(nn.Module):
    """Positive filters, ReLU, global pooling: the class-0 logit grows with the blob's contrast."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.rand(4, 1, 3, 3, generator=_generator(10)) / 9)
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[1.0, 0.5, 2.0, 1.5], [-1.0, -0.5, -2.0, -1.5]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def _blobs(n: int, seed: int) -> torch.Tensor:
    """One Gaussian blob per image at a random place, contrast U(0.2, 2), on faint noise."""
    g = _generator(seed)
    grid = torch.arange(16.0)
    centre = 4 + 8 * torch.rand(n, 2, generator=g)
    amplitude = 0.2 + 1.8 * torch.rand(n, generator=g)
    yy = (grid[None, :, None] - centre[:, 0, None, None]) ** 2
    xx = (grid[None, None, :] - centre[:, 1, None, None]) ** 2
    blob = amplitude[:, None, None] * torch.exp(-(yy + xx) / 8)
    return (blob + 0.05 * torch.randn(n, 16, 16, generator=g))[:, None]


def test_s_gradcam_is_more_consistent_with_the_logits_than_gradcam():
    # What this shows, honestly: per-image min-max scaling removes the activation
    # level, so the sum of a Grad-CAM map hardly depends on how strongly the model
    # responds; a common tanh scale keeps the level. On this dataset the class-0
    # logit is a monotone function of each image's blob contrast and the blob's
    # shape does not change, which is the situation where the paper's claim should
    # hold. It is a check of the mechanism, not evidence on natural images.
    model = BlobNet().eval()
    calibration = _blobs(200, seed=11)
    analysis = camscope.analyze(model, calibration, layer="conv", batch_size=50)
    test = _blobs(150, seed=12)
    plain, scaled = consistency(model, test, layer="conv", target=0, scale=[None, analysis], batch_size=50)
    assert plain.name == "gradcam" and scaled.name == "S-gradcam"
    assert torch.equal(plain.logits, scaled.logits) and plain.logits.numel() == 150
    assert scaled.coefficient > 0.9
    assert scaled.coefficient > plain.coefficient + 0.5  # Grad-CAM sums even fall as the contrast rises (noise share)
    assert scaled.probability.coefficient > plain.probability.coefficient
    # The reported coefficient is the one the normality test chose.
    expected = correlate(scaled.cam_sums, scaled.logits)
    assert scaled.logit.coefficient == expected.coefficient
    # FS-S variant: the principal features of a single-class problem.
    mask = analysis.principal_features(0.5)
    fs = consistency(model, test, layer="conv", target=0, scale=analysis, features=mask, batch_size=50)
    assert fs.name == "FS-S-gradcam" and fs.coefficient > 0.9


# --------------------------------------------------------------------------------------
# Plots and command line
# --------------------------------------------------------------------------------------


def test_plots_render(tiny_cnn, tmp_path):
    from camscope.viz.analysis import consistency_scatter, distribution_plot, importance_heatmap, importance_lines
    from camscope.viz.figures import save_figure

    data = _dataset()
    train = camscope.analyze(tiny_cnn, data, layer="features.2", all_classes=True)
    test = camscope.analyze(tiny_cnn, _dataset(seed=1), layer="features.2")
    results = consistency(tiny_cnn, [x for x, _ in data], layer="features.2", scale=[None, train])
    figures = {
        "heatmap": importance_heatmap(train, class_names=list("abcde")),
        "heatmap_all": importance_heatmap(train, source="all", relative_to_mean=True),
        "lines": importance_lines(train, test, cls=1),
        "scatter": consistency_scatter(results),
        "scatter_p": consistency_scatter(results[0], against="probability"),
        "distribution": distribution_plot(train),
    }
    for name, figure in figures.items():
        path = save_figure(tmp_path / f"{name}.png", figure)
        assert path.stat().st_size > 1000
    with pytest.raises(CamscopeError):
        importance_lines(train, test, cls=9)


def _image_folder(root: Path, classes: list[str], per_class: int = 3, size: int = 64) -> Path:
    from PIL import Image

    g = np.random.default_rng(13)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(g.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_cli_analyze_writes_the_analysis_plots_and_report(tmp_path, capsys):
    from camscope.cli.app import main

    data = _image_folder(tmp_path / "data", ["0", "1", "2"])
    out = tmp_path / "out"
    model = ["--model", "timm:resnet10t", "--weights", "none", "--size", "64"]
    code = main(
        ["analyze", "--data", str(data), "--out", str(out), "--batch-size", "4", "--compare", str(data), *model]
    )
    assert code == 0, capsys.readouterr().err
    for name in (
        "analysis.safetensors",
        "compare.safetensors",
        "importance.png",
        "distribution.png",
        "lines.png",
        "consistency.png",
        "report.md",
    ):
        assert (out / name).is_file(), name
    analysis = Analysis.load(out / "analysis.safetensors")
    assert analysis.n_samples == 9 and analysis.class_counts[:3].tolist() == [3, 3, 3] and analysis.num_classes == 1000
    assert analysis.profiles.shape == (9, analysis.num_features)
    report = (out / "report.md").read_text()
    for heading in (
        "## Distribution",
        "## Importance matrix",
        "## Consistency",
        "## Overfitting",
        "S-gradcam",
        "tanh(",
    ):
        assert heading in report
    assert "0.000" in report  # the same folder twice: no difference between the matrices
    # S- and FS-S-CAMs from the command line.
    image = data / "1" / "0.png"
    scale = ["--scale", str(out / "analysis.safetensors")]
    assert main(["explain", str(image), *scale, "--principal", "0.05", *model]) == 2  # predicted class: no column
    assert "no samples" in capsys.readouterr().err
    code = main(
        ["explain", str(image), *scale, "--principal", "0.05", "--target", "1", "--out", str(tmp_path / "maps"), *model]
    )
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "maps" / "0_gradcam.png").is_file()
    capsys.readouterr()
    assert main(["explain", str(image), "--principal", "0.05", *model]) == 2
    assert "--scale" in capsys.readouterr().err


def test_cli_analyze_rejects_folders_that_are_not_classes(tmp_path, capsys):
    from camscope.cli.app import main

    data = _image_folder(tmp_path / "data", ["0", "surely-no-such-class-xyz"], per_class=1)
    code = main(
        [
            "analyze",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--model",
            "timm:resnet10t",
            "--weights",
            "none",
            "--size",
            "64",
        ]
    )
    assert code == 2
    assert "not a class of the model" in capsys.readouterr().err
    assert main(["analyze", "--data", str(tmp_path / "missing"), "--model", "timm:resnet10t", "--weights", "none"]) == 2


def test_run_analysis_with_a_model_object_and_an_unlabelled_folder(tmp_path, tiny_cnn):
    from camscope.cli.analyze import folder_dataset, run_analysis

    flat = tmp_path / "flat"
    flat.mkdir()
    from PIL import Image

    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * i, dtype=np.uint8)).save(flat / f"{i}.png")
    dataset, names = folder_dataset(flat, tiny_cnn, 16)
    assert names == [f"class {i}" for i in range(5)]
    summary = run_analysis(
        tiny_cnn, dataset, tmp_path / "out", layer="features.2", size=16, batch_size=3, all_classes=True
    )
    assert summary["samples"] == 4 and summary["accuracy"] is None
    assert "unlabelled images counted under their predicted class" in (tmp_path / "out" / "report.md").read_text()


def test_perturbation_projection_and_comparison_methods(strided_cnn):
    missing = {"scorecam", "eigencam", "finer-gradcam"} - set(camscope.available_methods())
    if missing:
        pytest.skip(f"methods not available: {sorted(missing)}")
    data = _dataset(batches=1, batch=3, classes=4)
    # Score-CAM needs extra forward passes: Eq. 4 in the pass, Eq. 3 by one explanation per class.
    analysis = camscope.analyze(strided_cnn, data, method="scorecam", layer="stage", all_classes=True)
    expected, _ = _brute_force_eq4(strided_cnn, data, "scorecam", "stage")
    torch.testing.assert_close(analysis.importance, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        analysis.importance_all, _brute_force_eq3(strided_cnn, data, "scorecam", "stage"), rtol=1e-4, atol=1e-6
    )
    # Eigen-CAM projects the activations: a distribution, no importance matrix.
    projection = camscope.analyze(strided_cnn, data, method="eigencam", layer="stage")
    raws = torch.cat([camscope.explain(strided_cnn, x, method="eigencam", layer="stage").raw for x, _ in data])
    assert projection.n_values == raws.numel() and projection.max == pytest.approx(float(raws.max()), rel=1e-5)
    assert not projection.has_importance
    with pytest.raises(CamscopeError, match="no channel weights"):
        projection.principal_features()
    with pytest.raises(CamscopeError, match="single-class"):
        camscope.analyze(strided_cnn, data, method="finer-gradcam", layer="stage")
