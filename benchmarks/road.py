"""ROAD speed: camscope's ``road`` against two forward floors and grad-cam 1.5.7's ROADCombined.

Workload: 16 images of 224 px (the bundled sample photos, mirrored and shifted to make
16), the default EfficientNet-Lite0 (bundled weights, offline), ROAD at 9 percentages
(10%..90%) in both orders: 288 imputations and forward passes, for two kinds of maps:
Grad-CAM's (smooth) and uniformly random ones (the reproduction report's random baseline;
every removal is scattered over the whole image). All contenders run on the same device in
the same process, interleaved (round-robin) over ``--repeats``.

Rows, per kind of map:

* **floor, best batch**: the same number of forward images as the metric runs (the clean
  pass and the perturbed images), at the model's best batch size, on ready inputs under
  ``torch.inference_mode``. The best size is measured first: the forward time per image at
  1, 2, 4, ..., 64 images per batch (printed); on a 2-core CPU EfficientNet-Lite0 is fastest
  at about 8 and much slower at 64.
* **floor, the metric's batches**: every batch the model saw during the metric's run
  (recorded by a forward pre-hook) run again alone, at the metric's own batch sizes.
* **camscope road**: the metric, after a first call that calibrated its perturbed batch size
  (``batch_size="auto"``, cached per model and input shape); the first call is a row of its
  own. Its ratio to the best floor is the cost of everything but the model (ranking, masks,
  imputation, scoring) *and* of any batch size worse than the best.
* **grad-cam 1.5.7 ROADCombined** (unless ``--no-peers``): one forward pass per image and
  percentage, one scipy ``spsolve`` per imputation, the clean batch re-run for each of its 18 calls.
* **imputation** (Grad-CAM maps, unless ``--quick``): the same 288 (image, mask) pairs
  (grad-cam's own ``np.percentile`` masks) filled by ``camscope.metrics.noisy_linear_impute``
  against grad-cam's ``NoisyLinearImputer``; the largest difference of the noiseless solutions
  is printed too.

Times are wall-clock seconds and process CPU seconds (all threads), medians of ``--repeats``;
on a shared machine CPU seconds are the steadier measure. The load average is printed before
and after. ``--device cuda`` runs everything on the GPU (times synchronised).

Run: ``nice python benchmarks/road.py [--images 16] [--repeats 3] [--threads 2] [--device cpu]
[--maps gradcam,random] [--quick] [--no-peers]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from measure import sync
from torch import nn

import camscope
from camscope.metrics import noisy_linear_impute, road
from camscope.metrics.batching import calibrated_batch_size
from camscope.models import load_image, load_model, sample_images

PERCENTAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def workload(count: int, size: int) -> torch.Tensor:
    """``count`` images: the sample photos, their mirror images, and shifted crops."""
    photos = list(sample_images().values())
    tensors = []
    variant = 0
    while len(tensors) < count:
        for photo in photos:
            if len(tensors) == count:
                break
            image = photo[:, ::-1] if variant % 2 else photo
            shift = 16 * (variant // 2)
            tensors.append(load_image(np.ascontiguousarray(image[shift:, shift:]), size=size)[0][0])
        variant += 1
    return torch.stack(tensors)


def grad_cam_masks(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The keep-masks grad-cam builds (``map < np.percentile(map, q)``, MoRF and LeRF), with their image index."""
    keeps, owners = [], []
    for index, saliency in enumerate(maps.numpy()):
        for q in (round(100 * p) for p in PERCENTAGES):
            for values in (saliency, 1 - saliency):
                keeps.append(torch.from_numpy(values < np.percentile(values, q)))
                owners.append(index)
    return torch.stack(keeps), torch.tensor(owners)


def wall_and_cpu(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call, synchronised on a GPU."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def timed_groups(
    groups: dict[str, dict[str, Callable[[], object]]], repeats: int, device: torch.device
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """(wall, CPU) seconds of every run of each contender of each group, all run in turn ``repeats`` times."""
    times: dict[str, dict[str, list[tuple[float, float]]]] = {
        g: {name: [] for name in group} for g, group in groups.items()
    }
    for _ in range(repeats):
        for g, group in groups.items():
            for name, fn in group.items():
                times[g][name].append(wall_and_cpu(fn, device))
    return times


class ForwardRecorder:
    """Records the shape of every batch the model sees (a forward pre-hook) while active."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.shapes: list[torch.Size] = []

    def __enter__(self) -> ForwardRecorder:
        self.shapes = []
        self.handle = self.model.register_forward_pre_hook(lambda module, args: self.shapes.append(args[0].shape))
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def forward_floor(model: nn.Module, shapes: list[torch.Size], images: torch.Tensor) -> Callable[[], None]:
    """The same forward passes alone: batches of ``shapes`` cut from ``images`` repeated, prepared in advance."""
    largest = max(shape[0] for shape in shapes)
    pool = images.repeat(-(-largest // images.shape[0]), 1, 1, 1)
    batches = [pool[: shape[0]].contiguous() for shape in shapes]

    def run() -> None:
        with torch.inference_mode():
            for batch in batches:
                model(batch)

    return run


def best_batch(
    model: nn.Module, images: torch.Tensor, device: torch.device, count: int = 64
) -> tuple[int, dict[int, float]]:
    """The fastest batch size of ``model`` on ``images`` and the seconds per image of each (best of 2)."""
    sizes = [size for size in (1, 2, 4, 8, 16, 32, 64) if size <= count]
    pool = images.repeat(-(-count // images.shape[0]), 1, 1, 1)[:count].contiguous()
    per_image: dict[int, float] = {size: float("inf") for size in sizes}
    with torch.inference_mode():
        for size in sizes:
            model(pool[:size])  # the first batch of a new shape also pays for its set-up
        for _ in range(2):
            for size in sizes:
                wall = wall_and_cpu(lambda s=size: [model(pool[i : i + s]) for i in range(0, count, s)], device)[0]
                per_image[size] = min(per_image[size], wall / count)
    return min(per_image, key=lambda size: per_image[size]), per_image


def forward_at(model: nn.Module, images: torch.Tensor, count: int, size: int) -> Callable[[], None]:
    """``count`` forward images in batches of ``size``, prepared in advance."""
    pool = images.repeat(-(-size // images.shape[0]), 1, 1, 1)[:size].contiguous()
    batches = [pool[: min(size, count - start)] for start in range(0, count, size)]

    def run() -> None:
        with torch.inference_mode():
            for batch in batches:
                model(batch)

    return run


def random_maps(count: int, size: int, device: torch.device) -> torch.Tensor:
    """Uniformly random maps (seeded), the report's random baseline."""
    return torch.rand(count, size, size, generator=torch.Generator().manual_seed(0)).to(device)


def rows_for(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    classes: list[int],
    best: int,
    peers: bool,
    device: torch.device,
) -> tuple[dict[str, Callable[[], object]], dict[str, object]]:
    """The timed contenders for one kind of map (after a first, calibrating call, timed) and what they printed."""
    info: dict[str, object] = {}

    def ours() -> None:
        info["camscope"] = float(road(model, x, maps, target=classes, percentages=PERCENTAGES)["combined"].mean())

    info["first call"] = wall_and_cpu(ours, device)
    with ForwardRecorder(model) as recorder:  # the batches of a calibrated call
        ours()
    images = sum(shape[0] for shape in recorder.shapes)
    info["images"], info["batches"] = images, [shape[0] for shape in recorder.shapes]
    info["auto size"] = calibrated_batch_size(model, x)
    contenders: dict[str, Callable[[], object]] = {
        "floor, best batch": forward_at(model, x, images, best),
        "floor, the metric's batches": forward_floor(model, recorder.shapes, x),
        "camscope road": ours,
    }
    if peers:
        from pytorch_grad_cam.metrics.road import ROADCombined
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

        def peer() -> None:
            metric = ROADCombined(percentiles=[round(100 * p) for p in PERCENTAGES])
            targets = [ClassifierOutputSoftmaxTarget(c) for c in classes]
            info["grad-cam"] = float(np.mean(metric(x, maps.cpu().numpy(), targets, model)))

        contenders["grad-cam 1.5.7 ROADCombined"] = peer
    return contenders, info


def imputation_rows(
    x: torch.Tensor, maps: torch.Tensor, device: torch.device
) -> tuple[dict[str, Callable[[], object]], float]:
    """camscope's batched imputation and grad-cam's per-image spsolve on grad-cam's masks, and their difference."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    keeps, owners = grad_cam_masks(maps.cpu())
    images, keeps = x[owners], keeps.to(device)
    ours_clean = noisy_linear_impute(images[:8], keeps[:8], noise=0.0).cpu()
    host = images[:8].cpu()
    peer_clean = torch.stack([NoisyLinearImputer(noise=0.0)(host[i], keeps[i].cpu().float()) for i in range(8)])
    rows: dict[str, Callable[[], object]] = {
        "camscope noisy_linear_impute (batched torch)": lambda: noisy_linear_impute(images, keeps),
        "grad-cam 1.5.7 NoisyLinearImputer (spsolve per image)": lambda: [
            NoisyLinearImputer()(images[i].cpu(), keeps[i].cpu().float()) for i in range(len(images))
        ],
    }
    return rows, float((ours_clean - peer_clean).abs().max())


def median(times: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--maps", default="gradcam,random", help="kinds of maps: gradcam, random")
    parser.add_argument("--quick", action="store_true", help="4 images, no imputation comparison")
    parser.add_argument("--no-peers", action="store_true", help="skip grad-cam (its ROADCombined is slow)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.images = min(args.images, 4)
    device = torch.device(args.device)
    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}\n")

    model = load_model(device=device)
    x = workload(args.images, args.size).to(device)
    explanation = camscope.explain(model, x, "gradcam")
    classes = explanation.classes.tolist()
    best, per_image = best_batch(model, x, device)
    print("forward ms per image by batch size: " + ", ".join(f"{s}: {1000 * t:.1f}" for s, t in per_image.items()))
    print(f"best batch size: {best}\n")
    kinds = {"gradcam": explanation.maps, "random": random_maps(args.images, args.size, device)}
    groups: dict[str, dict[str, Callable[[], object]]] = {}
    infos: dict[str, dict[str, object]] = {}
    for kind in [k.strip() for k in args.maps.split(",") if k.strip()]:
        groups[kind], infos[kind] = rows_for(model, x, kinds[kind], classes, best, not args.no_peers, device)
    difference = None
    if not args.quick and not args.no_peers:
        groups["imputation"], difference = imputation_rows(x, explanation.maps, device)
    timings = timed_groups(groups, args.repeats, device)

    print(
        f"ROAD, {args.images} images of {args.size} px, {len(PERCENTAGES)} percentages x MoRF/LeRF "
        f"({2 * len(PERCENTAGES) * args.images} imputations), {device}, torch threads {torch.get_num_threads()}, "
        f"median of {args.repeats}\n"
    )
    print(
        "| maps | contender | wall s | CPU s | / best-batch floor (wall, CPU) | / metric's-batches floor (wall, CPU) |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for kind, info in infos.items():
        rows = timings[kind]
        best_floor, own_floor = median(rows["floor, best batch"]), median(rows["floor, the metric's batches"])
        first = info["first call"]
        for name, (wall, cpu) in [*((n, median(t)) for n, t in rows.items()), ("camscope road, first call", first)]:
            print(
                f"| {kind} | {name} | {wall:.1f} | {cpu:.1f} | {wall / best_floor[0]:.2f}x, {cpu / best_floor[1]:.2f}x "
                f"| {wall / own_floor[0]:.2f}x, {cpu / own_floor[1]:.2f}x |"
            )
    if "imputation" in timings:
        for name, times in timings["imputation"].items():
            wall, cpu = median(times)
            print(f"| gradcam masks | {name} | {wall:.1f} | {cpu:.1f} | | |")
    print()
    for kind, info in infos.items():
        batches = info["batches"]
        print(
            f"{kind}: {info['images']} forward images; camscope's batch size {info['auto size']} "
            f"(perturbed batches of the timed calls: {sorted(set(batches[1:]))}); mean combined ROAD: "
            + ", ".join(f"{k} {info[k]:.4f}" for k in ("camscope", "grad-cam") if k in info)
        )
    if difference is not None:
        print(f"max |camscope - grad-cam| of noiseless imputations (8 pairs): {difference:.1e}")
    print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
