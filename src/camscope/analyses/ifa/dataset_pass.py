"""The integrated feature analysis of a dataset: :func:`analyze`, one pass that builds an :class:`Analysis`."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from camscope.analyses.ifa.analysis import Analysis
from camscope.analyses.ifa.batch import BatchPass
from camscope.engine.capture import default_layer, resolve_layers, validate_inputs
from camscope.engine.explainer import Explainer
from camscope.engine.method import CamMethod
from camscope.errors import CamscopeError
from camscope.passes.batches import iter_batches, progress
from camscope.targets.base import ClassTarget

__all__ = ["analyze"]


def _dataset_length(data: Any, batch_size: int) -> int | None:
    try:
        if isinstance(data, torch.utils.data.DataLoader):
            return len(data)
        if isinstance(data, (str, os.PathLike)):
            return None
        from camscope.data.folders import ImageFolderData

        if isinstance(data, ImageFolderData):
            return math.ceil(len(data) / batch_size)
        if isinstance(data, Tensor):
            return math.ceil(len(data) / batch_size)
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def analyze(
    model: nn.Module,
    data: Any,
    method: str | CamMethod = "gradcam",
    layer: Any = None,
    *,
    explain: str = "predicted",
    percentiles: tuple[float, float] = (10, 90),
    all_classes: bool = False,
    class_chunk: int | None = None,
    profiles: bool = False,
    batch_size: int = 32,
    size: int = 224,
    device: torch.device | str | None = None,
    bins: int = 16384,
    show_progress: bool | None = None,
    eval_mode: bool = True,
    layout: str = "auto",
    grid: tuple[int, int] | None = None,
    prefix_tokens: int | None = None,
    **options: Any,
) -> Analysis:
    """One pass of integrated feature analysis over a dataset.

    Per batch: one forward pass and one backward down to the layer (two
    gradients in one batched backward when the explained class is the predicted
    one and a sample's label differs), then, in torch on the model's device:

    * the raw map ``M = sum_k w_k A_k`` of the explained class feeds the quantile
      sketches (all values; per-image maxima and minima) and the moments;
    * the contributions ``sum_ij w_k A_k^ij`` of each sample's true class (its
      predicted class when it has no label: counted in ``stand_ins``) are added to
      the column of that class (Eq. 4; the average over each class's samples, not
      the authors' code's last sample per class);
    * with ``all_classes``, the contributions of every class for every sample
      (Eq. 3): the gradients of chunks of classes come from one batched backward
      each (``is_grads_batched``), so 1000 classes cost about ``1000 / chunk``
      backward passes through the layers after the chosen one, not 1000 forward
      passes. Methods that need extra forward passes (Smooth Grad-CAM++,
      perturbation methods) fall back to one explanation per class.

    Memory does not depend on the dataset size (unless ``profiles``), and every
    part merges exactly across shards (:meth:`Analysis.merge`).

    Args:
        model: a classifier returning ``[B, C]`` scores.
        data: a DataLoader or iterable of ``(inputs, labels)`` batches (labels -1 for
            none), input tensors, one tensor, or an image folder (``root/CLASS/*``;
            classes by folder order).
        method: a CAM method with channel weights (all gradient methods, CAM,
            Score-CAM); methods without weights give the distribution only.
        layer: the layer (one); None picks the default.
        explain: ``"predicted"`` (the paper's default) or ``"true"``: which class the
            distribution of the values (and so the scale) is collected for.
        percentiles: default (low, high) percentiles of :meth:`Analysis.scale`.
        all_classes: also compute Eq. 3 (every class for every sample).
        class_chunk: classes per batched backward for Eq. 3 (default: by memory).
        profiles: keep each sample's Eq. 4 contributions ``[N, K]`` (outliers).
        batch_size, size: batching and image size for folders and tensors.
        device: where to run (default: the model's device).
        bins: cells of the quantile sketches (error below ``2 range / (bins - 2)``).
        show_progress: progress bar (default: when stderr is a terminal).
        eval_mode, layout, grid, prefix_tokens, **options: as for :class:`camscope.Explainer`.

    Returns:
        An :class:`Analysis`.
    """
    if explain not in ("predicted", "true"):
        raise CamscopeError(f"explain must be 'predicted' or 'true', got {explain!r}")
    low, high = (float(p) for p in percentiles)
    if not 0 <= low < high <= 100:
        raise CamscopeError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles}")
    if batch_size < 1:
        raise CamscopeError(f"batch_size must be at least 1, got {batch_size}")
    if not isinstance(model, nn.Module):
        raise CamscopeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    device = torch.device(device) if device is not None else _model_device(model)
    explainer = Explainer(
        model,
        layer=layer,
        method=method,
        eval_mode=eval_mode,
        layout=layout,
        grid=grid,
        prefix_tokens=prefix_tokens,
        **options,
    )
    prepared = (
        explainer.method.prepare_target(ClassTarget(None), model)
        if hasattr(explainer.method, "prepare_target")
        else None
    )
    if prepared is not None and not isinstance(prepared, ClassTarget):
        raise CamscopeError(
            f"method {explainer.method.name!r} explains a comparison of classes, not one class: "
            "integrated feature analysis needs a single-class method such as gradcam"
        )
    analysis: Analysis | None = None
    runner: BatchPass | None = None
    batches: Iterable[tuple[Tensor, Tensor]] = iter_batches(data, batch_size=batch_size, size=size)
    total = _dataset_length(data, batch_size)
    for inputs, labels in progress(batches, "analyzing", total=total, enabled=show_progress):
        inputs = validate_inputs(model, inputs.to(device))
        if runner is None:
            chosen = layer if layer is not None else default_layer(model, inputs)
            resolved = resolve_layers(model, chosen)
            if len(resolved) != 1:
                raise CamscopeError("analyze works on one layer: pass a single layer name")
            name, module = resolved[0]
            runner = BatchPass(explainer, name, module, all_classes, class_chunk)
        result = runner.run(inputs, labels.cpu(), explain)
        if analysis is None:
            analysis = Analysis(
                method=explainer.method.name,
                layer=runner.name,
                num_features=result.num_features,
                num_classes=result.num_classes,
                explain=explain,
                percentiles=(low, high),
                all_classes=all_classes,
                profiles=profiles,
                bins=bins,
                device=device,
                info={"spatial": list(result.raw.shape[1:]), "input": list(inputs.shape[1:])},
            )
        analysis.update(result)
    if analysis is None:
        raise CamscopeError("the dataset gave no batches: check the folder or loader")
    return analysis.finish()
