"""Small trained models shipped with camscope (their data: :mod:`camscope.data.small_models`).

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
    >>> from camscope.data.small_models import dataset
    >>> from camscope.models import zoo
    >>> model = zoo.load_small_model("digits")
    >>> test = dataset("digits", split="test")
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
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camscope.errors import CamscopeError
from camscope.io import check_file_tensors
from camscope.models.small_cnn import SmallCNN
from camscope.models.weights import weight_specs

__all__ = [
    "IMAGE_TEXT_KIND",
    "IMAGE_TEXT_MODELS",
    "MODEL_KIND",
    "SMALL_MODELS",
    "SPECIES_LEVELS",
    "SmallCNN",
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


def evaluate(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``images`` (no grad, eval mode)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start : start + batch_size])
            correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    return correct / max(1, int(labels.shape[0]))
