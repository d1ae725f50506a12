"""Small trained models shipped with camscope, and the data they were trained on.

Trained on a CPU by the scripts in ``scripts/`` (seeded; the command, the seed and the
per-epoch log are in :func:`model_info`) and shipped as safetensors in
``camscope/assets/models/`` (no pickle anywhere):

* ``"digits"``: scikit-learn's digits upsampled to 1x32x32 (:mod:`camscope.data.digits`).
* ``"species"``, ``"species-medium"``, ``"species-hard"``: the synthetic fine-grained species
  at 3x64x64 (:mod:`camscope.data.synthetic`) at the difficulty levels ``easy``, ``medium``
  and ``hard`` of :data:`camscope.data.synthetic.LEVELS` (:data:`SPECIES_LEVELS`): the same
  architecture, data sizes, seeds and recipe (15 epochs instead of 10 for the two harder levels);
  otherwise only the generator's knobs differ.
* ``"species-clip"`` (:data:`IMAGE_TEXT_MODELS`): an image-text model of the species
  (:class:`camscope.models.small_clip.SpeciesCLIP`), loaded by :func:`load_image_text_model`
  or, as a CLIP, by ``camscope.models.clip.load_clip("camscope:species-clip")``.

The classifiers are :class:`SmallCNN`: stages of 3x3 convolution + BatchNorm + ReLU with a
2x2 max-pool between stages, global average pooling and one linear layer, so
CAM, Grad-CAM and the rest apply at ``model.features`` (the output of the last
convolution block, after its ReLU; its name is :attr:`SmallCNN.cam_layer`), and
the class-activation map of class ``c`` is ``sum_k fc.weight[c, k] * A_k``.

Example:
    >>> import camscope
    >>> from camscope import zoo
    >>> model = zoo.load_small_model("digits")
    >>> test = zoo.dataset("digits", split="test")
    >>> explanation = camscope.explain(model, test.images[:4], method="gradcam", layer=model.cam_layer)
    >>> explanation.maps.shape
    torch.Size([4, 32, 32])
    >>> zoo.model_info("digits")["test_accuracy"] >= 0.95
    True
    >>> zoo.model_info("species-hard")["training"]["seed"]
    0
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
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
    "IMAGE_TEXT_KIND",
    "IMAGE_TEXT_MODELS",
    "MODEL_KIND",
    "SMALL_MODELS",
    "SPECIES_LEVELS",
    "EvaluationData",
    "SmallCNN",
    "dataset",
    "evaluate",
    "load_image_text_model",
    "load_small_model",
    "model_info",
    "model_path",
]

#: Names of the shipped small classifiers.
SMALL_MODELS: tuple[str, ...] = ("digits", "species", "species-medium", "species-hard")
#: The species classifier of each difficulty level of :data:`camscope.data.synthetic.LEVELS`.
SPECIES_LEVELS: dict[str, str] = {"easy": "species", "medium": "species-medium", "hard": "species-hard"}
#: Names of the shipped image-text models.
IMAGE_TEXT_MODELS: tuple[str, ...] = ("species-clip",)
#: ``kind`` of the classifiers' safetensors files.
MODEL_KIND = "camscope.small_model"
#: ``kind`` of the image-text models' files.
IMAGE_TEXT_KIND = "camscope.image_text_model"
_SCRIPTS = {"species-clip": "scripts/train_species_clip.py"}


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


@dataclass
class EvaluationData:
    """A model's data: ``images`` ``[N, C, H, W]`` in ``[0, 1]``, ``labels`` ``[N]``, ``class_names``,
    and for ``"species"`` the ground truth (``part_masks`` ``[N, P, H, W]``, ``boxes`` ``[N, 4]``, the
    :class:`~camscope.data.synthetic.SpeciesBatch` as ``batch`` and its generator as ``generator``)."""

    images: Tensor
    labels: Tensor
    class_names: list[str]
    part_masks: Tensor | None = None
    boxes: Tensor | None = None
    batch: Any = None
    generator: Any = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _check_name(name: str) -> str:
    if name not in SMALL_MODELS + IMAGE_TEXT_MODELS:
        raise CamscopeError(
            f"unknown small model {name!r}: choose one of {', '.join(SMALL_MODELS + IMAGE_TEXT_MODELS)}"
        )
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
    tensors, header = load_tensors(path, kind=IMAGE_TEXT_KIND if name in IMAGE_TEXT_MODELS else MODEL_KIND)
    architecture = header.get("architecture")
    if not isinstance(architecture, dict):
        raise CamscopeError(f"{path} has no model architecture in its metadata: reinstall camscope")
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise CamscopeError(f"{path} holds NaN or infinite weights ({key}): reinstall camscope")
    return tensors, json.dumps(header)


def model_info(name: str) -> dict[str, Any]:
    """The metadata stored with model ``name``.

    Keys include ``test_accuracy`` (on the whole test split of :func:`dataset`; for
    ``species-clip`` its zero-shot accuracy over the species' full descriptions, with
    ``test_scores`` beside), ``architecture`` (the constructor's arguments), ``data`` (how
    to rebuild the training and test data: generator config and seeds, or split seed),
    ``training`` (``command``, ``seed``, ``script``, epochs, optimiser, seconds, torch
    version and, for the models trained since it is kept, the per-epoch ``log``),
    ``class_names``, ``cam_layer`` and ``parameters``. The species classifiers also give
    their ``level`` and where their test errors go: ``error_rate_into_most_similar``
    (errors into the class's most similar class, per test image) and
    ``share_of_errors_into_most_similar``.
    """
    _, header = _load(_check_name(name))
    info = json.loads(header)
    training = info.setdefault("training", {})
    script = training.setdefault("script", _SCRIPTS.get(name, "scripts/train_small_models.py"))
    # Files written before the command was stored: the script's command for this model.
    training.setdefault("command", f"python {script}" + ("" if name in _SCRIPTS else f" --only {name}"))
    return info


def load_small_model(name: str, device: str | torch.device = "cpu") -> SmallCNN:
    """The shipped classifier ``name`` (one of :data:`SMALL_MODELS`), in eval mode.

    Weights are read with safetensors (no pickle). The model takes images as
    :func:`dataset` gives them (float32 in ``[0, 1]``).
    """
    if _check_name(name) in IMAGE_TEXT_MODELS:
        raise CamscopeError(f"{name!r} is an image-text model: load it with load_image_text_model({name!r})")
    tensors, header = _load(name)
    info = json.loads(header)
    try:
        model = SmallCNN(**info["architecture"])
    except (RuntimeError, TypeError, ValueError) as error:
        raise CamscopeError(f"{model_path(name)} does not match the SmallCNN architecture: {error}") from error
    check_file_tensors(tensors, weight_specs(model, exact=True), model_path(name))
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()


def load_image_text_model(name: str = "species-clip", device: str | torch.device = "cpu") -> Any:
    """The shipped image-text model ``name`` (a :class:`~camscope.models.small_clip.SpeciesCLIP`), in eval mode.

    Example:
        >>> from camscope.models import zoo
        >>> model = zoo.load_image_text_model()
        >>> model.encode_text(model.tokenizer(["red tail"])).shape
        torch.Size([1, 64])
    """
    from camscope.models.small_clip import SpeciesCLIP

    if _check_name(name) not in IMAGE_TEXT_MODELS:
        raise CamscopeError(f"{name!r} is a classifier: load it with load_small_model({name!r})")
    tensors, header = _load(name)
    info = json.loads(header)
    try:
        model = SpeciesCLIP(**info["architecture"])
    except (TypeError, ValueError) as error:
        raise CamscopeError(f"{model_path(name)} has an architecture SpeciesCLIP cannot build: {error}") from error
    check_file_tensors(tensors, weight_specs(model, exact=True), model_path(name))
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()


def dataset(name: str, split: str = "test", limit: int | None = None) -> EvaluationData:
    """The data model ``name`` was trained (``split="train"``) or tested (``"test"``) on.

    The data are rebuilt from the seeds in :func:`model_info`, so they are
    exactly those of the training script. ``limit`` keeps the first images
    (for species, only those are rendered).
    """
    info = model_info(_check_name(name))
    data = info["data"]
    if split not in ("train", "test"):
        raise CamscopeError(f"unknown split {split!r}: choose 'train' or 'test'")
    if name == "digits":
        from camscope.data.digits import load_digits_data

        digits = load_digits_data(split, size=data["size"], seed=data["seed"], test_fraction=data["test_fraction"])
        end = len(digits) if limit is None else limit
        return EvaluationData(images=digits.images[:end], labels=digits.labels[:end], class_names=digits.class_names)
    from camscope.data.synthetic import SyntheticSpecies

    species = SyntheticSpecies(**data["generator"])
    count = int(data[f"{split}_size"]) if limit is None else min(int(limit), int(data[f"{split}_size"]))
    batch = species.sample_split(int(data[f"{split}_size"]), int(data[f"{split}_seed"]), count)
    return EvaluationData(
        images=batch.images,
        labels=batch.labels,
        class_names=list(species.class_names),
        part_masks=batch.part_masks,
        boxes=batch.boxes,
        batch=batch,
        generator=species,
    )


def evaluate(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``images`` (no grad, eval mode)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start : start + batch_size])
            correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    return correct / max(1, int(labels.shape[0]))
