"""The small CNN of the shipped classifiers and of the image-text model's image tower.

Example:
    >>> import torch
    >>> model = SmallCNN(3, 4, [[8], [16]]).eval()
    >>> model(torch.rand(2, 3, 32, 32)).shape, model.cam_layer
    (torch.Size([2, 4]), 'features')
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from camscope.errors import CamscopeError

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Conv stages, global average pooling, a linear head.

    ``stages = [[24], [32, 32], [64, 64]]`` means: a 24-channel conv block, a
    2x2 max-pool, two 32-channel blocks, a max-pool, two 64-channel blocks. A
    block is ``Conv2d(3x3, padding 1, no bias) -> BatchNorm2d -> ReLU``; the
    first convolution has stride ``stem_stride``. The network's stride is
    ``stem_stride * 2 ** (len(stages) - 1)``.

    Args:
        in_channels: input channels (1 for digits, 3 for species).
        num_classes: outputs.
        stages: conv widths per stage.
        stem_stride: stride of the first convolution.

    Attributes:
        features: ``nn.Sequential`` of the stages; its output ``A`` (``[B, K, h, w]``,
            ``K = stages[-1][-1]``) is what the CAMs explain.
        pool: global average pooling.
        fc: ``nn.Linear(K, num_classes)``; ``logits = fc(mean_ij A_ij)``.
        cam_layer: ``"features"``, the layer name to pass to camscope.
    """

    cam_layer: str = "features"

    def __init__(
        self, in_channels: int, num_classes: int, stages: Sequence[Sequence[int]], stem_stride: int = 1
    ) -> None:
        super().__init__()
        if not stages or not all(stages):
            raise CamscopeError("stages must be a non-empty list of non-empty lists of widths, e.g. [[16], [32, 32]]")
        self.config = {
            "in_channels": int(in_channels),
            "num_classes": int(num_classes),
            "stages": [list(map(int, s)) for s in stages],
            "stem_stride": int(stem_stride),
        }
        layers: list[nn.Module] = []
        channels = in_channels
        for index, stage in enumerate(stages):
            if index:
                layers.append(nn.MaxPool2d(2))
            for position, width in enumerate(stage):
                stride = stem_stride if index == 0 and position == 0 else 1
                layers += [
                    nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))
