"""Embeddings of boxes: a layer's activations averaged over boxes of the input.

DiffCAM explains an example by how its embedding differs from a reference group's.
For a detected box the embedding is the mean of the layer's activations over the
box (:func:`camscope.targets.detection.box_pool`), and the group is made of other
boxes (of other classes, say) embedded the same way:

    >>> import camscope, torch
    >>> from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn
    >>> from camscope.stats.reference_group import ReferenceGroup
    >>> model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=3,
    ...                                               min_size=128, max_size=128).eval()
    >>> images, layer = torch.rand(4, 3, 128, 128), "backbone.fpn.layer_blocks.1"
    >>> others = box_embeddings(model, images, torch.tensor([[0.0, 0.0, 64.0, 64.0]]).repeat(4, 1), layer)
    >>> e = camscope.explain(model, images[:1], method="diffcam", layer=layer,
    ...                      reference=ReferenceGroup.from_embeddings(others.double()),
    ...                      target=camscope.OnBox([32.0, 32.0, 96.0, 96.0]))
    >>> others.shape, e.maps.shape
    (torch.Size([4, 256]), torch.Size([1, 128, 128]))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.capture import LayerCapture, model_state, resolve_layers, to_channels_first, validate_inputs
from camscope.errors import CamscopeError
from camscope.targets.detection import box_pool

__all__ = ["box_embeddings"]


def box_embeddings(model: nn.Module, inputs: Tensor, boxes: Any, layer: str, **layout: Any) -> Tensor:
    """The embedding of one box per input at a layer: ``[N, K]``, the activations' mean over each box.

    Args:
        model: the network (a detector, a classifier or a backbone).
        inputs: ``[N, C, H, W]``.
        boxes: one ``xyxy`` box per input, ``[N, 4]``, in input pixels.
        layer: a layer whose output is a grid ``[N, K, h, w]`` covering the input.
        **layout: ``layout``, ``grid``, ``prefix_tokens`` as for :func:`camscope.explain` (token layers).
    """
    inputs = validate_inputs(model, inputs)
    box_tensor = torch.as_tensor(boxes, dtype=torch.float64)
    if box_tensor.shape != (inputs.shape[0], 4):
        raise CamscopeError(f"boxes must be one box per input, [{inputs.shape[0]}, 4], got {list(box_tensor.shape)}")
    layers = resolve_layers(model, layer)
    with model_state(model), torch.no_grad(), LayerCapture(layers, need_grad=False, model=model) as capture:
        model(inputs)
        capture.check_calls()
        activations = capture.activations[layers[0][0]]
    grid = to_channels_first(activations, inputs.shape, layer, model, **layout)
    if grid.ndim != 4 or grid.shape[0] != inputs.shape[0]:
        raise CamscopeError(
            f"layer {layer!r} gives {list(grid.shape)}: box embeddings need a grid [N, K, h, w] of a backbone layer"
        )
    return box_pool(grid, box_tensor, inputs.shape[2:])
