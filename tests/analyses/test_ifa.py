"""Integrated feature analysis: the dataset pass, importance matrices, principal features, analyses, merge, save, load."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import camscope
from camscope.analyses.ifa import Analysis
from camscope.errors import CamscopeError
from camscope.metrics import feature_masking_accuracy


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dataset(batches: int = 3, batch: int = 6, classes: int = 5, size: int = 16, seed: int = 0):
    g = _generator(seed)
    return [
        (torch.randn(batch, 3, size, size, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(batches)
    ]


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


def test_progress_keyword_and_its_deprecated_alias(tiny_cnn):
    data = _dataset(batches=2)
    quiet = camscope.analyze(tiny_cnn, data, layer="features.2", progress=False)
    with pytest.warns(DeprecationWarning, match="progress="):
        old = camscope.analyze(tiny_cnn, data, layer="features.2", show_progress=False)
    torch.testing.assert_close(old.importance, quiet.importance)
    assert old.values.equal(quiet.values)
    with pytest.warns(DeprecationWarning, match="show_progress"), pytest.raises(CamscopeError, match="not both"):
        camscope.analyze(tiny_cnn, data, layer="features.2", progress=True, show_progress=False)
    with pytest.raises(CamscopeError, match="batch_size"):
        camscope.analyze(tiny_cnn, data, layer="features.2", batch_size=0)


def test_a_loader_and_a_tensor_give_the_same_analysis(tiny_cnn):
    x = torch.randn(7, 3, 16, 16, generator=_generator(12))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=3)
    from_loader = camscope.analyze(tiny_cnn, (inputs for (inputs,) in loader), layer="features.2", progress=False)
    from_tensor = camscope.analyze(tiny_cnn, x, layer="features.2", batch_size=3, progress=False)
    assert from_loader.n_samples == from_tensor.n_samples == 7
    assert from_loader.values.equal(from_tensor.values)
    torch.testing.assert_close(from_loader.importance, from_tensor.importance)


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


_V010 = Path(__file__).parent / "data" / "analysis-0.1.0.safetensors"


def test_files_written_by_0_1_0_load_and_save_in_the_same_format(tmp_path):
    # Written by camscope 0.1.0: Analysis.save of analyze(model, data, layer="0", all_classes=True,
    # profiles=True, bins=64) on a 4-channel, 3-class CNN and 6 images (one unlabelled).
    analysis = Analysis.load(_V010)
    assert analysis.summary() == {
        "method": "gradcam",
        "layer": "0",
        "explain": "predicted",
        "samples": 6,
        "values": 216,
        "features": 4,
        "classes": 3,
        "classes_with_samples": 3,
        "accuracy": 0.2,
        "mean": 0.0006666382650345676,
        "std": 0.002812232869868572,
        "min": -0.008231978863477707,
        "max": 0.00999121367931366,
        "P10": -0.0027901785714285715,
        "P90": 0.0045166015625,
    }  # the numbers 0.1.0 printed for this file
    assert analysis.importance_all.shape == (4, 3) and analysis.profiles.shape == (6, 4)
    assert analysis.profile_ids.tolist() == list(range(6)) and int(analysis.stand_ins) == 1
    tensors, header = camscope.io.load_tensors(_V010, kind="analysis")
    again, again_header = camscope.io.load_tensors(analysis.save(tmp_path / "again.safetensors"), kind="analysis")
    assert again_header == header and again.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert again[name].dtype == tensor.dtype and torch.equal(again[name], tensor), name


def _assert_same_state(a, b, path="state") -> None:
    """Equal nested state dicts: same keys, types, dtypes, devices and values, bit for bit."""
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same_state(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert (a.dtype, a.device, a.shape) == (b.dtype, b.device, b.shape), path
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def test_state_dict_round_trips_exactly(tiny_cnn):
    data = _dataset()
    analysis = camscope.analyze(tiny_cnn, data, layer="features.2", all_classes=True, profiles=True, progress=False)
    state = analysis.state_dict()
    restored = Analysis.from_state_dict(state)
    _assert_same_state(restored.state_dict(), state)
    _assert_same_analysis(restored, analysis)
    assert restored.scale() == analysis.scale() and restored.summary() == analysis.summary()
    assert torch.equal(restored.profiles, analysis.profiles) and torch.equal(restored.profile_ids, analysis.profile_ids)
    # load_state_dict replaces everything, settings included; the state is a copy of the analysis.
    other = Analysis(method="cam", layer="x", num_features=1, num_classes=1, bins=16).load_state_dict(state)
    _assert_same_state(other.state_dict(), state)
    analysis.im_sum += 1
    assert not torch.equal(analysis.im_sum, state["im_sum"])
    _assert_same_state(restored.state_dict(), other.state_dict())
    plain = camscope.analyze(tiny_cnn, data[:1], layer="features.2", progress=False)
    _assert_same_state(Analysis.from_state_dict(plain.state_dict()).state_dict(), plain.state_dict())
    del state["moments"]
    with pytest.raises(CamscopeError, match="moments"):
        Analysis.from_state_dict(state)


def test_a_pass_resumed_from_a_state_dict_equals_one_pass(tiny_cnn):
    from camscope.analyses.ifa.batch import BatchPass
    from camscope.engine.capture import resolve_layers

    data = _dataset(batches=4)
    options = dict(layer="features.2", all_classes=True, profiles=True, progress=False)
    whole = camscope.analyze(tiny_cnn, data, **options)
    checkpoint = camscope.analyze(tiny_cnn, data[:2], **options).state_dict()
    resumed = Analysis.from_state_dict(checkpoint)
    explainer = camscope.Explainer(tiny_cnn, layer="features.2")
    ((name, module),) = resolve_layers(tiny_cnn, "features.2")
    runner = BatchPass(explainer, name, module, all_classes=True, class_chunk=None)
    for inputs, labels in data[2:]:
        resumed.update(runner.run(inputs, labels, "predicted"))
    resumed.finish()
    _assert_same_state(resumed.state_dict(), whole.state_dict())
    assert resumed.profile_ids.tolist() == list(range(24))


def test_profiles_of_interleaved_parts_merge_in_dataset_order(tiny_cnn):
    from camscope.analyses.ifa.batch import BatchPass
    from camscope.engine.capture import resolve_layers

    data = _dataset(batches=4)
    whole = camscope.analyze(tiny_cnn, data, layer="features.2", profiles=True, progress=False)
    ((name, module),) = resolve_layers(tiny_cnn, "features.2")
    runner = BatchPass(camscope.Explainer(tiny_cnn, layer="features.2"), name, module, False, None)
    settings = dict(num_features=whole.num_features, num_classes=whole.num_classes, bins=whole.values.bins)
    parts = [Analysis(method="gradcam", layer=name, profiles=True, **settings) for _ in range(2)]
    start = 0
    for index, (inputs, labels) in enumerate(data):  # batch i to part i % 2, as ranks take an iterable's batches
        parts[index % 2].update(runner.run(inputs, labels, "predicted"), start=start)
        start += inputs.shape[0]
    merged = parts[0].finish().merge(parts[1].finish())
    assert merged.profile_ids.tolist() == list(range(start))
    torch.testing.assert_close(merged.profiles, whole.profiles)
    # chunks saved without ids (camscope 0.1 states) count on from the profiles gathered before them
    state = parts[0].state_dict()
    state["profile_chunks"] = [[whole.profiles[:2], whole.profile_labels[:2], whole.profile_predictions[:2]]]
    restored = Analysis.from_state_dict(state)
    gathered = parts[0].profile_ids.numel()
    assert restored.finish().profile_ids[-2:].tolist() == [gathered, gathered + 1]


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
