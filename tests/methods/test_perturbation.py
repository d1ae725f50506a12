"""Score-CAM, SS-CAM, IS-CAM and Ablation-CAM against pytorch-grad-cam 1.5.7, torchcam 0.5.0 and brute-force loops."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import AblationCAM as PeerAblationCAM
from pytorch_grad_cam import ScoreCAM as PeerScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile
from torchcam import methods as torchcam_methods

import camscope
from camscope.errors import CamscopeError
from camscope.methods.perturbation import ScoreCAM, _first_equal
from camscope.progress import ProgressBar

CLASSES = [0, 3, 4]


def _rel_close(actual: torch.Tensor, expected, rtol: float = 1e-4) -> None:
    expected = torch.as_tensor(np.asarray(expected), dtype=actual.dtype)
    assert actual.shape == expected.shape
    scale = expected.abs().max().clamp(min=1e-12)
    error = (actual - expected).abs().max() / scale
    assert error < rtol, f"relative error {float(error):.3g}"


class _BatchSizes:
    """Records the batch size of every forward pass of a module."""

    def __init__(self, module: nn.Module) -> None:
        self.sizes: list[int] = []
        self.handle = module.register_forward_pre_hook(lambda _m, args: self.sizes.append(int(args[0].shape[0])))

    def __enter__(self) -> _BatchSizes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def _scaled(maps: torch.Tensor, size) -> torch.Tensor:
    """Reference mask: upsample [h, w] bilinearly (align_corners=False), min-max to [0, 1] (0 if constant)."""
    up = F.interpolate(maps[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
    span = up.max() - up.min()
    return (up - up.min()) / span if span > 0 else torch.zeros_like(up)


# ----------------------------------------------------------------------------- Score-CAM vs peers


def test_scorecam_matches_pytorch_grad_cam(tiny_cnn, images):
    layer = tiny_cnn.features[3]
    ours = camscope.explain(tiny_cnn, images, method="scorecam", layer="features.3", target=CLASSES, batch_size=7)
    with PeerScoreCAM(model=tiny_cnn, target_layers=[layer]) as cam:
        targets = [ClassifierOutputTarget(c) for c in CLASSES]
        final = cam(input_tensor=images, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        weights = cam.get_cam_weights(images, layer, targets, activations, None)
        raw = cam.get_cam_image(images, layer, targets, activations, None, False)
    _rel_close(ours.weights, weights)
    _rel_close(ours.raw, raw)
    # The layer keeps the input size: the normalised maps agree too.
    _rel_close(ours.maps, final, rtol=1e-3)


def test_scorecam_matches_torchcam(tiny_cnn, images):
    with torchcam_methods.ScoreCAM(
        tiny_cnn, target_layer="features.3", batch_size=5, input_shape=(3, 16, 16)
    ) as extractor:
        tiny_cnn(images)
        (weights,) = extractor._get_weights(CLASSES)
        (raw,) = extractor(class_idx=CLASSES, normalized=False)
    ours = camscope.explain(tiny_cnn, images, method="scorecam", layer="features.3", target=CLASSES)
    _rel_close(ours.weights, weights)
    _rel_close(ours.raw.clamp(min=0), raw)


def test_sscam_matches_torchcam_with_the_same_noise(tiny_cnn, images):
    # One image and a chunk holding all 16 channels: camscope draws each sample's noise
    # as one [K, 1, H, W] block, the same stream as torchcam's [1, K, H, W] draw.
    image = images[:1]
    with torchcam_methods.SSCAM(
        tiny_cnn, target_layer="features.3", batch_size=16, num_samples=3, std=0.5, input_shape=(3, 16, 16)
    ) as extractor:
        tiny_cnn(image)
        torch.manual_seed(11)
        (weights,) = extractor._get_weights([2])
    torch.manual_seed(11)
    ours = camscope.explain(
        tiny_cnn, image, method="sscam", layer="features.3", target=2, samples=3, std=0.5, batch_size=16
    )
    _rel_close(ours.weights, weights)


def test_iscam_matches_torchcam(tiny_cnn, images):
    with torchcam_methods.ISCAM(
        tiny_cnn, target_layer="features.3", batch_size=9, num_samples=4, input_shape=(3, 16, 16)
    ) as extractor:
        tiny_cnn(images)
        (weights,) = extractor._get_weights(CLASSES)
    ours = camscope.explain(
        tiny_cnn, images, method="iscam", layer="features.3", target=CLASSES, samples=4, scales="torchcam"
    )
    _rel_close(ours.weights, weights)


def test_iscam_scales():
    from camscope.methods.perturbation import _integration_scales

    assert _integration_scales("paper", 4) == [0.0, 0.25, 0.75, 1.5]
    assert _integration_scales("torchcam", 4) == [0.25, 0.75, 1.5, 2.5]
    assert _integration_scales("linear", 4) == [0.25, 0.5, 0.75, 1.0]
    assert _integration_scales([0.5, 1], 9) == [0.5, 1.0]
    with pytest.raises(CamscopeError, match="scales"):
        _integration_scales("bogus", 3)


# ----------------------------------------------------------------------------- Score-CAM vs brute force


def _brute_force_scores(model, x, baseline, activations, classes, scale=1.0, probability=False):
    """f(x_b + s H_k (x - x_b))_c for every image and channel, one pass at a time."""
    batch, channels = activations.shape[:2]
    scores = torch.zeros(batch, channels)
    with torch.no_grad():
        for b in range(batch):
            for k in range(channels):
                mask = _scaled(activations[b, k], x.shape[2:])
                out = model((baseline[b] + scale * mask * (x[b] - baseline[b]))[None])
                if probability:
                    out = out.softmax(dim=1)
                scores[b, k] = out[0, classes[b]]
    return scores


def test_finer_scorecam_difference_is_eq9_brute_force(strided_cnn):
    # Finer-CAM's Eq. 9: w_k = f(x o H_k)^c - gamma f(x o H_k)^d - f(x_b)^c, one masked pass per channel.
    x = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(7))
    explained, versus, gamma = [1, 3], [2, 0], 0.6
    ours = camscope.explain(
        strided_cnn,
        x,
        method="scorecam",
        layer="stage",
        target=camscope.ClassDifference(explained, versus, gamma=gamma),
        normalization="difference",
        deduplicate=False,
    )
    activations = strided_cnn.stage(strided_cnn.stem(x)).detach()
    base = torch.zeros_like(x)
    with torch.no_grad():
        explained_at_baseline = strided_cnn(base)[torch.arange(2), explained]
    expected = (
        _brute_force_scores(strided_cnn, x, base, activations, explained)
        - gamma * _brute_force_scores(strided_cnn, x, base, activations, versus)
        - explained_at_baseline[:, None]
    )
    constant = activations.flatten(2).std(dim=-1) == 0  # masked input = the baseline: f(x_b)^c - gamma f(x_b)^d
    assert not constant.any(), "the check needs channels whose masked inputs differ from the baseline"
    _rel_close(ours.weights, expected)
    finer = camscope.explain(
        strided_cnn,
        x,
        method="finer-scorecam",
        layer="stage",
        target=explained,
        references=[[2], [0]],
        gamma=gamma,
        normalization="difference",
        deduplicate=False,
    )
    _rel_close(finer.raw, ours.raw)


def test_scorecam_difference_with_a_baseline_brute_force(strided_cnn):
    x = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(4))
    baseline = torch.full((3, 20, 20), 0.25)
    classes = [1, 3]
    ours = camscope.explain(
        strided_cnn,
        x,
        method="scorecam",
        layer="stage",
        target=classes,
        normalization="difference",
        baseline=baseline,
        batch_size=6,
    )
    activations = strided_cnn.stage(strided_cnn.stem(x)).detach()
    base = baseline.expand_as(x)
    with torch.no_grad():
        reference = strided_cnn(base)[torch.arange(2), classes]
    expected = _brute_force_scores(strided_cnn, x, base, activations, classes) - reference[:, None]
    _rel_close(ours.weights, expected)
    _rel_close(ours.raw, torch.einsum("bk,bkhw->bhw", expected, activations))


def test_scorecam_softmax_is_the_softmax_of_the_brute_force_increase(strided_cnn):
    x = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(5))
    classes = [0, 2]
    ours = camscope.explain(strided_cnn, x, method="scorecam", layer="stage", target=classes, batch_size=4)
    activations = strided_cnn.stage(strided_cnn.stem(x)).detach()
    expected = _brute_force_scores(strided_cnn, x, torch.zeros_like(x), activations, classes).softmax(dim=1)
    _rel_close(ours.weights, expected)


def test_probability_normalization_is_the_reference_code(strided_cnn):
    # haofanwang/Score-CAM cam/scorecam.py: class probability of each masked input, 0 for constant channels.
    x = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(6))
    classes = [3, 1]
    with torch.no_grad():
        strided_cnn.stage[0].bias[:3] = -100.0  # three dead channels
    ours = camscope.explain(
        strided_cnn, x, method="scorecam", layer="stage", target=classes, normalization="probability"
    )
    activations = strided_cnn.stage(strided_cnn.stem(x)).detach()
    expected = _brute_force_scores(strided_cnn, x, torch.zeros_like(x), activations, classes, probability=True)
    constant = activations.flatten(2).amax(-1) == activations.flatten(2).amin(-1)
    assert constant[:, :3].all()
    expected[constant] = 0
    _rel_close(ours.weights, expected)


def test_iscam_paper_scales_brute_force(strided_cnn):
    x = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(7))
    ours = camscope.explain(
        strided_cnn, x, method="iscam", layer="stage", target=2, samples=3, normalization="difference"
    )
    activations = strided_cnn.stage(strided_cnn.stem(x)).detach()
    zero = torch.zeros_like(x)
    with torch.no_grad():
        reference = strided_cnn(zero)[:, 2]
    scales = [0.0, 1 / 3, 1.0]  # c_i = i (i - 1) / (2N), N = 3
    expected = sum(_brute_force_scores(strided_cnn, x, zero, activations, [2], scale=s) for s in scales) / 3
    _rel_close(ours.weights, expected - reference[:, None])


def test_sscam_noise_on_the_input_brute_force(strided_cnn):
    x = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(8))
    ours = camscope.explain(
        strided_cnn,
        x,
        method="sscam",
        layer="stage",
        target=1,
        samples=2,
        std=0.3,
        noise_on="input",
        normalization="difference",
        batch_size=12,
        generator=torch.Generator().manual_seed(3),
    )
    activations = strided_cnn.stage(strided_cnn.stem(x)).detach()
    generator = torch.Generator().manual_seed(3)
    total = torch.zeros(1, 12)
    with torch.no_grad():
        for _ in range(2):  # one chunk of the 12 channels per sample
            noise = torch.randn(12, 3, 20, 20, generator=generator)
            for k in range(12):
                masked = x[0] * _scaled(activations[0, k], (20, 20)) + 0.3 * noise[k]
                total[0, k] += strided_cnn(masked[None])[0, 1]
        reference = strided_cnn(torch.zeros_like(x))[0, 1]
    _rel_close(ours.weights, total / 2 - reference)


# ----------------------------------------------------------------------------- shortcuts, chunks, memory


def _duplicating_cnn() -> nn.Module:
    """TinyCNN whose last conv has an exact copy (1), a 2x copy (2) of channel 0 and dead channels (3, 4)."""
    from conftest import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN().eval()
    conv = model.features[2]
    with torch.no_grad():
        conv.weight[1] = conv.weight[0]
        conv.bias[1] = conv.bias[0]
        conv.weight[2] = 2 * conv.weight[0]
        conv.bias[2] = 2 * conv.bias[0]
        conv.weight[3:5] = 0
        conv.bias[3:5] = torch.tensor([-1.0, 0.0])
    return model


def test_duplicate_masks_run_once_brute_force(images):
    model = _duplicating_cnn()
    activations = model.features(images).detach()
    with _BatchSizes(model) as recorder:
        ours = camscope.explain(model, images, method="scorecam", layer="features.3", target=CLASSES, batch_size=8)
    # Brute force: every channel's masked input, duplicates and dead channels included.
    expected = _brute_force_scores(model, images, torch.zeros_like(images), activations, CLASSES).softmax(dim=1)
    _rel_close(ours.weights, expected, rtol=1e-5)
    # Passes: the distinct non-constant scaled masks of each image, plus one baseline pass.
    flat = activations.flatten(2)
    span = flat.amax(-1, keepdim=True) - flat.amin(-1, keepdim=True)
    scaled = (flat - flat.amin(-1, keepdim=True)) / span.clamp(min=1e-30)
    distinct = sum(torch.unique(scaled[b][span[b, :, 0] > 0], dim=0).shape[0] for b in range(len(images)))
    assert distinct <= 3 * (16 - 4)
    masked_passes = sum(recorder.sizes) - 2 * len(images)  # minus the clean and the baseline passes
    assert masked_passes == distinct
    # Without the shortcut every non-constant channel runs, with the same weights.
    with _BatchSizes(model) as recorder:
        plain = camscope.explain(
            model, images, method="scorecam", layer="features.3", target=CLASSES, deduplicate=False
        )
    assert sum(recorder.sizes) - 2 * len(images) == int((span[..., 0] > 0).sum())
    _rel_close(plain.weights, ours.weights, rtol=1e-6)


def test_first_equal_finds_exact_duplicates_only():
    rows = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0 + 1e-7], [1.0, 0.0]]])
    rep = _first_equal(rows, None)
    assert rep.tolist() == [[0, 1, 0, 3, 1]]
    # A left-out row is never a representative of a selected one.
    selected = torch.tensor([[False, True, True, True, True]])
    rep = _first_equal(rows, selected)
    assert rep[0, 2] == 2 and rep[0, 4] == 1


def test_chunks_bound_the_forward_batch(tiny_cnn, images):
    with _BatchSizes(tiny_cnn) as recorder:
        small = camscope.explain(tiny_cnn, images, method="scorecam", layer="features.3", target=CLASSES, batch_size=5)
    assert max(recorder.sizes[1:]) <= 5
    large = camscope.explain(tiny_cnn, images, method="scorecam", layer="features.3", target=CLASSES, batch_size=1000)
    _rel_close(small.weights, large.weights, rtol=1e-6)
    with _BatchSizes(tiny_cnn) as recorder:
        camscope.explain(tiny_cnn, images, method="ablationcam", layer="features.3", target=CLASSES, batch_size=4)
    assert max(recorder.sizes) <= 4


def _peak_cpu_bytes(fn) -> int:
    """Peak of the live CPU bytes allocated by torch during ``fn`` (profiler memory events, in time order)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    items = []
    for event in prof.events():
        if event.name == "[memory]":
            items.append((event.time_range.start, event.cpu_memory_usage))
        elif event.self_cpu_memory_usage:
            items.append((event.time_range.end, event.self_cpu_memory_usage))
    live = peak = 0
    for _, change in sorted(items, key=lambda item: item[0]):
        live += change
        peak = max(peak, live)
    return peak


def test_peak_memory_is_bounded_by_the_chunk():
    torch.manual_seed(0)
    # Many channels, a cheap network: the masked inputs dominate memory.
    model = nn.Sequential(
        nn.Conv2d(3, 128, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 5)
    ).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    all_masked_inputs = 2 * 128 * x[0].numel() * 4  # what holding every masked input at once costs
    small = _peak_cpu_bytes(lambda: camscope.explain(model, x, method="scorecam", layer="1", batch_size=4))
    large = _peak_cpu_bytes(lambda: camscope.explain(model, x, method="scorecam", layer="1", batch_size=256))
    assert small < 0.1 * all_masked_inputs
    assert large > all_masked_inputs  # the measure does see a whole-batch chunk


def test_approximate_mode_keeps_the_top_variance_channels(tiny_cnn, images):
    exact = camscope.explain(
        tiny_cnn, images, method="scorecam", layer="features.3", target=CLASSES, normalization="difference"
    )
    with _BatchSizes(tiny_cnn) as recorder:
        approx = camscope.explain(
            tiny_cnn,
            images,
            method="scorecam",
            layer="features.3",
            target=CLASSES,
            normalization="difference",
            channels=5,
        )
    variance = exact.activations.flatten(2).var(-1, unbiased=False)
    kept = torch.zeros_like(variance, dtype=torch.bool).scatter_(1, variance.topk(5, dim=1).indices, True)
    assert torch.equal(approx.weights != 0, kept & (exact.weights != 0))
    _rel_close(approx.weights[kept], exact.weights[kept], rtol=1e-6)
    assert sum(recorder.sizes[1:]) <= 3 * 5 + 3
    softmax = camscope.explain(tiny_cnn, images, method="scorecam", layer="features.3", target=CLASSES, channels=5)
    torch.testing.assert_close(softmax.weights.sum(dim=1), torch.ones(3))
    assert (softmax.weights[~kept] == 0).all()


def test_class_difference_costs_no_extra_passes(tiny_cnn, images):
    options = dict(method="scorecam", layer="features.3", normalization="difference")
    with _BatchSizes(tiny_cnn) as recorder:
        single = camscope.explain(tiny_cnn, images, target=1, **options)
    passes = sum(recorder.sizes)
    with _BatchSizes(tiny_cnn) as recorder:
        compared = camscope.explain(tiny_cnn, images, target=camscope.ClassDifference(1, 4, gamma=0.6), **options)
    assert sum(recorder.sizes) == passes
    other = camscope.explain(tiny_cnn, images, target=4, **options)
    # Finer-CAM's Eq. 9 subtracts the explained class's baseline score only:
    # w_k = y_1(x o H_k) - 0.6 y_4(x o H_k) - y_1(x_b) = single_k - 0.6 (other_k + y_4(x_b)).
    with torch.no_grad():
        y4_baseline = tiny_cnn(torch.zeros_like(images))[:, 4]
    _rel_close(compared.weights, single.weights - 0.6 * (other.weights + y4_baseline[:, None]))


def test_component_scores_are_averaged(tiny_cnn, images):
    pair = camscope.ScoreTarget(lambda out: out[:, [1, 3]], name="pair")
    mean = camscope.ScoreTarget(lambda out: out[:, [1, 3]].mean(dim=1), name="mean")
    for method in ("scorecam", "ablationcam"):
        a = camscope.explain(tiny_cnn, images, method=method, layer="features.3", target=pair)
        b = camscope.explain(tiny_cnn, images, method=method, layer="features.3", target=mean)
        _rel_close(a.weights, b.weights, rtol=1e-6)


class _SyncCounter(TorchFunctionMode):
    SYNCS: ClassVar[set[str]] = {
        "item",
        "tolist",
        "__bool__",
        "cpu",
        "numpy",
        "nonzero",
        "unique",
        "__int__",
        "__float__",
        "__index__",
    }

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.SYNCS:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method, options", [("scorecam", {}), ("iscam", {"samples": 3}), ("ablationcam", {})])
def test_one_host_synchronisation_per_call(tiny_cnn, images, method, options):
    counts = []
    base = camscope.engine.method.get_method(method, batch_size=4, **options)

    class Counting(type(base)):
        def __call__(self, ctx):
            with _SyncCounter() as counter:
                result = super().__call__(ctx)
            counts.append(counter.count)
            return result

    camscope.explain(tiny_cnn, images, method=Counting(batch_size=4, **options), layer="features.3", target=CLASSES)
    assert counts == [1]


def test_progress_bar_appears_only_after_the_delay(capsys, monkeypatch):
    clock = [0.0]  # the bar's clock, advanced by hand: no wall-clock dependence
    monkeypatch.setattr("camscope.progress.time", SimpleNamespace(perf_counter=lambda: clock[0]))
    quiet = ProgressBar(3, "passes", enabled=True, delay=60)
    clock[0] = 59.0
    for _ in range(3):
        quiet.advance()
    quiet.close()
    assert quiet._bar is None
    late = ProgressBar(3, "passes", enabled=True, delay=60)
    clock[0] = 120.0
    late.advance()
    assert late._bar is not None
    late.close()
    shown = ProgressBar(3, "passes", enabled=True, delay=0)
    shown.advance()
    assert shown._bar is not None
    shown.advance()
    shown.close()
    assert capsys.readouterr().out == ""  # never on stdout


def test_option_errors(tiny_cnn, images):
    for bad in (dict(batch_size=0), dict(normalization="sum"), dict(channels=-1), dict(baseline=torch.zeros(2, 5, 5))):
        with pytest.raises(CamscopeError):
            camscope.explain(tiny_cnn, images, method="scorecam", layer="features.3", **bad)
    with pytest.raises(CamscopeError, match="no option"):
        ScoreCAM(samples=3)
    with pytest.raises(CamscopeError, match="std"):
        camscope.explain(tiny_cnn, images, method="sscam", layer="features.3", std=-1)
    with pytest.raises(CamscopeError, match="recompute"):
        camscope.explain(tiny_cnn, images, method="ablationcam", layer="features.3", recompute="sometimes")
    assert {"scorecam", "sscam", "iscam", "ablationcam"} <= set(camscope.available_methods())


# ----------------------------------------------------------------------------- Ablation-CAM


def test_ablationcam_matches_pytorch_grad_cam(tiny_cnn, images):
    with torch.no_grad():
        tiny_cnn.fc.bias += 3.0  # positive scores: grad-cam divides by the signed score
    layer = tiny_cnn.features[3]
    ours = camscope.explain(tiny_cnn, images, method="ablationcam", layer="features.3", target=CLASSES, batch_size=6)
    assert (ours.scores > 0).all()
    with PeerAblationCAM(model=tiny_cnn, target_layers=[layer], batch_size=6) as cam:
        targets = [ClassifierOutputTarget(c) for c in CLASSES]
        cam(input_tensor=images, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        assert activations.min() == 0  # grad-cam ablates with 0 only then
        weights = cam.get_cam_weights(images, layer, targets, torch.from_numpy(activations), None)
    _rel_close(ours.weights, weights)
    _rel_close(ours.raw, torch.einsum("bk,bkhw->bhw", torch.as_tensor(weights), torch.from_numpy(activations)))


def _tail_scores(model, activations, classes):
    """Brute force: zero each channel of features.3's output and run pool + fc by hand."""
    batch, channels = activations.shape[:2]
    scores = torch.zeros(batch, channels)
    with torch.no_grad():
        for k in range(channels):
            ablated = activations.clone()
            ablated[:, k] = 0
            out = model.fc(model.pool(ablated).flatten(1))
            scores[:, k] = out[torch.arange(batch), classes]
    return scores


@pytest.mark.parametrize("recompute", ["auto", "never", "always"])
def test_ablationcam_brute_force(tiny_cnn, images, recompute):
    ours = camscope.explain(
        tiny_cnn,
        images,
        method="ablationcam",
        layer="features.3",
        target=CLASSES,
        recompute=recompute,
        normalization="drop",
        batch_size=5,
    )
    activations = tiny_cnn.features(images).detach()
    clean = tiny_cnn(images).detach()[torch.arange(3), CLASSES]
    _rel_close(ours.weights, clean[:, None] - _tail_scores(tiny_cnn, activations, CLASSES))
    relative = camscope.explain(tiny_cnn, images, method="ablationcam", layer="features.3", target=CLASSES)
    _rel_close(relative.weights, ours.weights / clean.abs()[:, None])


def test_ablation_substitutes_after_the_layer(tiny_cnn, images):
    """With substitution, the layers before the chosen layer run on the B images only, never on the copies."""
    with _BatchSizes(tiny_cnn.features[0]) as before, _BatchSizes(tiny_cnn.fc) as after:
        camscope.explain(tiny_cnn, images, method="ablationcam", layer="features.3", target=CLASSES, batch_size=8)
    assert set(before.sizes[3:]) == {3}  # after the clean pass and the check's full pass
    live = int((tiny_cnn.features(images) != 0).flatten(2).any(-1).sum())
    assert max(after.sizes) == 8 and sum(after.sizes) == 3 + 12 + live


def test_dead_channels_need_no_ablation_pass(images):
    model = _duplicating_cnn()
    with _BatchSizes(model.fc) as after:
        explanation = camscope.explain(model, images, method="ablationcam", layer="features.3", target=CLASSES)
    assert (explanation.weights[:, 3:5] == 0).all()
    dead = (explanation.activations.flatten(2) == 0).all(-1)
    checks = 3 * 2 * 2  # the substitution check: 2 channels, full and substituted
    assert sum(after.sizes) == 3 + checks + int((~dead).sum())


class _Residual(nn.Module):
    """A block whose residual comes from before the explained layer (``body.1``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1))
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.fc((h + self.body(h)).mean(dim=(2, 3)))


def test_ablation_falls_back_to_full_passes_inside_a_residual_block(images):
    torch.manual_seed(0)
    model = _Residual().eval()
    with _BatchSizes(model.stem) as stem:
        ours = camscope.explain(
            model, images, method="ablationcam", layer="body.1", target=[0, 3, 2], normalization="drop"
        )
    assert max(stem.sizes) > len(images)  # full passes: the copies go through the stem
    h = model.stem(images)
    activations = model.body[:2](h)
    expected = torch.zeros(3, 6)
    with torch.no_grad():
        clean = model(images)[torch.arange(3), [0, 3, 2]]
        for k in range(6):
            ablated = activations.clone()
            ablated[:, k] = 0
            out = model.fc((h + model.body[2](ablated)).mean(dim=(2, 3)))
            expected[:, k] = clean - out[torch.arange(3), [0, 3, 2]]
    _rel_close(ours.weights, expected)
    # One image: the residual broadcasts over the copies, and substitution is exact.
    single = camscope.explain(
        model, images[:1], method="ablationcam", layer="body.1", target=0, normalization="drop", recompute="never"
    )
    full = camscope.explain(
        model, images[:1], method="ablationcam", layer="body.1", target=0, normalization="drop", recompute="always"
    )
    _rel_close(single.weights, full.weights)


class _BatchCaptured(nn.Module):
    """Reads the batch size from the input: substituting copies after the layer silently mixes samples."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        features = torch.relu(self.conv(x))
        pooled = features.reshape(batch, -1, 4, *features.shape[2:]).mean(dim=(1, 3, 4))
        return self.fc(pooled)


def test_ablation_check_catches_a_model_that_mixes_copies(images):
    torch.manual_seed(0)
    model = _BatchCaptured().eval()
    auto = camscope.explain(model, images, method="ablationcam", layer="conv", target=[0, 1, 2], normalization="drop")
    full = camscope.explain(
        model, images, method="ablationcam", layer="conv", target=[0, 1, 2], normalization="drop", recompute="always"
    )
    _rel_close(auto.weights, full.weights)


def test_ablation_on_tokens(tiny_vit, images):
    # Token layout [B, N, K]: the channel is the last axis.
    explanation = camscope.explain(
        tiny_vit, images[:1], method="ablationcam", layer="blocks.1.norm1", target=2, normalization="drop"
    )
    tokens = {}
    handle = tiny_vit.blocks[1].norm1.register_forward_hook(lambda m, i, o: tokens.setdefault("out", o.detach()))
    clean = tiny_vit(images[:1])[0, 2].detach()
    handle.remove()
    expected = torch.zeros(16)
    with torch.no_grad():
        for k in range(16):

            def ablate(_m, _i, out, k=k):
                out = out.clone()
                out[..., k] = 0
                return out

            handle = tiny_vit.blocks[1].norm1.register_forward_hook(ablate)
            expected[k] = clean - tiny_vit(images[:1])[0, 2]
            handle.remove()
    _rel_close(explanation.weights[0], expected)
