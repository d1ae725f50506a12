"""Grad-CAM speed against the model's own forward pass and the peer libraries.

ResNet-50 (random weights), batch 8, 224 px, CPU. The contenders run interleaved
(round-robin, the order rotating each round) so that machine noise hits them alike;
the table gives medians and each median as a ratio to the plain forward pass
(``torch.no_grad``).

Run: ``python benchmarks/speed.py [--repeats 7] [--threads N]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from measure import FORWARD, Runs, arguments, forward_pass, interleaved, medians, prepare
from torchvision.models import resnet50

import camscope


def contenders(model: torch.nn.Module, x: torch.Tensor, classes: list[int]) -> Runs:
    from pytorch_grad_cam import GradCAM as PeerGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchcamGradCAM

    peer = PeerGradCAM(model=model, target_layers=[model.layer4])
    peer_targets = [ClassifierOutputTarget(c) for c in classes]
    explainer = camscope.Explainer(model, layer="layer4", method="gradcam")

    def torchcam_gradcam() -> object:
        with TorchcamGradCAM(model, target_layer="layer4") as extractor:
            scores = model(x)
            return extractor(class_idx=classes, scores=scores)

    return {
        FORWARD: forward_pass(model, x),
        "camscope gradcam": lambda: explainer(x, target=classes),
        "grad-cam 1.5.7 GradCAM": lambda: peer(input_tensor=x, targets=peer_targets),
        "torchcam 0.5.0 GradCAM": torchcam_gradcam,
    }


def run(description: str, contenders: Callable[[torch.nn.Module, torch.Tensor], Runs]) -> None:
    """The command line of a ResNet-50 comparison on a CPU: each contender's median and its ratio to the forward pass."""
    args = arguments(description, repeats=7, batch=8, device=False, memory=False).parse_args()
    device = prepare(args)
    model = resnet50().eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    times = medians(interleaved(contenders(model, x), args.repeats, device))
    print(
        f"ResNet-50, batch {args.batch}, {args.size} px, CPU, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} interleaved runs, torch {torch.__version__}\n"
    )
    print("| contender | median (s) | ratio to forward |")
    print("|---|---:|---:|")
    for name, median in times.items():
        print(f"| {name} | {median:.3f} | {median / times[FORWARD]:.2f}x |")


def main() -> None:
    run(__doc__, lambda model, x: contenders(model, x, list(range(len(x)))))


if __name__ == "__main__":
    main()
