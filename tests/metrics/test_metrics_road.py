"""ROAD: the batched imputation against a scipy sparse direct solve and grad-cam 1.5.7; the metric against ROADCombined."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve
from torch import nn

from camscope.errors import CamscopeError
from camscope.metrics import imputation as imputation_module
from camscope.metrics import noisy_linear_impute, road


def _direct_solve(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The ROAD system written pixel by pixel, solved by scipy's sparse LU."""
    channels, h, w = image.shape
    weights = {
        (dy, dx): (1 / 6 if dy == 0 or dx == 0 else 1 / 12)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dy, dx) != (0, 0)
    }
    unknown = [(i, j) for i in range(h) for j in range(w) if not keep[i, j]]
    index = {p: n for n, p in enumerate(unknown)}
    matrix = lil_matrix((len(unknown), len(unknown)))
    rhs = np.zeros((len(unknown), channels))
    for n, (i, j) in enumerate(unknown):
        total = 0.0
        for (dy, dx), weight in weights.items():
            y, x = i + dy, j + dx
            if not (0 <= y < h and 0 <= x < w):
                continue
            total += weight
            if keep[y, x]:
                rhs[n] += weight * image[:, y, x]
            else:
                matrix[n, index[(y, x)]] = -weight
        matrix[n, n] = total
    solution = spsolve(matrix.tocsc(), rhs).reshape(len(unknown), channels)
    out = image.copy()
    for n, (i, j) in enumerate(unknown):
        out[:, i, j] = solution[n]
    return out


def _blob_keep(batch: int, size: int, fraction: float, seed: int) -> torch.Tensor:
    """Masks like ROAD's: the top ``fraction`` of a smooth map removed."""
    smooth = torch.nn.functional.interpolate(
        torch.rand(batch, 1, 4, 4, generator=torch.Generator().manual_seed(seed)), size=(size, size), mode="bilinear"
    )[:, 0]
    ranks = smooth.flatten(1).argsort(dim=1, descending=True).argsort(dim=1)
    return (ranks >= int(size * size * fraction)).reshape(batch, size, size)


@pytest.mark.parametrize("size", [6, 16, 23, 32])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_imputation_matches_a_sparse_direct_solve(size: int, fraction: float) -> None:
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(size))
    keep = _blob_keep(2, size, fraction, seed=size)
    scattered = torch.rand(1, size, size, generator=torch.Generator().manual_seed(1)) > fraction
    scattered[0, 0, 0] = True
    keep = torch.cat([keep, scattered])
    ours = noisy_linear_impute(images, keep, noise=0.0)
    for b in range(3):
        reference = _direct_solve(images[b].double().numpy(), keep[b].numpy())
        np.testing.assert_allclose(ours[b].numpy(), reference, atol=1e-4)


def test_imputation_work_does_not_depend_on_the_masks_shape() -> None:
    """Every iteration costs the same full-grid passes, and scattered masks take as many iterations as blobs."""
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    iterations = {}
    for kind in ("blob", "scattered"):
        for fraction in (0.1, 0.5, 0.9):
            if kind == "blob":
                keep = _blob_keep(2, 48, fraction, seed=1)
            else:
                keep = torch.rand(2, 48, 48, generator=torch.Generator().manual_seed(2)) >= fraction
            _, info = noisy_linear_impute(images, keep, noise=0.0, return_info=True)
            iterations[kind, fraction] = info["iterations"]
    assert max(iterations.values()) - min(iterations.values()) <= 1 and max(iterations.values()) <= 6, iterations


def _dense(stencil: torch.Tensor) -> torch.Tensor:
    """``[N, h*w, h*w]`` matrices of a 9-point stencil ``[9, N, 1, h, w]``, entry by entry."""
    n, h, w = stencil.shape[1], *stencil.shape[-2:]
    matrix = torch.zeros(n, h * w, h * w, dtype=torch.float64)
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    for k, (dy, dx) in enumerate(offsets):
        for i in range(h):
            for j in range(w):
                if 0 <= i + dy < h and 0 <= j + dx < w:
                    matrix[:, i * w + j, (i + dy) * w + j + dx] = stencil[k, :, 0, i, j].double()
    return matrix


@pytest.mark.parametrize(("h", "w"), [(12, 12), (13, 11), (7, 10)])
def test_coarse_operators_are_dense_galerkin_products(h: int, w: int) -> None:
    """Every coarse stencil equals ``P^T A P`` formed from dense matrices, ``P`` the bilinear interpolation."""
    unknown = (torch.rand(2, 1, h, w, generator=torch.Generator().manual_seed(h)) < 0.6).double()
    levels = imputation_module._Multigrid(unknown, coarsest=2).levels
    assert len(levels) >= 3
    expected = torch.zeros(2, h * w, h * w, dtype=torch.float64)  # the ROAD system, written pixel by pixel
    weights = torch.tensor(imputation_module.NEIGHBOUR_WEIGHTS, dtype=torch.float64)
    for i in range(h * w):
        y, x = divmod(i, w)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w:
                    expected[:, i, i] += weights[dy + 1, dx + 1]
                    expected[:, i, (y + dy) * w + x + dx] = -weights[dy + 1, dx + 1]
    mask = unknown.reshape(2, h * w, 1)
    expected = expected * mask * mask.mT
    torch.testing.assert_close(_dense(levels[0].stencil), expected, atol=1e-15, rtol=0)
    for fine, coarse in itertools.pairwise(levels):
        hf, wf, hc, wc = *fine.unknown.shape[-2:], *coarse.unknown.shape[-2:]
        eye = torch.eye(hc * wc, dtype=torch.float64).reshape(hc * wc, 1, hc, wc)
        prolong = imputation_module._prolong(eye, hf, wf).reshape(hc * wc, hf * wf).mT  # [fine, coarse]
        expected = prolong.mT @ _dense(fine.stencil) @ prolong
        torch.testing.assert_close(_dense(coarse.stencil), expected, atol=1e-14, rtol=0)


def test_imputation_matches_grad_cam_imputer() -> None:
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    images = torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    keep = _blob_keep(4, 24, 0.7, seed=3)
    ours = noisy_linear_impute(images, keep, noise=0.0, chunk=3)
    for b in range(4):
        reference = NoisyLinearImputer(noise=0.0)(images[b], keep[b].float())
        torch.testing.assert_close(ours[b], reference, atol=1e-4, rtol=0)


def test_imputation_noise_only_on_removed_pixels() -> None:
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    keep = _blob_keep(2, 32, 0.5, seed=1)
    clean = noisy_linear_impute(images, keep, noise=0.0)
    noisy = noisy_linear_impute(images, keep, noise=0.01, generator=torch.Generator().manual_seed(5))
    difference = (noisy - clean).permute(1, 0, 2, 3)[:, ~keep]
    assert difference.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.equal(noisy.permute(1, 0, 2, 3)[:, keep], images.permute(1, 0, 2, 3)[:, keep])
    again = noisy_linear_impute(images, keep, noise=0.01, generator=torch.Generator().manual_seed(5))
    assert torch.equal(noisy, again)


def test_imputation_info_and_float64() -> None:
    images = torch.randn(2, 3, 40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    keep = _blob_keep(2, 40, 0.8, seed=2)
    out, info = noisy_linear_impute(images, keep, noise=0.0, atol=1e-9, return_info=True)
    assert out.dtype == torch.float64
    assert 1 <= info["iterations"] <= 30
    assert info["relative_residual"].max().item() < 1e-6
    reference = _direct_solve(images[0].numpy(), keep[0].numpy())
    np.testing.assert_allclose(out[0].numpy(), reference, atol=1e-8)


def test_imputation_errors() -> None:
    images = torch.randn(1, 3, 8, 8)
    with pytest.raises(CamscopeError, match="at least one kept pixel"):
        noisy_linear_impute(images, torch.zeros(1, 8, 8, dtype=torch.bool))
    with pytest.raises(CamscopeError, match="keep must have shape"):
        noisy_linear_impute(images, torch.ones(8, 8, dtype=torch.bool))
    assert torch.equal(noisy_linear_impute(images, torch.ones(1, 8, 8, dtype=torch.bool)), images)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 warns inside grad-cam's np.percentile on tensors
def test_road_matches_grad_cam_road_combined(tiny_cnn: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytorch_grad_cam.metrics import road as peer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    monkeypatch.setattr(peer.NoisyLinearImputer.__init__, "__defaults__", (0.0, peer.neighbors_weights))
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(5))  # distinct values: no ties
    with torch.no_grad():
        classes = tiny_cnn(images).argmax(1).tolist()
    percentiles = [10, 30, 50, 70, 90]
    # grad-cam keeps the pixels below np.percentile(map, q): the count removed is N minus that.
    removed = [int((maps[0].numpy() >= np.percentile(maps[0].numpy(), q)).sum()) for q in percentiles]
    assert all(
        int((m.numpy() >= np.percentile(m.numpy(), q)).sum()) == r for m in maps for q, r in zip(percentiles, removed)
    )
    fractions = [r / 256 for r in removed]
    ours = road(tiny_cnn, images, maps, target=classes, percentages=fractions, noise=0.0, tie_break=0.0)
    metric = peer.ROADCombined(percentiles=percentiles)
    reference = metric(images, maps.numpy(), [ClassifierOutputSoftmaxTarget(c) for c in classes], tiny_cnn)
    np.testing.assert_allclose(ours["combined"].numpy(), reference, atol=1e-5)
    morf = peer.ROADMostRelevantFirstAverage(percentiles)(
        images, maps.numpy(), [ClassifierOutputSoftmaxTarget(c) for c in classes], tiny_cnn
    )
    np.testing.assert_allclose((ours["morf"] - ours["score"]).numpy(), morf, atol=1e-5)


def test_road_curves_and_imputations(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    result = road(tiny_cnn, images, maps, percentages=(0.25, 0.5, 0.75))
    assert result.curves["morf"].shape == (3, 3) and result.curves["lerf"].shape == (3, 3)
    torch.testing.assert_close(result["combined"], ((result.curves["lerf"] - result.curves["morf"]) / 2).mean(1))
    assert result.higher_is_better == {"combined": True, "morf": False, "lerf": True, "score": True}
    again = road(tiny_cnn, images, maps, percentages=(0.25, 0.5, 0.75))
    torch.testing.assert_close(result["combined"], again["combined"])  # seeded
    for imputation in ("mean", "zero"):
        other = road(tiny_cnn, images, maps, percentages=(0.5,), imputation=imputation)
        assert torch.isfinite(other["combined"]).all()
    zero = road(tiny_cnn, images, maps, percentages=(0.5,), imputation="zero", tie_break=0)
    custom = road(tiny_cnn, images, maps, percentages=(0.5,), imputation=lambda x, keep: x * keep[:, None], tie_break=0)
    torch.testing.assert_close(zero["combined"], custom["combined"])
    small = road(tiny_cnn, images, maps, percentages=(0.25, 0.5, 0.75), batch_size=2, noise=0.0)
    large = road(tiny_cnn, images, maps, percentages=(0.25, 0.5, 0.75), batch_size=64, noise=0.0)
    torch.testing.assert_close(small["combined"], large["combined"], atol=1e-5, rtol=0)
    with pytest.raises(CamscopeError, match="percentages"):
        road(tiny_cnn, images, maps, percentages=(1.0,))


def test_road_rewards_the_true_evidence() -> None:
    """A model that counts the bright pixels of one square: a map on that square beats its opposite."""

    class SquareModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(4.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            evidence = x[:, :, 4:12, 4:12].mean(dim=(1, 2, 3))
            return torch.stack([self.scale * evidence, torch.zeros_like(evidence)], dim=1)

    x = torch.zeros(1, 3, 16, 16)
    x[:, :, 4:12, 4:12] = 1.0
    good = torch.zeros(1, 16, 16)
    good[:, 4:12, 4:12] = 1.0
    kwargs = dict(target=0, percentages=(0.1, 0.2))
    assert (
        road(SquareModel(), x, good, **kwargs)["combined"].item()
        > road(SquareModel(), x, 1 - good, **kwargs)["combined"].item()
    )


def _brute_road(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, fractions: list[float]) -> np.ndarray:
    """ROAD written per image, order and fraction: rank, mask, scipy direct solve, one forward pass each."""
    batch, _, h, w = images.shape
    curves = np.zeros((2, batch, len(fractions)))
    with torch.no_grad():
        classes = model(images).argmax(1).tolist()
    for b in range(batch):
        flat = maps[b].flatten().double()
        scaled = (flat - flat.min()) / (flat.max() - flat.min())
        order = sorted(range(h * w), key=lambda k: (-float(scaled[k]), k))
        for i, fraction in enumerate(fractions):
            count = int(h * w * fraction + 1e-9)
            for o, removed in enumerate((order[:count], order[h * w - count :])):
                keep = np.ones((h, w), dtype=bool)
                keep.flat[removed] = False
                imputed = _direct_solve(images[b].double().numpy(), keep)
                with torch.no_grad():
                    logits = model(torch.from_numpy(imputed).float()[None])
                curves[o, b, i] = float(torch.softmax(logits.double(), 1)[0, classes[b]])
    return curves


@pytest.mark.parametrize("batch_size", [64, 2])
def test_road_matches_a_per_image_loop_with_direct_solves(tiny_cnn: nn.Module, batch_size: int) -> None:
    """Warm starts across the nested removals, batching over steps and split rows leave the curves exact."""
    images = torch.randn(3, 3, 20, 20, generator=torch.Generator().manual_seed(8))
    smooth = torch.nn.functional.interpolate(
        torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(9)), size=(20, 20), mode="bilinear"
    )[:, 0]
    fractions = [0.1, 0.3, 0.5, 0.7, 0.9]
    ours = road(tiny_cnn, images, smooth, percentages=fractions, noise=0.0, tie_break=0.0, batch_size=batch_size)
    reference = _brute_road(tiny_cnn, images, smooth, fractions)
    np.testing.assert_allclose(ours.curves["morf"].numpy(), reference[0], atol=2e-5)
    np.testing.assert_allclose(ours.curves["lerf"].numpy(), reference[1], atol=2e-5)


def test_road_noise_is_one_seeded_field_per_step(tiny_cnn: nn.Module) -> None:
    """Each step's images are the noiseless imputation plus ``noise * step_noise(seed, order, count)`` where removed."""
    from camscope.metrics.removal import step_noise

    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    maps = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(3))
    seen: list[torch.Tensor] = []
    handle = tiny_cnn.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        road(tiny_cnn, images, maps, percentages=(0.2, 0.6), tie_break=0.0, seed=4, batch_size=3)
    finally:
        handle.remove()
    perturbed = torch.cat(seen[1:])  # after the clean pass: 2 orders x 2 fractions x 2 images, step-major
    flat = maps.flatten(1)
    ranks = flat.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
    steps = [("morf", 51), ("morf", 153), ("lerf", 51), ("lerf", 153)]
    removed = torch.cat([ranks < c if o == "morf" else ranks >= 256 - c for o, c in steps]).reshape(-1, 16, 16)
    noiseless = noisy_linear_impute(images.repeat(4, 1, 1, 1), ~removed, noise=0.0)
    fields = torch.stack([step_noise((3, 16, 16), 4, o, c, images.device) for o, c in steps]).repeat_interleave(2, 0)
    expected = noiseless + 0.01 * fields * removed[:, None]
    torch.testing.assert_close(perturbed, expected, atol=3e-4, rtol=0)
    assert (perturbed - images.repeat(4, 1, 1, 1))[~removed[:, None].expand(-1, 3, -1, -1)].abs().max() == 0


def test_road_does_not_depend_on_the_batching(tiny_cnn: nn.Module) -> None:
    """With noise, the curves are the same for any perturbed batch size, "auto" and a sub-batch of the images."""
    images = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(6))
    maps = torch.rand(4, 12, 12, generator=torch.Generator().manual_seed(7))
    runs = [road(tiny_cnn, images, maps, percentages=(0.3, 0.7), batch_size=size) for size in (3, 64, "auto")]
    alone = road(tiny_cnn, images[3:], maps[3:], percentages=(0.3, 0.7), batch_size=2)
    for run in runs[1:]:
        for key in ("morf", "lerf"):
            torch.testing.assert_close(run.curves[key], runs[0].curves[key], atol=1e-5, rtol=0)
    for key in ("morf", "lerf"):
        torch.testing.assert_close(alone.curves[key], runs[0].curves[key][3:], atol=1e-5, rtol=0)


def test_road_in_two_threads_at_once_gives_each_call_its_own_results(tiny_cnn: nn.Module) -> None:
    """The solver's reused work tensors belong to one call: concurrent calls do not share them."""
    from concurrent.futures import ThreadPoolExecutor

    inputs = torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(5))
    maps = [torch.rand(4, 24, 24, generator=torch.Generator().manual_seed(seed)) for seed in (1, 2)]
    alone = [road(tiny_cnn, inputs, m, percentages=(0.2, 0.5, 0.8)).curves for m in maps]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda m: road(tiny_cnn, inputs, m, percentages=(0.2, 0.5, 0.8)).curves, maps * 2))
    for curves, expected in zip(together, alone * 2):
        for key in ("morf", "lerf"):
            torch.testing.assert_close(curves[key], expected[key])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_road_on_the_gpu_matches_the_cpu(tiny_cnn: nn.Module) -> None:
    images = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    maps = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(2))
    cpu = road(tiny_cnn, images, maps, noise=0.0)
    gpu = road(tiny_cnn.cuda(), images.cuda(), maps.cuda(), noise=0.0)
    assert gpu["combined"].device.type == "cuda"
    torch.testing.assert_close(gpu.curves["morf"].cpu(), cpu.curves["morf"], atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu.curves["lerf"].cpu(), cpu.curves["lerf"], atol=1e-4, rtol=0)
