"""Cost of ``camscope.analyze`` against a plain Grad-CAM pass over the same data, in the same run.

The plain pass is what a user would otherwise run: ``camscope.explain(model, x,
"gradcam", layer)`` on every batch (maps upsampled and normalised). ``analyze``
collects the distribution (quantile sketches, moments) and the Eq. 4 importance
matrix in the same single forward + backward per batch; with ``explain="predicted"``,
batches where a label differs from the prediction need the true class's gradient
too (a second row in one batched backward). The table shows that case with labels
equal to the predictions (an accurate model) and with random labels (the worst
case), and, for scale, Eq. 3 over all classes.

Timings interleave the variants (the order rotating each round) and report the median of ``--repeat`` runs.

Usage:
    python benchmarks/analyze.py                      # default model, 64 images at 224 px
    python benchmarks/analyze.py --model resnet18 --images 128 --size 160
"""

from __future__ import annotations

import argparse

import torch
from measure import interleaved, medians

import camscope


def _model(name: str) -> tuple[torch.nn.Module, str]:
    if name == "efficientnet_lite0":
        from camscope.models import load_model

        return load_model(), "bn2"
    if name == "resnet18":
        from torchvision.models import resnet18

        torch.manual_seed(0)
        return resnet18(num_classes=1000).eval(), "layer4"
    raise SystemExit(f"unknown model {name!r}: efficientnet_lite0 or resnet18")


def _plain(model, batches, layer):
    for x, _ in batches:
        camscope.explain(model, x, "gradcam", layer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--all-classes", action="store_true", help="also time Eq. 3 over all classes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, layer = _model(args.model)
    g = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(args.batch_size, 3, args.size, args.size, generator=g)
        for _ in range(args.images // args.batch_size)
    ]
    with torch.no_grad():
        predicted = [model(x).argmax(1) for x in inputs]
    random_labels = [torch.randint(0, 1000, (args.batch_size,), generator=g) for _ in inputs]
    variants = {
        "plain Grad-CAM pass (explain per batch)": lambda: _plain(model, list(zip(inputs, predicted)), layer),
        "analyze, labels = predictions": lambda: camscope.analyze(model, list(zip(inputs, predicted)), layer=layer),
        "analyze, random labels (2 gradient rows)": lambda: camscope.analyze(
            model, list(zip(inputs, random_labels)), layer=layer
        ),
        "analyze, explain='true'": lambda: camscope.analyze(
            model, list(zip(inputs, random_labels)), layer=layer, explain="true"
        ),
    }
    if args.all_classes:
        variants["analyze + Eq. 3 (all 1000 classes)"] = lambda: camscope.analyze(
            model, list(zip(inputs, predicted)), layer=layer, all_classes=True
        )
    times = medians(interleaved(variants, args.repeat, torch.device("cpu")))
    base = times["plain Grad-CAM pass (explain per batch)"]
    print(
        f"model {args.model} (layer {layer}), {len(inputs) * args.batch_size} images of {args.size} px, "
        f"batch {args.batch_size}, torch threads {torch.get_num_threads()}, median of {args.repeat}"
    )
    print()
    print("| pass | seconds | ratio to plain Grad-CAM |")
    print("|---|---:|---:|")
    for name, median in times.items():
        print(f"| {name} | {median:.2f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
