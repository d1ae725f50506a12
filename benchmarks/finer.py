"""Finer-CAM speed against the model's own forward pass and the peer libraries.

ResNet-50 (random weights), batch 8, 224 px, CPU, layer4, 3 reference classes
(the 2nd-4th predictions), gamma 0.6. The contenders run interleaved
(round-robin) so that machine noise hits them alike; the table gives medians and
each median as a ratio to the plain forward pass (``torch.no_grad``).

camscope's ``finer-gradcam`` back-propagates the averaged score once (Grad-CAM is
linear in the gradient), from the layer only; ``finer-layercam`` takes the three
per-reference gradients in one batched backward. pytorch-grad-cam 1.5.7's
FinerCAM (probability-weighted references) and torchcam 0.5.0's FinerCAM (mean
over the closest logits) are the peers.

Run: ``python benchmarks/finer.py [--repeats 7] [--threads N]``.
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


def contenders(model: torch.nn.Module, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    from pytorch_grad_cam.finer_cam import FinerCAM as PeerFinerCAM
    from torchcam.methods import FinerCAM as TorchcamFinerCAM

    peer = PeerFinerCAM(model=model, target_layers=[model.layer4])
    finer = camscope.Explainer(model, layer="layer4", method="finer-gradcam", references=3, gamma=0.6)
    finer_layercam = camscope.Explainer(model, layer="layer4", method="finer-layercam", references=3, gamma=0.6)
    gradcam = camscope.Explainer(model, layer="layer4", method="gradcam")

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    def torchcam_finer() -> object:
        with TorchcamFinerCAM(model, target_layer="layer4", gamma=0.6, num_references=3) as extractor:
            scores = model(x)
            return extractor(class_idx=scores.argmax(dim=1).tolist(), scores=scores)

    return {
        "forward pass (no_grad)": forward,
        "camscope gradcam": lambda: gradcam(x),
        "camscope finer-gradcam (T=3)": lambda: finer(x),
        "camscope finer-layercam (T=3)": lambda: finer_layercam(x),
        "grad-cam 1.5.7 FinerCAM (3 refs)": lambda: peer(input_tensor=x, alpha=0.6),
        "torchcam 0.5.0 FinerCAM (3 refs)": torchcam_finer,
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
    runs = contenders(model, x)
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
