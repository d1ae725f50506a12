"""Finer-CAM speed against the model's own forward pass and the peer libraries.

ResNet-50 (random weights), batch 8, 224 px, CPU, layer4, 3 reference classes
(the 2nd-4th predictions), gamma 0.6. The contenders run interleaved
(round-robin, the order rotating each round) so that machine noise hits them alike;
the table gives medians and each median as a ratio to the plain forward pass
(``torch.no_grad``).

camscope's ``finer-gradcam`` back-propagates the averaged score once (Grad-CAM is
linear in the gradient), from the layer only; ``finer-layercam`` takes the three
per-reference gradients in one batched backward. pytorch-grad-cam 1.5.7's
FinerCAM (probability-weighted references) and torchcam 0.5.0's FinerCAM (mean
over the closest logits) are the peers.

Run: ``python benchmarks/finer.py [--repeats 7] [--threads N]``.
"""

from __future__ import annotations

import torch
from measure import FORWARD, Runs, forward_pass
from speed import run

import camscope


def contenders(model: torch.nn.Module, x: torch.Tensor) -> Runs:
    from pytorch_grad_cam.finer_cam import FinerCAM as PeerFinerCAM
    from torchcam.methods import FinerCAM as TorchcamFinerCAM

    peer = PeerFinerCAM(model=model, target_layers=[model.layer4])
    finer = camscope.Explainer(model, layer="layer4", method="finer-gradcam", references=3, gamma=0.6)
    finer_layercam = camscope.Explainer(model, layer="layer4", method="finer-layercam", references=3, gamma=0.6)
    gradcam = camscope.Explainer(model, layer="layer4", method="gradcam")

    def torchcam_finer() -> object:
        with TorchcamFinerCAM(model, target_layer="layer4", gamma=0.6, num_references=3) as extractor:
            scores = model(x)
            return extractor(class_idx=scores.argmax(dim=1).tolist(), scores=scores)

    return {
        FORWARD: forward_pass(model, x),
        "camscope gradcam": lambda: gradcam(x),
        "camscope finer-gradcam (T=3)": lambda: finer(x),
        "camscope finer-layercam (T=3)": lambda: finer_layercam(x),
        "grad-cam 1.5.7 FinerCAM (3 refs)": lambda: peer(input_tensor=x, alpha=0.6),
        "torchcam 0.5.0 FinerCAM (3 refs)": torchcam_finer,
    }


def main() -> None:
    run(__doc__, contenders)


if __name__ == "__main__":
    main()
