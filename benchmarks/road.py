"""ROAD speed: camscope's batched torch imputation against grad-cam 1.5.7's ROADCombined.

Workload: 16 images of 224 px (the bundled sample photos, mirrored and shifted to make
16), Grad-CAM maps of the default EfficientNet-Lite0 (bundled weights, offline), ROAD at
9 percentages (10%..90%) in both orders: 288 imputations. Both contenders run on the same
CPU in the same process, interleaved (round-robin) when ``--repeats`` > 1.

Two comparisons:

* **imputation**: the same 288 (image, mask) pairs (grad-cam's own ``np.percentile``
  masks) filled by noisy linear imputation: ``camscope.metrics.noisy_linear_impute`` on
  batches against grad-cam's ``NoisyLinearImputer`` (one scipy ``spsolve`` per pair);
  the maximum difference of the noiseless solutions is printed too;
* **end to end**: ``camscope.metrics.road`` against ``ROADCombined`` (imputation plus the
  model's forward passes; grad-cam also re-runs the clean batch for each of its 18
  calls). A camscope row with ``imputation="zero"`` shows the forward passes alone,
  which bound the end-to-end ratio.

Times are wall-clock seconds and process CPU seconds (all threads), medians of
``--repeats``; on a shared machine CPU seconds are the steadier measure.

Run: ``python benchmarks/road.py [--images 16] [--repeats 1] [--threads N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

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


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = load_model()
    x = workload(args.images, args.size)
    explanation = camscope.explain(model, x, "gradcam")
    maps, classes = explanation.maps, explanation.classes.tolist()
    keeps, owners = grad_cam_masks(maps)
    images = x[owners]

    ours_clean = noisy_linear_impute(images[:8], keeps[:8], noise=0.0)
    peer_clean = torch.stack([NoisyLinearImputer(noise=0.0)(images[i], keeps[i].float()) for i in range(8)])
    difference = float((ours_clean - peer_clean).abs().max())

    scores: dict[str, float] = {}

    def ours_road() -> None:
        scores["camscope"] = float(road(model, x, maps, target=classes, percentages=PERCENTAGES)["combined"].mean())

    def peer_road() -> None:
        metric = ROADCombined(percentiles=[round(100 * p) for p in PERCENTAGES])
        scores["grad-cam"] = float(
            np.mean(metric(x, maps.numpy(), [ClassifierOutputSoftmaxTarget(c) for c in classes], model))
        )

    groups: dict[str, dict[str, Callable[[], object]]] = {
        "imputation": {
            "camscope noisy_linear_impute (batched torch)": lambda: noisy_linear_impute(images, keeps),
            "grad-cam 1.5.7 NoisyLinearImputer (spsolve per image)": lambda: [
                NoisyLinearImputer()(images[i], keeps[i].float()) for i in range(len(images))
            ],
        },
        "end to end": {
            "camscope road": ours_road,
            "grad-cam 1.5.7 ROADCombined": peer_road,
            "camscope road, imputation='zero' (forward passes only)": lambda: road(
                model, x, maps, target=classes, percentages=PERCENTAGES, imputation="zero"
            ),
        },
    }
    timings: dict[str, list[tuple[float, float]]] = {name: [] for group in groups.values() for name in group}
    for _ in range(args.repeats):
        for group in groups.values():
            for name, fn in group.items():
                timings[name].append(_timed(fn))

    print(
        f"ROAD, {args.images} images of {args.size} px, {len(PERCENTAGES)} percentages x MoRF/LeRF "
        f"({len(images)} imputations), torch threads {torch.get_num_threads()}, median of {args.repeats}\n"
    )
    print("| comparison | contender | wall s | CPU s | speed-up (wall / CPU) |")
    print("|---|---|---:|---:|---:|")
    for group_name, group in groups.items():
        names = list(group)
        reference = names[1]
        ref_wall = statistics.median(t[0] for t in timings[reference])
        ref_cpu = statistics.median(t[1] for t in timings[reference])
        for name in names:
            wall = statistics.median(t[0] for t in timings[name])
            cpu = statistics.median(t[1] for t in timings[name])
            ratio = "1.0x / 1.0x" if name == reference else f"{ref_wall / wall:.1f}x / {ref_cpu / cpu:.1f}x"
            print(f"| {group_name} | {name} | {wall:.1f} | {cpu:.1f} | {ratio} |")
    print()
    print(f"max |camscope - grad-cam| of noiseless imputations (8 pairs): {difference:.1e}")
    for name, value in scores.items():
        print(f"mean combined ROAD score, {name}: {value:.4f}")


if __name__ == "__main__":
    main()
