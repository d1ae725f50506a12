"""Perturbation metrics against their forward floor and the peers, in one run.

Workload (as ``benchmarks/road.py``): 16 images of 224 px, Grad-CAM maps of the default
EfficientNet-Lite0 (offline), every metric with its paper's protocol and camscope's
default batch size (64 perturbed images per forward pass):

* ``road``: 9 percentages (10%..90%), MoRF and LeRF, noisy linear imputation;
* ``deletion`` (zero substrate) and ``insertion`` (RISE's blur), ``step`` = the width
  (224 steps at 224 px; ``--steps N`` sets N steps);
* ``relative_drop`` (RD@5% and RD@10%, zero fill) and ``average_drop``.

The **forward floor** of a metric is the same forward passes alone: every batch the
model saw during the metric's run (recorded by a forward pre-hook: the clean pass
and each perturbed batch, with the metric's batch sizes and image count) run again on
ready inputs under ``torch.inference_mode``. ``ratio`` = metric / floor is therefore
the cost of everything but the model (ranking, masks, substrates or imputation,
scoring). Peers on the same inputs: grad-cam 1.5.7's ``ROADCombined`` (road),
torchcam 0.5.0's ``DeletionInsertionMetric`` (both curves in one pass over shared
all-baseline inputs, compared with camscope's deletion + insertion with the same zero
substrate and step) and ``ClassificationMetric`` (average drop); they run the same
number of forward passes, give or take the clean batch.

Times are wall-clock and process CPU seconds (all threads), medians of ``--repeats``
with the contenders interleaved; on a shared machine CPU seconds are the steadier
measure. ``--device cuda`` runs everything on the GPU (times synchronised).

Run: ``python benchmarks/metrics.py [--images 16] [--threads 2] [--device cpu] [--repeats 1]
[--quick] [--no-peers] [--metrics road,deletion,...]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
from road import PERCENTAGES, ForwardRecorder, forward_floor, timed, workload
from torch import nn

import camscope
from camscope.metrics import average_drop, deletion, insertion, relative_drop, road
from camscope.models import load_model

METRICS = ("road", "deletion", "insertion", "deletion+insertion (zero)", "relative_drop", "average_drop")


class GivenMaps:
    """What torchcam's metrics need from a CAM extractor: the model and fixed maps."""

    def __init__(self, model: nn.Module, maps: torch.Tensor) -> None:
        self.model, self.maps = model, maps

    def __call__(self, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
        return [self.maps]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    @contextmanager
    def _hooks_off(self) -> Any:
        yield


def contenders(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: list[int], step: int, peers: bool
) -> dict[str, tuple[Callable[[], object], Callable[[], object] | None]]:
    """Per metric: camscope's call and the peer's (None when there is none)."""
    del_ins_steps = -(-maps[0].numel() // step)
    softmax = partial(torch.softmax, dim=-1)

    def both_zero() -> None:
        deletion(model, x, maps, target=classes, step=step)
        insertion(model, x, maps, target=classes, step=step, substrate="zero")

    def peer_road() -> None:
        from pytorch_grad_cam.metrics.road import ROADCombined
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

        metric = ROADCombined(percentiles=[round(100 * p) for p in PERCENTAGES])
        np.mean(metric(x, maps.cpu().numpy(), [ClassifierOutputSoftmaxTarget(c) for c in classes], model))

    def peer_del_ins() -> None:
        from torchcam.metrics import DeletionInsertionMetric

        metric = DeletionInsertionMetric(GivenMaps(model, maps), softmax, steps=del_ins_steps, batch_size=64)
        metric.update(x, class_idx=classes)
        metric.summary()

    def peer_drop() -> None:
        from torchcam.metrics import ClassificationMetric

        metric = ClassificationMetric(GivenMaps(model, maps), softmax)
        metric.update(x, class_idx=classes)
        metric.summary()

    table: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = {
        "road": (lambda: road(model, x, maps, target=classes, percentages=PERCENTAGES), peer_road),
        "deletion": (lambda: deletion(model, x, maps, target=classes, step=step), None),
        "insertion": (lambda: insertion(model, x, maps, target=classes, step=step), None),
        "deletion+insertion (zero)": (both_zero, peer_del_ins),
        "relative_drop": (lambda: relative_drop(model, x, maps, target=classes), None),
        "average_drop": (lambda: average_drop(model, x, maps, target=classes), peer_drop),
    }
    if not peers:
        table = {name: (ours, None) for name, (ours, _) in table.items()}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=0, help="deletion/insertion steps (0: RISE's, the width)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--metrics", default=",".join(METRICS), help="comma-separated subset of: " + ", ".join(METRICS))
    parser.add_argument("--quick", action="store_true", help="4 images and 16 deletion/insertion steps")
    parser.add_argument("--no-peers", action="store_true", help="skip grad-cam and torchcam")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.images, args.steps = min(args.images, 4), args.steps or 16
    device = torch.device(args.device)
    chosen = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(METRICS))
    if unknown:
        parser.error(f"unknown metrics {unknown}; choose among {list(METRICS)}")

    model = load_model(device=device)
    x = workload(args.images, args.size).to(device)
    explanation = camscope.explain(model, x, "gradcam")
    maps, classes = explanation.maps, explanation.classes.tolist()
    pixels = maps[0].numel()
    step = -(-pixels // args.steps) if args.steps else args.size
    table = contenders(model, x, maps, classes, step, not args.no_peers)

    runs: dict[str, dict[str, Callable[[], object]]] = {}
    images: dict[str, int] = {}
    for name in chosen:
        ours, peer = table[name]
        with ForwardRecorder(model) as recorder:
            ours()  # warm-up; records the forward batches
        images[name] = sum(s[0] for s in recorder.shapes)
        runs[name] = {"floor": forward_floor(model, recorder.shapes, x), "camscope": ours}
        if peer is not None:
            runs[name]["peer"] = peer
    times: dict[str, dict[str, list[tuple[float, float]]]] = {n: {k: [] for k in r} for n, r in runs.items()}
    for _ in range(args.repeats):
        for name, group in runs.items():
            for key, fn in group.items():
                times[name][key].append(timed(fn, device))

    print(
        f"{args.images} images of {args.size} px, {device}, torch threads {torch.get_num_threads()}, "
        f"deletion/insertion step {step} ({-(-pixels // step)} steps), median of {args.repeats}\n"
    )
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}\n")
    print("| metric | forwards (images) | floor s (CPU s) | camscope s (CPU s) | ratio wall (CPU) | peer s (CPU s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, group in times.items():
        med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in group.items()}
        floor, ours = med["floor"], med["camscope"]
        peer = f"{med['peer'][0]:.2f} ({med['peer'][1]:.2f})" if "peer" in med else "-"
        print(
            f"| {name} | {images[name]} | {floor[0]:.2f} ({floor[1]:.2f}) | {ours[0]:.2f} ({ours[1]:.2f}) | "
            f"{ours[0] / floor[0]:.2f}x ({ours[1] / floor[1]:.2f}x) | {peer} |"
        )


if __name__ == "__main__":
    main()
