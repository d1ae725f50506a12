"""ROAD speed: camscope's ``road`` against its forward floor and grad-cam 1.5.7's ROADCombined.

Workload: 16 images of 224 px (the bundled sample photos, mirrored and shifted to make
16), Grad-CAM maps of the default EfficientNet-Lite0 (bundled weights, offline), ROAD at
9 percentages (10%..90%) in both orders: 288 imputations and forward passes. All
contenders run on the same device in the same process, interleaved (round-robin) when
``--repeats`` > 1.

Rows:

* **imputation**: the same 288 (image, mask) pairs (grad-cam's own ``np.percentile``
  masks) filled by noisy linear imputation: ``camscope.metrics.noisy_linear_impute`` on
  batches against grad-cam's ``NoisyLinearImputer`` (one scipy ``spsolve`` per pair);
  the maximum difference of the noiseless solutions is printed too;
* **end to end**: ``camscope.metrics.road`` against its **forward floor** and against
  ``ROADCombined``. The floor is the same forward passes alone: every batch the model
  saw during the metric's run (recorded by a forward pre-hook: the clean pass and the
  perturbed batches, at the metric's batch size of 64, i.e. 4 percentages x 16 images
  per pass) run again on ready inputs under ``torch.inference_mode``. The ratio
  metric / floor is the cost of everything but the model: ranking, masks, imputation,
  scoring. grad-cam also re-runs the clean batch for each of its 18 calls.

Times are wall-clock seconds and process CPU seconds (all threads), medians of
``--repeats``; on a shared machine CPU seconds are the steadier measure. ``--device
cuda`` runs everything on the GPU (the imputation included; times are synchronised).

Run: ``python benchmarks/road.py [--images 16] [--repeats 1] [--threads 2] [--device cpu]
[--quick] [--no-peers]``.
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
from torch import nn

import camscope
from camscope.metrics import noisy_linear_impute, road
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call, synchronised on a GPU."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


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


def table(rows: dict[str, list[tuple[float, float]]], reference: str, title: str) -> None:
    """Markdown rows: medians and each row's ratio to ``reference`` (wall / CPU)."""
    ref_wall = statistics.median(t[0] for t in rows[reference])
    ref_cpu = statistics.median(t[1] for t in rows[reference])
    for name, times in rows.items():
        wall, cpu = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
        print(f"| {title} | {name} | {wall:.1f} | {cpu:.1f} | {wall / ref_wall:.2f}x / {cpu / ref_cpu:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="4 images, no imputation comparison")
    parser.add_argument("--no-peers", action="store_true", help="skip grad-cam (its ROADCombined is slow)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.images = min(args.images, 4)
    device = torch.device(args.device)

    model = load_model(device=device)
    x = workload(args.images, args.size).to(device)
    explanation = camscope.explain(model, x, "gradcam")
    maps, classes = explanation.maps, explanation.classes.tolist()
    scores: dict[str, float] = {}

    def ours_road() -> None:
        scores["camscope"] = float(road(model, x, maps, target=classes, percentages=PERCENTAGES)["combined"].mean())

    with ForwardRecorder(model) as recorder:
        road(model, x, maps, target=classes, percentages=PERCENTAGES)  # warm-up; records the forward batches
    floor = forward_floor(model, recorder.shapes, x)
    end_to_end: dict[str, Callable[[], object]] = {"forward floor": floor, "camscope road": ours_road}
    imputation: dict[str, Callable[[], object]] = {}
    difference = None
    if not args.no_peers:
        from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

        def peer_road() -> None:
            metric = ROADCombined(percentiles=[round(100 * p) for p in PERCENTAGES])
            targets = [ClassifierOutputSoftmaxTarget(c) for c in classes]
            scores["grad-cam"] = float(np.mean(metric(x, maps.cpu().numpy(), targets, model)))

        end_to_end["grad-cam 1.5.7 ROADCombined"] = peer_road
        if not args.quick:
            keeps, owners = grad_cam_masks(maps.cpu())
            images, keeps = x[owners], keeps.to(device)
            ours_clean = noisy_linear_impute(images[:8], keeps[:8], noise=0.0).cpu()
            host = images[:8].cpu()
            peer_clean = torch.stack([NoisyLinearImputer(noise=0.0)(host[i], keeps[i].cpu().float()) for i in range(8)])
            difference = float((ours_clean - peer_clean).abs().max())
            imputation = {
                "camscope noisy_linear_impute (batched torch)": lambda: noisy_linear_impute(images, keeps),
                "grad-cam 1.5.7 NoisyLinearImputer (spsolve per image)": lambda: [
                    NoisyLinearImputer()(images[i].cpu(), keeps[i].cpu().float()) for i in range(len(images))
                ],
            }
    groups = {"end to end": end_to_end, "imputation": imputation}
    timings: dict[str, dict[str, list[tuple[float, float]]]] = {
        g: {name: [] for name in group} for g, group in groups.items()
    }
    for _ in range(args.repeats):
        for g, group in groups.items():
            for name, fn in group.items():
                timings[g][name].append(timed(fn, device))

    print(
        f"ROAD, {args.images} images of {args.size} px, {len(PERCENTAGES)} percentages x MoRF/LeRF "
        f"({2 * len(PERCENTAGES) * args.images} imputations), {device}, torch threads {torch.get_num_threads()}, "
        f"median of {args.repeats}; forward floor: {len(recorder.shapes)} batches, "
        f"{sum(s[0] for s in recorder.shapes)} images\n"
    )
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}\n")
    print("| comparison | contender | wall s | CPU s | ratio to the first row (wall / CPU) |")
    print("|---|---|---:|---:|---:|")
    table(timings["end to end"], "forward floor", "end to end")
    if imputation:
        table(timings["imputation"], "camscope noisy_linear_impute (batched torch)", "imputation")
    print()
    if difference is not None:
        print(f"max |camscope - grad-cam| of noiseless imputations (8 pairs): {difference:.1e}")
    for name, value in scores.items():
        print(f"mean combined ROAD score, {name}: {value:.4f}")


if __name__ == "__main__":
    main()
