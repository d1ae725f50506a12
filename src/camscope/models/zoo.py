"""Small trained CNNs shipped with camscope (their data: :mod:`camscope.data.small_models`).

Two models, trained on a CPU by ``scripts/train_small_models.py`` (seeded) and
shipped as safetensors in ``camscope/assets/models/`` (no pickle anywhere):

* ``"digits"``: scikit-learn's digits upsampled to 1x32x32 (:mod:`camscope.data.digits`).
* ``"species"``: the synthetic fine-grained species at 3x64x64 (:mod:`camscope.data.synthetic`).

Both are :class:`SmallCNN`: stages of 3x3 convolution + BatchNorm + ReLU with a
2x2 max-pool between stages, global average pooling and one linear layer, so
CAM, Grad-CAM and the rest apply at ``model.features`` (the output of the last
convolution block, after its ReLU; its name is :attr:`SmallCNN.cam_layer`), and
the class-activation map of class ``c`` is ``sum_k fc.weight[c, k] * A_k``.

Example:
    >>> import camscope
    >>> from camscope.data.small_models import dataset
    >>> from camscope.models import zoo
    >>> model = zoo.load_small_model("digits")
    >>> test = dataset("digits", split="test")
    >>> explanation = camscope.explain(model, test.images[:4], method="gradcam", layer=model.cam_layer)
    >>> explanation.maps.shape
    torch.Size([4, 32, 32])
    >>> zoo.model_info("digits")["test_accuracy"] >= 0.95
    True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camscope.errors import CamscopeError
from camscope.io import check_file_tensors
from camscope.models.weights import weight_specs

__all__ = [
    "SMALL_MODELS",
    "SmallCNN",
    "evaluate",
    "load_small_model",
    "model_info",
    "model_path",
]

#: Names of the shipped small models.
SMALL_MODELS: tuple[str, ...] = ("digits", "species")
#: ``kind`` of the safetensors files.
MODEL_KIND = "camscope.small_model"


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


def _check_name(name: str) -> str:
    if name not in SMALL_MODELS:
        raise CamscopeError(f"unknown small model {name!r}: choose one of {', '.join(SMALL_MODELS)}")
    return name


def model_path(name: str) -> Path:
    """Path of the shipped weights of model ``name``."""
    _check_name(name)
    path = Path(str(resources.files("camscope") / "assets" / "models" / f"{name}.safetensors"))
    if not path.is_file():
        raise CamscopeError(
            f"the weights of the small model {name!r} are missing ({path}): "
            "reinstall camscope or run scripts/train_small_models.py"
        )
    return path


@cache
def _load(name: str) -> tuple[dict[str, Tensor], str]:
    from camscope.io import load_tensors

    path = model_path(name)
    tensors, header = load_tensors(path, kind=MODEL_KIND)
    architecture = header.get("architecture")
    if not isinstance(architecture, dict):
        raise CamscopeError(f"{path} has no model architecture in its metadata: reinstall camscope")
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise CamscopeError(f"{path} holds NaN or infinite weights ({key}): reinstall camscope")
    return tensors, json.dumps(header)


def model_info(name: str) -> dict[str, Any]:
    """The metadata stored with model ``name``.

    Keys include ``test_accuracy`` (on the whole test split of :func:`dataset`),
    ``architecture`` (the :class:`SmallCNN` arguments), ``data`` (how to rebuild
    the training and test data: generator config and seeds, or split seed),
    ``training`` (epochs, optimiser, seconds, torch version), ``class_names``,
    ``cam_layer`` and ``parameters``.
    """
    _, header = _load(_check_name(name))
    return json.loads(header)


def load_small_model(name: str, device: str | torch.device = "cpu") -> SmallCNN:
    """The shipped model ``name`` (``"digits"`` or ``"species"``), in eval mode.

    Weights are read with safetensors (no pickle). The model takes images as
    :func:`dataset` gives them (float32 in ``[0, 1]``).
    """
    tensors, header = _load(_check_name(name))
    info = json.loads(header)
    try:
        model = SmallCNN(**info["architecture"])
    except (RuntimeError, TypeError, ValueError) as error:
        raise CamscopeError(f"{model_path(name)} does not match the SmallCNN architecture: {error}") from error
    check_file_tensors(tensors, weight_specs(model, exact=True), model_path(name))
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()


def evaluate(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``images`` (no grad, eval mode)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start : start + batch_size])
            correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    return correct / max(1, int(labels.shape[0]))
