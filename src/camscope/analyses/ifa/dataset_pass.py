"""The integrated feature analysis of a dataset: :func:`analyze`, one pass that builds an :class:`Analysis`.

The pass is a :class:`camscope.passes.engine.DatasetPass`: batches on the model's
device, one progress bar; each batch goes through a
:class:`~camscope.analyses.ifa.batch.BatchPass` and its result into
:meth:`Analysis.update`.

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
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn

from camscope.analyses.ifa.analysis import Analysis
from camscope.analyses.ifa.batch import BatchPass, BatchResult
from camscope.analyses.ifa.methods import analysis_methods
from camscope.engine.capture import default_layer, resolve_layers, validate_inputs
from camscope.engine.explainer import Explainer
from camscope.engine.method import CamMethod
from camscope.errors import CamscopeError
from camscope.models.fingerprint import model_fingerprint
from camscope.passes.engine import DatasetPass
from camscope.targets.base import ClassTarget

__all__ = ["analyze"]


def _progress_keyword(progress: bool | None, show_progress: bool | None) -> bool | None:
    """``progress``, or the deprecated ``show_progress`` when only that one was given."""
    if show_progress is None:
        return progress
    warnings.warn("analyze(show_progress=...) is deprecated: use progress=...", DeprecationWarning, stacklevel=3)
    if progress is not None and progress != show_progress:
        raise CamscopeError("give progress= or its deprecated name show_progress=, not both with different values")
    return show_progress


def _check_arguments(explain: str, percentiles: tuple[float, float]) -> tuple[float, float]:
    """The (low, high) percentiles as floats, after checking ``explain`` and them."""
    if explain not in ("predicted", "true"):
        raise CamscopeError(f"explain must be 'predicted' or 'true', got {explain!r}")
    low, high = (float(p) for p in percentiles)
    if not 0 <= low < high <= 100:
        raise CamscopeError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles}")
    return low, high


def _check_method(explainer: Explainer) -> None:
    """Raise for a method that reads no map of the layer (attention) or explains a comparison of classes."""
    method = explainer.method
    if not method.reads_layer:
        raise CamscopeError(
            f"method {method.name!r} reads the attention of the transformer's blocks, not a map of the layer: "
            f"integrated feature analysis needs a CAM of one layer, such as {', '.join(analysis_methods()[:4])}"
        )
    prepared = method.prepare_target(ClassTarget(None), explainer.model) if hasattr(method, "prepare_target") else None
    if prepared is not None and not isinstance(prepared, ClassTarget):
        raise CamscopeError(
            f"method {method.name!r} explains a comparison of classes, not one class: "
            "integrated feature analysis needs a single-class method such as gradcam"
        )


def _batch_pass(
    explainer: Explainer, layer: Any, inputs: torch.Tensor, all_classes: bool, chunk: int | None
) -> BatchPass:
    """The per-batch computation at the one chosen layer (the default layer for ``layer=None``)."""
    model = explainer.model
    resolved = resolve_layers(model, layer if layer is not None else default_layer(model, inputs))
    if len(resolved) != 1:
        raise CamscopeError("analyze works on one layer: pass a single layer name")
    name, module = resolved[0]
    return BatchPass(explainer, name, module, all_classes, chunk)


def _folder(model: nn.Module, root: str | os.PathLike[str], size: int) -> Any:
    """An image folder labelled as everywhere: by the model's classes when every class folder names one, else 0..C-1."""
    from camscope.data.folders import ImageFolderData, label_by_model_classes
    from camscope.engine.capture import model_state, output_tensor

    folder = ImageFolderData(root, size=size)
    if folder.class_names:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad(), model_state(model):
            logits = output_tensor(model(torch.zeros(1, 3, size, size, device=device)))
        if logits.ndim == 2:
            label_by_model_classes(folder, logits.shape[1])
    return folder


def _dataset_pass(model: nn.Module, data: Any, identity: dict[str, Any], options: dict[str, Any]) -> DatasetPass:
    """The pass over ``data``: checkpoints name the model's fingerprint and ``identity``; ranks merge analyses."""
    return DatasetPass(
        model,
        data,
        description="analyzing",
        restore=lambda state, _device: Analysis.from_state_dict(state),
        identity=lambda: {"model": model_fingerprint(model), **identity},
        **options,
    )


def _collect(
    batches: DatasetPass, explainer: Explainer, layer: Any, class_chunk: int | None, settings: dict[str, Any]
) -> Analysis | None:
    """The dataset pass: each batch through a :class:`BatchPass` into the :class:`Analysis` (None without batches)."""
    model, explain, all_classes = explainer.model, settings["explain"], settings["all_classes"]
    analysis: Analysis | None = batches.resumed
    runner: BatchPass | None = None
    for batch in batches.tracking(lambda: analysis):  # noqa: B023 (the checkpoint saves the current analysis)
        inputs = validate_inputs(model, batch.inputs)
        if runner is None:
            runner = _batch_pass(explainer, layer, inputs, all_classes, class_chunk)
        result: BatchResult = runner.run(inputs, batch.labels, explain)
        if analysis is None:
            analysis = Analysis(
                method=explainer.method.name,
                layer=runner.name,
                num_features=result.num_features,
                num_classes=result.num_classes,
                device=batches.device,
                info={"spatial": list(result.raw.shape[1:]), "input": list(inputs.shape[1:])},
                **settings,
            )
        analysis.update(result, start=batch.start)
    return analysis


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
    progress: bool | None = None,
    show_progress: bool | None = None,
    eval_mode: bool = True,
    layout: str = "auto",
    grid: tuple[int, int] | None = None,
    prefix_tokens: int | None = None,
    distributed: bool | None = None,
    workers: int = 0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    precision: str | None = None,
    **options: Any,
) -> Analysis:
    """One pass of integrated feature analysis over a dataset.

    Per batch, one forward and one backward down to the layer: the explained
    class's raw map ``M = sum_k w_k A_k`` feeds the quantile sketches and moments,
    each sample's true-class contributions ``sum_ij w_k A_k^ij`` the Eq. 4 matrix
    and, with ``all_classes``, every class's the Eq. 3 matrix (details: the module).

    Memory does not depend on the dataset size (unless ``profiles``), and every
    part merges exactly across shards (:meth:`Analysis.merge`).

    Args:
        model: a classifier returning ``[B, C]`` scores.
        data: a DataLoader or iterable of ``(inputs, labels)`` batches (labels -1 for
            none), input tensors, one tensor, a map-style torch dataset of
            ``(image, label)`` samples, or an image folder (``root/CLASS/*``: labelled
            by the model's classes when every folder names one, such as ``281`` or
            ``tabby``, else 0..C-1 in folder-name order; see
            :func:`camscope.data.folders.label_by_model_classes`).
        method: a CAM method with channel weights
            (:func:`~camscope.analyses.ifa.methods.analysis_methods`: the gradient
            methods, CAM, Score-CAM, ...); methods whose maps are of the layer but
            without weights (Eigen-CAM) give the distribution only; the attention
            methods and maps of another resolution (FullGrad) are refused.
        layer: the layer (one); None picks the default.
        explain: ``"predicted"`` (the paper's default) or ``"true"``: which class the
            distribution of the values (and so the scale) is collected for.
        percentiles: default (low, high) percentiles of :meth:`Analysis.scale`.
        all_classes: also compute Eq. 3 (every class for every sample).
        class_chunk: classes per batched backward for Eq. 3 (default: by memory).
        profiles: keep each sample's Eq. 4 contributions ``[N, K]`` (outliers).
        batch_size: batch size for folders and tensors (a DataLoader keeps its own).
        size: image size for folders.
        device: where to run (default: the model's device).
        bins: cells of the quantile sketches (error below ``2 range / (bins - 2)``).
        progress: progress bar (default: when stderr is a terminal).
        show_progress: deprecated name of ``progress``.
        eval_mode: as for :class:`camscope.Explainer`.
        layout: as for :class:`camscope.Explainer`.
        grid: as for :class:`camscope.Explainer`.
        prefix_tokens: as for :class:`camscope.Explainer`.
        distributed: split the pass over a ``torch.distributed`` process group (None: when one is
            initialised; every rank returns the whole analysis; see :class:`camscope.passes.engine.DatasetPass`).
        workers: worker processes that load folders and map-style datasets (0: in this process).
        checkpoint: a file for the pass's state (one per rank when distributed).
        checkpoint_every: save the checkpoint every this many batches (default: only at the end).
        resume: continue from ``checkpoint`` when the file exists.
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: the model's forward runs under
            ``torch.autocast`` (:mod:`camscope.passes.precision`).
        **options: the method's options, as for :class:`camscope.Explainer`.

    Returns:
        An :class:`Analysis`.

    Raises:
        CamscopeError: for bad arguments, a method that compares classes, labels
            out of the model's range, or a dataset without batches.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> data = [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]))]
        >>> analysis = analyze(model, data, layer="0", progress=False)
        >>> analysis.importance.shape, analysis.n_samples
        (torch.Size([4, 2]), 4)
    """
    progress = _progress_keyword(progress, show_progress)
    low, high = _check_arguments(explain, percentiles)
    identity: dict[str, Any] = dict(method=method if isinstance(method, str) else type(method).__name__)
    identity["layer"] = repr(layer)
    identity.update(explain=explain, all_classes=all_classes, profiles=profiles, bins=bins)
    passing: dict[str, Any] = dict(batch_size=batch_size, size=size, device=device, progress=progress)
    passing.update(distributed=distributed, workers=workers, checkpoint=checkpoint)
    passing.update(checkpoint_every=checkpoint_every, resume=resume, precision=precision)
    if isinstance(data, (str, os.PathLike)):
        data = _folder(model, data, size)
    batches = _dataset_pass(model, data, identity, passing)
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
    _check_method(explainer)
    settings = dict(explain=explain, percentiles=(low, high), all_classes=all_classes, profiles=profiles, bins=bins)
    analysis = _collect(batches, explainer, layer, class_chunk, settings)
    if analysis is not None:
        analysis.finish()  # profiles gathered before the ranks' analyses merge
    merged: Analysis = batches.finish(analysis, "an analysis")
    return merged.finish()
