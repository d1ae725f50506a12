"""Attention maps of a ViT: camscope's rollout, gradrollout and legrad against the forward pass and torchcam's LeGrad.

torchvision ``vit_b_16`` (random weights, a random head: torchvision starts it at zero), CPU, the predicted
classes, all 12 blocks. The contenders run interleaved, the order rotated each round, so that machine noise
hits them alike; the table gives medians, each as a ratio to the plain forward pass (``torch.no_grad``) and
to torchcam 0.5.0's ``LeGrad`` over the same blocks, and the peak of live bytes allocated by torch (CPU
allocator, from the profiler's memory events; ``torch.cuda.max_memory_allocated`` on a GPU), measured in
separate, untimed runs. ``legrad (token-mean)`` computes torchcam's own map; the largest difference of the
normalised maps to torchcam's is printed below the table.

Run: ``python benchmarks/attention.py [--repeats 5] [--batch 4] [--threads N] [--device cpu|cuda]``.
"""

from __future__ import annotations

import torch
from measure import FORWARD, Runs, arguments, forward_pass, interleaved, medians, peak_bytes, prepare
from torchvision.models import vit_b_16

import camscope
from camscope.engine.maps import normalize_maps


def contenders(model: torch.nn.Module, x: torch.Tensor, classes: list[int]) -> Runs:
    from torchcam.methods import LeGrad as TorchcamLeGrad

    explainers = {
        "camscope rollout": camscope.Explainer(model, method="rollout"),
        "camscope gradrollout": camscope.Explainer(model, method="gradrollout"),
        "camscope legrad": camscope.Explainer(model, method="legrad"),
        "camscope legrad (token-mean)": camscope.Explainer(model, method="legrad", readout="token-mean"),
        "camscope finer-legrad (T=3)": camscope.Explainer(model, method="finer-legrad", references=3),
    }

    def torchcam_legrad() -> object:
        with TorchcamLeGrad(model, list(model.encoder.layers)) as extractor:
            scores = model(x)
            return extractor(class_idx=classes, scores=scores)[0]

    runs: Runs = {FORWARD: forward_pass(model, x)}
    runs.update({name: (lambda e=explainer: e(x, target=classes)) for name, explainer in explainers.items()})
    runs["torchcam 0.5.0 LeGrad"] = torchcam_legrad
    return runs


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repeats=5, batch=4).parse_args()
    device = prepare(args)
    model = vit_b_16(image_size=args.size)
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    model = model.eval().to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    with torch.no_grad():
        classes = model(x).argmax(dim=1).tolist()
    runs = contenders(model, x, classes)
    results = {name: fn() for name, fn in runs.items()}  # warm-up (and the outputs compared below)
    times = medians(interleaved(runs, args.repeats, device, warm_up=False))
    peaks = {} if args.no_memory else {name: peak_bytes(fn, device) for name, fn in runs.items()}
    floor, peer = times[FORWARD], times["torchcam 0.5.0 LeGrad"]
    print(
        f"vit_b_16 (random weights), batch {args.batch}, {args.size} px, {device.type}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved runs, torch {torch.__version__}\n"
    )
    print("| contender | median (s) | vs forward | vs torchcam LeGrad | peak memory (MB) |")
    print("|---|---:|---:|---:|---:|")
    for name in runs:
        peak = f"{peaks[name] / 1e6:.0f}" if name in peaks else "-"
        print(f"| {name} | {times[name]:.3f} | {times[name] / floor:.2f}x | {times[name] / peer:.2f}x | {peak} |")
    ours = normalize_maps(results["camscope legrad (token-mean)"].raw)  # type: ignore[attr-defined]
    difference = float((ours - results["torchcam 0.5.0 LeGrad"]).abs().max())  # type: ignore[operator]
    print(f"\nlegrad (token-mean) vs torchcam LeGrad: max abs difference of the normalised maps {difference:.2e}")


if __name__ == "__main__":
    main()
