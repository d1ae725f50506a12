"""The cost of a box map against the detector's forward pass: camscope vs pytorch-grad-cam 1.5.7.

Faster R-CNN (MobileNetV3-Large FPN, torchvision, random weights with batch-norm
statistics from one pass over random images, so that boxes and scores vary), one
image at ``--size`` px. Timed, interleaved (the order rotates each round),
``--repeats`` times, medians and every run shown:

* ``forward``: the detector's forward pass without autograd (the floor);
* ``Grad-CAM``: the map of ``--boxes`` detected boxes at ``backbone.fpn.layer_blocks.0``,
  ``camscope.BoxTarget(..., match="any-label")`` vs ``FasterRCNNBoxScoreTarget``;
* ``Eigen-CAM``: the feature pyramid brought to one grid (pytorch-grad-cam's
  ``fasterrcnn_reshape_transform`` in both libraries) at ``backbone``.

The largest absolute difference between the two libraries' signed maps is printed
with the table.

Usage: ``python benchmarks/detection.py [--repeats 5] [--threads 1] [--size 320]``
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("TQDM_DISABLE", "1")

import torch
from measure import Runs, forward_pass, interleaved
from pytorch_grad_cam import EigenCAM, GradCAM
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

import camscope

LAYER = "backbone.fpn.layer_blocks.0"


def detector(size: int) -> nn.Module:
    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=91, min_size=size, max_size=size, box_score_thresh=0.0
    )
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
    model.backbone.train()
    with torch.no_grad():
        images = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(1))
        model.backbone(model.transform(list(images))[0].tensors)
        model.roi_heads.box_predictor.cls_score.weight.mul_(20)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--boxes", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = detector(args.size)
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        found = model(x)[0]
    labels, boxes = found["labels"][: args.boxes], found["boxes"][: args.boxes]
    ours_target = camscope.BoxTarget(labels, boxes, match="any-label")
    peer_targets = [FasterRCNNBoxScoreTarget(labels.numpy(), boxes.numpy())]
    layer = model.backbone.fpn.layer_blocks[0]

    def ours_gradcam() -> torch.Tensor:
        return camscope.explain(model, x, layer=LAYER, target=ours_target).raw

    def peer_gradcam() -> torch.Tensor:
        with GradCAM(model=model, target_layers=[layer]) as cam:
            cam(input_tensor=x, targets=peer_targets)
            activations = cam.activations_and_grads.activations[0].numpy()
            grads = cam.activations_and_grads.gradients[0].numpy()
            raw = cam.get_cam_image(x, layer, peer_targets, activations, grads, False)
        model.zero_grad(set_to_none=True)
        return torch.as_tensor(raw)

    def ours_eigencam() -> torch.Tensor:
        return camscope.explain(
            model, x, method="eigencam", layer="backbone", levels=fasterrcnn_reshape_transform, target=ours_target
        ).raw

    def peer_eigencam() -> torch.Tensor:
        with EigenCAM(model, [model.backbone], reshape_transform=fasterrcnn_reshape_transform) as cam:
            cam(input_tensor=x, targets=peer_targets)
            return torch.as_tensor(get_2d_projection(cam.activations_and_grads.activations[0].numpy()))

    runs: Runs = {
        "forward (no autograd)": forward_pass(model, x),
        "camscope Grad-CAM, BoxTarget": ours_gradcam,
        "grad-cam Grad-CAM, FasterRCNNBoxScoreTarget": peer_gradcam,
        "camscope Eigen-CAM, FPN to one grid": ours_eigencam,
        "grad-cam Eigen-CAM, fasterrcnn_reshape_transform": peer_eigencam,
    }
    gradcam_gap = float((ours_gradcam() - peer_gradcam()).abs().max())
    a, b = ours_eigencam(), peer_eigencam()
    eigen_gap = float(torch.minimum((a - b).abs().amax(), (a + b).abs().amax()))  # an eigenvector's sign
    times = interleaved(runs, args.repeats, torch.device("cpu"), warm_up=False)
    names = list(runs)
    floor = statistics.median(times[names[0]])
    print(f"Faster R-CNN MobileNetV3-FPN, 1 image {args.size} px, {args.boxes} boxes, {args.threads} thread(s)")
    print(f"{'':52} {'median s':>9} {'x forward':>9}  runs")
    for name in names:
        median = statistics.median(times[name])
        shown = " ".join(f"{t:.3f}" for t in times[name])
        print(f"{name:52} {median:9.3f} {median / floor:9.2f}  {shown}")
    print(f"max |camscope - grad-cam| signed map: Grad-CAM {gradcam_gap:.2e}, Eigen-CAM {eigen_gap:.2e} (up to sign)")


if __name__ == "__main__":
    main()
