"""Grad-CAM speed against the model's own forward pass and the peer libraries.

ResNet-50 (random weights), batch 8, 224 px, CPU. The contenders run interleaved
(round-robin) so that machine noise hits them alike; the table gives medians and
each median as a ratio to the plain forward pass (``torch.no_grad``).

Run: ``python benchmarks/speed.py [--repeats 7] [--threads N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torchvision.models import resnet50

import camscope


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def contenders(model: torch.nn.Module, x: torch.Tensor, classes: list[int]) -> dict[str, Callable[[], object]]:
    from pytorch_grad_cam import GradCAM as PeerGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchcamGradCAM

    peer = PeerGradCAM(model=model, target_layers=[model.layer4])
    peer_targets = [ClassifierOutputTarget(c) for c in classes]
    explainer = camscope.Explainer(model, layer="layer4", method="gradcam")

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    def torchcam_gradcam() -> object:
        with TorchcamGradCAM(model, target_layer="layer4") as extractor:
            scores = model(x)
            return extractor(class_idx=classes, scores=scores)

    return {
        "forward pass (no_grad)": forward,
        "camscope gradcam": lambda: explainer(x, target=classes),
        "grad-cam 1.5.7 GradCAM": lambda: peer(input_tensor=x, targets=peer_targets),
        "torchcam 0.5.0 GradCAM": torchcam_gradcam,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = resnet50().eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    classes = list(range(args.batch))
    runs = contenders(model, x, classes)
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(_timed(fn))
    floor = statistics.median(times["forward pass (no_grad)"])
    print(
        f"ResNet-50, batch {args.batch}, {args.size} px, CPU, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} interleaved runs, torch {torch.__version__}\n"
    )
    print("| contender | median (s) | ratio to forward |")
    print("|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / floor:.2f}x |")


if __name__ == "__main__":
    main()
