"""The shipped scene detector and segmenter, and the scenes they were trained and tested on.

Trained on a CPU by ``scripts/train_scene_models.py`` (seeded; the command and the
per-epoch log are in :func:`scene_model_info`) on :class:`camscope.data.scenes.SpeciesScenes`
and shipped as safetensors in ``camscope/assets/models/``:

* ``"scenes-detector"``: a :class:`~camscope.models.scene_models.SceneDetector` (torchvision's
  list of dicts), for :class:`camscope.BoxTarget`;
* ``"scenes-segmenter"``: a :class:`~camscope.models.scene_models.SceneSegmenter`
  (``{"out": logits}``), for :class:`camscope.SegmentationTarget`.

Both take 96 x 96 RGB scenes in ``[0, 1]`` (no normalisation) and explain at ``"features"``.
They are also ``camscope:scenes-detector`` and ``camscope:scenes-segmenter`` for
:func:`camscope.models.load_model` and the command line's ``--model``.

Example:
    >>> import camscope
    >>> from camscope.data.small_models import scene_data
    >>> from camscope.models.scene_zoo import load_scene_model
    >>> detector = load_scene_model("scenes-detector")
    >>> scenes = scene_data("scenes-detector", split="test", limit=1)
    >>> labels, boxes = scenes.objects(0)
    >>> e = camscope.explain(detector, scenes.images, layer="features",
    ...                      target=camscope.BoxTarget(labels[:1], boxes[:1]))
    >>> e.maps.shape
    torch.Size([1, 96, 96])
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

__all__ = [
    "SCENE_MODELS",
    "SCENE_MODEL_KIND",
    "load_scene_model",
    "scene_architecture",
    "scene_model_info",
]

#: Names of the shipped scene models.
SCENE_MODELS: tuple[str, ...] = ("scenes-detector", "scenes-segmenter")
#: ``kind`` of their safetensors files.
SCENE_MODEL_KIND = "camscope.scene_model"


def _check_name(name: str) -> str:
    if name not in SCENE_MODELS:
        raise CamscopeError(f"unknown scene model {name!r}: choose one of {', '.join(SCENE_MODELS)}")
    return name


def _path(name: str) -> Path:
    path = Path(str(resources.files("camscope") / "assets" / "models" / f"{name}.safetensors"))
    if not path.is_file():
        raise CamscopeError(
            f"the weights of the scene model {name!r} are missing ({path}): "
            "reinstall camscope or run scripts/train_scene_models.py"
        )
    return path


@cache
def _load(name: str) -> tuple[dict[str, Tensor], str]:
    from camscope.io import load_tensors

    path = _path(name)
    tensors, header = load_tensors(path, kind=SCENE_MODEL_KIND)
    if not isinstance(header.get("architecture"), dict) or header.get("model") not in (
        "SceneDetector",
        "SceneSegmenter",
    ):
        raise CamscopeError(f"{path} has no scene model architecture in its metadata: reinstall camscope")
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise CamscopeError(f"{path} holds NaN or infinite weights ({key}): reinstall camscope")
    return tensors, json.dumps(header)


def scene_model_info(name: str) -> dict[str, Any]:
    """The metadata stored with scene model ``name``.

    Keys include ``test`` (the detector's ``map50`` and per-class ``ap50``, the segmenter's
    ``miou`` over the species and per-class ``iou``, on the whole test split of
    :func:`camscope.data.small_models.scene_data`), ``architecture``, ``data`` (the generator's config and the splits'
    seeds and sizes), ``training`` (recipe, seconds, ``command``, per-epoch ``log``),
    ``class_names`` (``"background"`` first), ``cam_layer`` and ``parameters``.
    """
    _, header = _load(_check_name(name))
    return dict(json.loads(header))


def scene_architecture(name: str) -> nn.Module:
    """Scene model ``name`` with fresh (random) weights, as its training script builds it; ``class_names`` set."""
    from camscope.models.scene_models import SceneDetector, SceneSegmenter

    info = json.loads(_load(_check_name(name))[1])
    cls = SceneDetector if info["model"] == "SceneDetector" else SceneSegmenter
    try:
        model: nn.Module = cls(**info["architecture"])
    except (TypeError, ValueError) as error:
        raise CamscopeError(f"{_path(name)} has an architecture {cls.__name__} cannot build: {error}") from error
    model.class_names = list(info["class_names"])  # type: ignore[assignment]
    return model


def load_scene_model(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """The shipped scene model ``name`` (one of :data:`SCENE_MODELS`), in eval mode (weights read with safetensors)."""
    model = scene_architecture(name)
    try:
        model.load_state_dict(_load(name)[0], strict=True)
    except RuntimeError as error:
        raise CamscopeError(f"{_path(name)} does not match the {type(model).__name__} architecture: {error}") from error
    return model.to(device).eval()
