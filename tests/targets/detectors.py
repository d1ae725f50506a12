"""A tiny torchvision detector with random weights whose detections vary (shared by the detection tests)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

SIZE = 128


def tiny_detector(classes: int = 4) -> nn.Module:
    """Faster R-CNN (MobileNetV3-FPN), random weights, no pretrained backbone, 128 px, every class kept.

    Random convolutions shrink the signal through the backbone (its features are ~1e-8, so every box
    gets the same scores); one pass over random images in train mode sets the batch-norm statistics,
    as training would, and the detections then differ in boxes, scores and labels.
    """
    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=classes,
        min_size=SIZE,
        max_size=SIZE,
        box_score_thresh=0.0,
        rpn_pre_nms_top_n_test=40,
        rpn_post_nms_top_n_test=12,
        box_detections_per_img=30,
    )
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
    model.backbone.train()
    with torch.no_grad():
        calibration = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
        model.backbone(model.transform(list(calibration))[0].tensors)
        model.roi_heads.box_predictor.cls_score.weight.mul_(20)  # distinct class scores per box
    return model.eval()
