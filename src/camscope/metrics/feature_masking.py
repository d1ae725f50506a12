"""Accuracy with only some features (IFA, Li et al., Sec. III-C).

The forward paths of the unselected channels are blocked inside the network: a
forward hook on the layer multiplies its output by a channel mask, and the
model's accuracy is measured with only the kept features. Unlike masking the
input, this leaves the input distribution intact.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from camscope.metrics import feature_masking_accuracy
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    >>> data = [(torch.randn(8, 3, 16, 16), torch.randint(0, 2, (8,)))]
    >>> keep = torch.tensor([True, True, False, False])
    >>> results = feature_masking_accuracy(model, data, "0", {"all": None, "kept": keep, "rest": ~keep})
    >>> sorted(results)
    ['all', 'kept', 'rest']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.capture import (
    model_state,
    output_tensor,
    register_owned_hook,
    resolve_layers,
    split_output,
    validate_inputs,
)
from camscope.errors import CamscopeError
from camscope.metrics.common import progress_option
from camscope.models.fingerprint import model_fingerprint
from camscope.passes.engine import DatasetPass

__all__ = ["MaskingCounts", "feature_masking_accuracy"]


def _channel_axis(output: Tensor, channels: int, layout: str) -> int:
    if layout == "nchw":
        return 1
    if layout in ("nhwc", "tokens"):
        return output.ndim - 1
    if layout != "auto":
        raise CamscopeError(f"unknown layout {layout!r}: use 'auto', 'nchw', 'nhwc' or 'tokens'")
    if output.ndim in (4, 5) and output.shape[1] == channels:
        return 1
    if output.shape[-1] == channels:
        return output.ndim - 1
    raise CamscopeError(
        f"the mask has {channels} channels but the layer outputs shape {list(output.shape)}: "
        "give a mask with one entry per channel of this layer"
    )


class _ChannelMask:
    """A forward hook that multiplies a layer's output by a channel mask (None: leave it)."""

    def __init__(self, layout: str) -> None:
        self.mask: Tensor | None = None
        self.layout = layout

    def __call__(self, _module: nn.Module, _inputs: Any, output: Any) -> Any:
        if self.mask is None:
            return None
        tensor, rebuild = split_output(output, "masked layer")
        axis = _channel_axis(tensor, self.mask.numel(), self.layout)
        shape = [1] * tensor.ndim
        shape[axis] = -1
        return rebuild(tensor * self.mask.to(device=tensor.device, dtype=tensor.dtype).reshape(shape))


def _as_mask(keep: Any, name: str) -> Tensor | None:
    if keep is None:
        return None
    mask = torch.as_tensor(keep)
    if mask.ndim == 2:
        # Per-class masks (Analysis.principal_features()): the model must decide without knowing
        # the class, so the union of the classes' features is kept.
        mask = mask.bool().any(dim=0) if mask.dtype == torch.bool else mask.amax(dim=0)
    if mask.ndim != 1:
        raise CamscopeError(f"feature mask {name!r} must have shape [K] (or [C, K]), got {list(mask.shape)}")
    return mask.float()


class MaskingCounts:
    """Labelled samples and correct predictions per mask: the mergeable accumulator of a feature-masking pass.

    Example:
        >>> counts = MaskingCounts(["all"])
        >>> counts.update(4, {"all": 3})
        >>> counts.merge(MaskingCounts(["all"]).load_state_dict({"total": 2, "correct": {"all": 1}})).correct
        {'all': 4}
    """

    def __init__(self, names: list[str]) -> None:
        self.total = 0
        self.correct = dict.fromkeys(names, 0)

    def update(self, labelled: int, correct: Mapping[str, int]) -> None:
        """Add a batch: its labelled samples and the correct predictions under each mask."""
        self.total += labelled
        for name, count in correct.items():
            self.correct[name] += count

    def merge(self, other: MaskingCounts) -> MaskingCounts:
        """Add the counts of a pass over other data."""
        self.update(other.total, other.correct)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "correct": dict(self.correct)}

    def load_state_dict(self, state: dict[str, Any]) -> MaskingCounts:
        self.total = int(state["total"])
        self.correct = {str(k): int(v) for k, v in state["correct"].items()}
        return self


def feature_masking_accuracy(
    model: nn.Module,
    data: Any,
    layer: Any,
    keep: Any = None,
    *,
    batch_size: int = 32,
    size: int = 224,
    device: torch.device | str | None = None,
    layout: str = "auto",
    progress: bool | None = None,
    show_progress: bool | None = None,
    distributed: bool | None = None,
    workers: int = 0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    precision: str | None = None,
) -> float | dict[str, float]:
    """Top-1 accuracy with only the kept channels of a layer.

    Args:
        model: the classifier.
        data: labelled batches ``(inputs, labels)`` (a DataLoader, an iterable, or
            an image folder in ImageFolder layout); unlabelled samples (-1) are skipped.
        layer: the layer whose output channels are masked.
        keep: a channel mask ``[K]`` (bool or float; zeroed channels are blocked),
            per-class masks ``[C, K]`` (their union is kept: at inference the class
            is unknown), None (all features), or a dict ``name -> mask`` to measure
            several masks in one pass over the data (e.g. ``{"all": None,
            "principal": m, "non-principal": ~m}``).
        batch_size: batch size for folders and tensors (a DataLoader keeps its own).
        size: image size for folders.
        device: where the batches go (default: the model's device).
        layout: where the channel axis is (``"auto"``: axis 1 of a grid, else the last axis).
        progress: the progress bar (None: when stderr is a terminal).
        show_progress: deprecated name of ``progress``.
        distributed: split the pass over a ``torch.distributed`` process group (None: when one is
            initialised; every rank returns the whole accuracy; see :class:`camscope.passes.engine.DatasetPass`).
        workers: worker processes that load folders and map-style datasets (0: in this process).
        checkpoint: a file for the pass's state (one per rank when distributed).
        checkpoint_every: save the checkpoint every this many batches (default: only at the end).
        resume: continue from ``checkpoint`` when the file exists.
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: the model's forward runs under
            ``torch.autocast`` (:mod:`camscope.passes.precision`).

    Returns:
        The accuracy, or a dict of accuracies for a dict of masks.
    """
    progress = progress_option(progress, show_progress, "feature_masking_accuracy")
    named = dict(keep) if isinstance(keep, Mapping) else {"accuracy": keep}
    masks = {name: _as_mask(value, name) for name, value in named.items()}
    resolved = resolve_layers(model, layer)
    if len(resolved) != 1:
        raise CamscopeError("feature masking works on one layer: pass a single layer name")
    module = resolved[0][1]
    batches = DatasetPass(
        model,
        data,
        batch_size=batch_size,
        size=size,
        device=device,
        progress=progress,
        description="feature masking",
        restore=lambda state, _device: MaskingCounts([]).load_state_dict(state),
        identity=lambda: {"model": model_fingerprint(model), "layer": repr(layer), "masks": sorted(masks)},
        distributed=distributed,
        workers=workers,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        precision=precision,
    )
    masks = {name: None if mask is None else mask.to(batches.device) for name, mask in masks.items()}
    hook = _ChannelMask(layout)
    resumed = batches.resumed
    counts = resumed if resumed is not None else MaskingCounts(list(masks))
    with model_state(model, True), torch.no_grad():
        handle = register_owned_hook(module, hook)
        try:
            for batch in batches.tracking(lambda: counts):
                inputs, labels = validate_inputs(model, batch.inputs), batch.labels
                labelled = labels >= 0
                correct = {}
                for name, mask in masks.items():
                    hook.mask = mask
                    predictions = output_tensor(model(inputs)).argmax(dim=1)
                    correct[name] = int(((predictions == labels) & labelled).sum())
                counts.update(int(labelled.sum()), correct)
        finally:
            handle.remove()
    counts = batches.finish(counts, "feature masking")
    if counts.total == 0:
        raise CamscopeError("feature_masking_accuracy needs labelled data: no sample had a label")
    accuracies = {name: count / counts.total for name, count in counts.correct.items()}
    return accuracies if isinstance(keep, Mapping) else accuracies["accuracy"]
