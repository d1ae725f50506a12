"""Score-CAM speed and memory: camscope vs pytorch-grad-cam 1.5.7 vs torchcam 0.5.0.

ResNet-18 (random weights, seeded), layer4 (512 channels), a batch of 2 images
at 128 px. Each method runs the 512 masked passes per image in chunks of
``--chunk`` inputs (grad-cam's ``batch_size`` attribute, torchcam's and
camscope's ``batch_size``). The floor is the same 2 x 512 forward passes,
batched the same way and timed directly (no masks, no scores). Methods run
interleaved (the order rotates each round), ``--repeats`` times; the table shows
medians, their ratio to the floor's median, and every run (on a loaded shared
machine the spread is the honest error bar). Peak memory is the peak of live bytes allocated by torch
(CPU allocator, from the profiler's memory events), measured in a separate,
untimed run. The approximate mode (``channels=k``) is compared with the exact
map.

Usage: ``python benchmarks/scorecam.py [--repeats 3] [--threads 1] [--device cpu]``
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

os.environ.setdefault("TQDM_DISABLE", "1")  # grad-cam's ScoreCAM draws a tqdm bar per image

import torch
from measure import Runs, interleaved, medians, peak_bytes, timed
from torchvision.models import resnet18

import camscope


def peers(model: torch.nn.Module, x: torch.Tensor, classes: list[int], chunk: int) -> Runs:
    """grad-cam's and torchcam's Score-CAM, ``chunk`` masked inputs per forward pass."""
    from pytorch_grad_cam import ScoreCAM as GradCamScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import ScoreCAM as TorchCamScoreCAM

    def gradcam() -> object:
        with GradCamScoreCAM(model=model, target_layers=[model.layer4]) as cam:
            cam.batch_size = chunk
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])

    def torchcam() -> object:
        with TorchCamScoreCAM(model, target_layer="layer4", batch_size=chunk, input_shape=tuple(x.shape[1:])) as cam:
            with torch.no_grad():
                model(x)
            return cam(class_idx=classes)

    return {"grad-cam 1.5.7 ScoreCAM": gradcam, "torchcam 0.5.0 ScoreCAM": torchcam}


def approximate_rows(
    ours: Callable[..., camscope.Explanation],
    exact: camscope.Explanation,
    ks: list[int],
    base: float,
    device: torch.device,
) -> None:
    """The table of the approximate mode (``channels=k``) against the exact map: time and differences."""
    print()
    print("Approximate mode (`channels=k`: the k channels of highest activation variance), vs the exact map:")
    print()
    print("| channels | time (s) | vs floor | max abs diff of maps | mean abs diff | corr. of raw maps |")
    print("|---:|---:|---:|---:|---:|---:|")
    for k in ks:
        approx: list[camscope.Explanation] = []
        seconds = timed(lambda k=k, approx=approx: approx.append(ours(channels=k)), device)
        maps = approx[0].maps
        diff = (maps - exact.maps).abs()
        a = approx[0].raw.flatten(1) - approx[0].raw.flatten(1).mean(1, keepdim=True)
        b = exact.raw.flatten(1) - exact.raw.flatten(1).mean(1, keepdim=True)
        corr = ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-12)).min()
        print(f"| {k} | {seconds:.2f} | {seconds / base:.2f}x | {diff.max():.3f} | {diff.mean():.4f} | {corr:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip the (untimed) peak-memory runs")
    parser.add_argument("--approx", type=int, nargs="*", default=[64, 128], help="channels=k values to compare")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = resnet18(weights=None).eval().to(device)
    x = torch.randn(2, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
    classes = [1, 2]
    channels = 512
    chunk = args.chunk

    masked = x.repeat_interleave(chunk // 2, dim=0)[:chunk].contiguous()  # one chunk's worth of inputs

    def floor() -> None:
        with torch.no_grad():
            for _ in range(-(-x.shape[0] * channels // chunk)):
                model(masked)

    def ours(**options) -> camscope.Explanation:
        return camscope.explain(
            model, x, method="scorecam", layer="layer4", target=classes, batch_size=chunk, progress=False, **options
        )

    contenders: Runs = {"floor (2 x 512 passes)": floor, "camscope scorecam": ours, **peers(model, x, classes, chunk)}
    results: dict[str, object] = {}
    keeping = {name: (lambda fn=fn, name=name: results.__setitem__(name, fn())) for name, fn in contenders.items()}
    times = interleaved(keeping, args.repeats, device, warm_up=False)
    median = medians(times)
    base = median["floor (2 x 512 passes)"]
    peaks = {} if args.no_memory else {name: peak_bytes(fn, device) for name, fn in contenders.items()}

    print(
        f"Score-CAM, ResNet-18 layer4 (512 channels), batch 2, {args.size} px, {device.type}, "
        f"{args.threads} threads, chunk {chunk}, median of {args.repeats} interleaved runs"
    )
    print()
    print("| method | median time (s) | vs floor | runs (s) | peak memory (MB) |")
    print("|---|---:|---:|---:|---:|")
    for name in contenders:
        peak = f"{peaks[name] / 1e6:.0f}" if name in peaks else "-"
        runs = ", ".join(f"{t:.1f}" for t in times[name])
        print(f"| {name} | {median[name]:.2f} | {median[name] / base:.2f}x | {runs} | {peak} |")

    exact = results["camscope scorecam"]
    flat = exact.activations.flatten(2)
    constant = int((flat.amax(-1) == flat.amin(-1)).sum())
    print()
    print(
        f"camscope skipped the masked passes of {constant} of the {x.shape[0] * channels} channels "
        "(constant maps: their masked input is the baseline)."
    )
    if args.approx:
        approximate_rows(ours, exact, args.approx, base, device)


if __name__ == "__main__":
    main()
