"""Perturbation metrics against their forward floors and the peers, in one run.

Workload (as ``benchmarks/road.py``): 16 images of 224 px, Grad-CAM maps of the default
EfficientNet-Lite0 (offline), every metric with its paper's protocol and camscope's default
perturbed batch size (``"auto"``: the model's fastest, calibrated on the metric's own passes
by a first call that is not timed):

* ``road``: 9 percentages (10%..90%), MoRF and LeRF, noisy linear imputation;
* ``most_relevant_first`` / ``least_relevant_first``: one order each, the same 9 fractions;
* ``deletion`` (zero substrate) and ``insertion`` (RISE's blur), ``step`` = the width
  (224 steps at 224 px; ``--steps N`` sets N steps);
* ``relative_drop`` (RD@5% and RD@10%, zero fill), ``average_drop`` and ``confidence_change``
  (one pass on the explanation map);
* ``arcc``: ROAD at 20/40/60/80%, complexity, and coherency, which explains the masked images
  again with Grad-CAM (a backward pass that the forward floors do not count).

Two **forward floors** per metric: the same number of forward images as the metric ran (the
clean pass and the perturbed images, recorded by a forward pre-hook) at the model's best
batch size (measured first, as in ``benchmarks/road.py``), and the metric's own batches run
again alone. ``ratio`` = metric / floor is the cost of everything but the model (ranking,
masks, substrates or imputation, scoring) and, against the best-batch floor, of any batch
size worse than the best. Peers on the same inputs: grad-cam 1.5.7's ``ROADCombined``,
``ROADMostRelevantFirstAverage``, ``ROADLeastRelevantFirstAverage``,
``CamMultImageConfidenceChange`` and ``ARCC`` (its ``GradCAM`` at the same layer),
torchcam 0.5.0's ``DeletionInsertionMetric`` (both curves in one pass over shared
all-baseline inputs, compared with camscope's deletion + insertion with the same zero
substrate and step) and ``ClassificationMetric`` (average drop).

Times are wall-clock and process CPU seconds (all threads), medians of ``--repeats``
with the contenders interleaved; on a shared machine CPU seconds are the steadier
measure. ``--device cuda`` runs everything on the GPU (times synchronised).

Run: ``nice python benchmarks/metrics.py [--images 16] [--threads 2] [--device cpu] [--repeats 1]
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

import torch
from road import PERCENTAGES, ForwardRecorder, best_batch, forward_at, forward_floor, timed_groups, workload
from torch import nn

import camscope
from camscope.metrics import (
    arcc,
    average_drop,
    confidence_change,
    deletion,
    insertion,
    least_relevant_first,
    most_relevant_first,
    relative_drop,
    road,
)
from camscope.models import load_model

METRICS = (
    "road",
    "most_relevant_first",
    "least_relevant_first",
    "deletion",
    "insertion",
    "deletion+insertion (zero)",
    "relative_drop",
    "average_drop",
    "confidence_change",
    "arcc",
)
ARCC_PERCENTILES = [20, 40, 60, 80]


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


def grad_cam_contenders(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: list[int], layer: nn.Module
) -> dict[str, Callable[[], object]]:
    """grad-cam 1.5.7's metrics on the same inputs, maps and classes (softmax targets)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.metrics.arcc import ARCC
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADCombined, ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    cams, targets = maps.cpu().numpy(), [ClassifierOutputSoftmaxTarget(c) for c in classes]
    percentiles = [round(100 * p) for p in PERCENTAGES]

    def peer_arcc() -> None:
        with GradCAM(model=model, target_layers=[layer]) as base:
            ARCC(base, road_percentiles=ARCC_PERCENTILES)(x, cams, targets, model)

    return {
        "road": lambda: ROADCombined(percentiles=percentiles)(x, cams, targets, model),
        "most_relevant_first": lambda: ROADMostRelevantFirstAverage(percentiles)(x, cams, targets, model),
        "least_relevant_first": lambda: ROADLeastRelevantFirstAverage(percentiles)(x, cams, targets, model),
        "confidence_change": lambda: CamMultImageConfidenceChange()(x, cams, targets, model),
        "arcc": peer_arcc,
    }


def torchcam_contenders(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: list[int], step: int
) -> dict[str, Callable[[], object]]:
    """torchcam 0.5.0's metrics on the same inputs, maps and classes."""
    del_ins_steps = -(-maps[0].numel() // step)
    softmax = partial(torch.softmax, dim=-1)

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

    return {"deletion+insertion (zero)": peer_del_ins, "average_drop": peer_drop}


def contenders(
    model: nn.Module, x: torch.Tensor, explanation: camscope.Explanation, step: int, peers: bool
) -> dict[str, tuple[Callable[[], object], Callable[[], object] | None]]:
    """Per metric: camscope's call and the peer's (None when there is none)."""
    maps, classes = explanation.maps, explanation.classes.tolist()
    layer = str(explanation.layer)

    def both_zero() -> None:
        deletion(model, x, maps, target=classes, step=step)
        insertion(model, x, maps, target=classes, step=step, substrate="zero")

    ours: dict[str, Callable[[], object]] = {
        "road": lambda: road(model, x, maps, target=classes, percentages=PERCENTAGES),
        "most_relevant_first": lambda: most_relevant_first(model, x, maps, target=classes, fractions=PERCENTAGES),
        "least_relevant_first": lambda: least_relevant_first(model, x, maps, target=classes, fractions=PERCENTAGES),
        "deletion": lambda: deletion(model, x, maps, target=classes, step=step),
        "insertion": lambda: insertion(model, x, maps, target=classes, step=step),
        "deletion+insertion (zero)": both_zero,
        "relative_drop": lambda: relative_drop(model, x, maps, target=classes),
        "average_drop": lambda: average_drop(model, x, maps, target=classes),
        "confidence_change": lambda: confidence_change(model, x, maps, target=classes),
        "arcc": lambda: arcc(model, x, maps, classes, method="gradcam", layer=layer, percentages=(0.2, 0.4, 0.6, 0.8)),
    }
    others: dict[str, Callable[[], object]] = {}
    if peers:
        others.update(grad_cam_contenders(model, x, maps, classes, dict(model.named_modules())[layer]))
        others.update(torchcam_contenders(model, x, maps, classes, step))
    return {name: (fn, others.get(name)) for name, fn in ours.items()}


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
    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}\n")

    model = load_model(device=device)
    x = workload(args.images, args.size).to(device)
    explanation = camscope.explain(model, x, "gradcam")
    pixels = explanation.maps[0].numel()
    step = -(-pixels // args.steps) if args.steps else args.size
    table = contenders(model, x, explanation, step, not args.no_peers)
    best, per_image = best_batch(model, x, device)
    print("forward ms per image by batch size: " + ", ".join(f"{s}: {1000 * t:.1f}" for s, t in per_image.items()))

    runs: dict[str, dict[str, Callable[[], object]]] = {}
    images: dict[str, int] = {}
    for name in chosen:
        ours, peer = table[name]
        ours()  # calibrates the perturbed batch size (cached per model and input shape)
        with ForwardRecorder(model) as recorder:
            ours()  # records the forward batches of a calibrated call
        images[name] = sum(s[0] for s in recorder.shapes)
        runs[name] = {
            "best floor": forward_at(model, x, images[name], best),
            "own floor": forward_floor(model, recorder.shapes, x),
            "camscope": ours,
        }
        if peer is not None:
            runs[name]["peer"] = peer
    times = timed_groups(runs, args.repeats, device)

    print(
        f"\n{args.images} images of {args.size} px, {device}, torch threads {torch.get_num_threads()}, "
        f"deletion/insertion step {step} ({-(-pixels // step)} steps), best batch size {best}, "
        f"median of {args.repeats}\n"
    )
    print(
        "| metric | forward images | best-batch floor s (CPU s) | own-batches floor s (CPU s) | camscope s (CPU s) "
        "| / best floor wall (CPU) | / own floor wall (CPU) | peer s (CPU s) | peer / camscope wall (CPU) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, group in times.items():
        med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in group.items()}
        best_floor, own_floor, ours = med["best floor"], med["own floor"], med["camscope"]
        peer, versus = "-", "-"
        if "peer" in med:
            peer = f"{med['peer'][0]:.2f} ({med['peer'][1]:.2f})"
            versus = f"{med['peer'][0] / ours[0]:.1f}x ({med['peer'][1] / ours[1]:.1f}x)"
        print(
            f"| {name} | {images[name]} | {best_floor[0]:.2f} ({best_floor[1]:.2f}) | {own_floor[0]:.2f} ({own_floor[1]:.2f}) "
            f"| {ours[0]:.2f} ({ours[1]:.2f}) | {ours[0] / best_floor[0]:.2f}x ({ours[1] / best_floor[1]:.2f}x) "
            f"| {ours[0] / own_floor[0]:.2f}x ({ours[1] / own_floor[1]:.2f}x) | {peer} | {versus} |"
        )
    print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
