"""Shared pieces of the metrics: the result type, map and target handling, batched perturbed passes.

Conventions (every metric in :mod:`camscope.metrics` follows them):

* **Inputs.** ``maps`` is a ``[B, H, W]`` tensor (``[B, 1, H, W]`` is accepted), or an
  :class:`~camscope.engine.explainer.Explanation` (its ``maps`` are used, and its resolved target
  when ``target`` is None). Maps at another resolution than the inputs are resized
  bilinearly (``align_corners=False``), as :func:`camscope.engine.explainer.upsample` does.
* **Targets.** ``target`` accepts what :func:`camscope.explain` accepts (None: the
  predicted class; an int; one int per sample; a :class:`~camscope.targets.base.Target`). It
  is resolved once on the clean logits, and that resolved target scores every
  perturbed copy.
* **Scores.** ``score="probability"`` (the default of the papers) is the softmax
  probability of the target's class; ``score="logit"`` (alias ``"target"``) is the
  target's own score (``y_c``, or ``y_c - gamma * y_d`` for a
  :class:`~camscope.targets.base.ClassDifference`); a callable ``score(outputs, target) -> [B]``
  is used as given.
* **Results.** Every metric returns a :class:`MetricResult`: per-sample values
  ``[B]`` under named keys, per-sample curves ``[B, T]`` with their abscissae ``[T]``,
  the protocol's parameters, and :meth:`MetricResult.summary` for dataset means.
  Results of several batches are joined with :meth:`MetricResult.cat`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.engine.capture import model_state, output_tensor, validate_inputs
from camscope.engine.explainer import Explanation, normalize_maps
from camscope.errors import CamscopeError
from camscope.metrics.batching import BatchSize, PerturbedBatches
from camscope.targets.base import FrozenTarget, Target, as_target

__all__ = [
    "FrozenTarget",
    "MetricResult",
    "Scorer",
    "SubstrateSpec",
    "check_fractions",
    "clean_pass",
    "make_scorer",
    "pixel_count",
    "prepare_maps",
    "progress_option",
    "rank_pixels",
    "rise_blur",
    "rise_kernel",
    "score_perturbed",
    "substrate",
]


@dataclass
class MetricResult:
    """Per-sample values (and curves) of one metric on a batch or a dataset.

    Attributes:
        name: the metric's name (``"deletion"``, ``"road"``, ...).
        values: per-sample values ``[B]`` by key; ``headline`` names the main one.
            NaN marks a sample for which the value is undefined (for instance an
            empty ground-truth mask); :meth:`summary` skips NaNs.
        curves: per-sample curves ``[B, T]`` by key.
        steps: the abscissa ``[T]`` of each curve (same keys as ``curves``).
        headline: the key of the main value.
        higher_is_better: direction of each value, for tables.
        params: the protocol's parameters as used.
        auc_of_mean: summary keys computed as the trapezoid area under the
            NaN-mean of a curve (``{"auc_of_mean_curve": "curve"}`` for deletion).

    Example:
        >>> import torch
        >>> from camscope.metrics import MetricResult
        >>> r = MetricResult("demo", {"v": torch.tensor([1.0, float("nan"), 3.0])}, headline="v")
        >>> r.summary()
        {'v': 2.0, 'n': 3}
    """

    name: str
    values: dict[str, Tensor]
    curves: dict[str, Tensor] = field(default_factory=dict)
    steps: dict[str, Tensor] = field(default_factory=dict)
    headline: str = ""
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    auc_of_mean: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.headline:
            self.headline = next(iter(self.values), "")

    @property
    def value(self) -> Tensor:
        """The headline per-sample values ``[B]``."""
        return self.values[self.headline]

    def __getitem__(self, key: str) -> Tensor:
        if key in self.values:
            return self.values[key]
        if key in self.curves:
            return self.curves[key]
        raise KeyError(
            f"{self.name} has no value or curve {key!r}; values: {list(self.values)}, curves: {list(self.curves)}"
        )

    def __len__(self) -> int:
        return int(self.value.shape[0]) if self.values else 0

    def mean_curves(self) -> dict[str, Tensor]:
        """The NaN-mean over samples of each curve, ``[T]``."""
        return {key: _nanmean(curve.float(), dim=0) for key, curve in self.curves.items()}

    def summary(self) -> dict[str, float]:
        """Dataset means: the NaN-mean of every value, the sample count, and the areas under mean curves."""
        out: dict[str, float] = {key: float(_nanmean(value.double(), dim=0)) for key, value in self.values.items()}
        out["n"] = len(self)
        for key, curve in self.auc_of_mean.items():
            mean = _nanmean(self.curves[curve].double(), dim=0)
            out[key] = float(torch.trapezoid(mean, self.steps[curve].double().to(mean.device)))
        return out

    def cpu(self) -> MetricResult:
        """A copy with every tensor on the CPU."""
        return replace(
            self,
            values={k: v.detach().cpu() for k, v in self.values.items()},
            curves={k: v.detach().cpu() for k, v in self.curves.items()},
            steps={k: v.detach().cpu() for k, v in self.steps.items()},
        )

    @classmethod
    def cat(cls, results: Sequence[MetricResult]) -> MetricResult:
        """Join the results of several batches of the same metric and protocol."""
        if not results:
            raise CamscopeError("MetricResult.cat needs at least one result")
        first = results[0]
        for other in results[1:]:
            if (
                other.name != first.name
                or set(other.values) != set(first.values)
                or set(other.curves) != set(first.curves)
            ):
                raise CamscopeError(f"cannot join results of {first.name!r} and {other.name!r}: their keys differ")
        return replace(
            first,
            values={k: torch.cat([r.values[k].detach().cpu() for r in results]) for k in first.values},
            curves={k: torch.cat([r.curves[k].detach().cpu() for r in results]) for k in first.curves},
            steps={k: v.detach().cpu() for k, v in first.steps.items()},
        )

    def state_dict(self) -> dict[str, Any]:
        """Tensors (on the CPU) and plain values that :meth:`from_state_dict` turns back into this result."""
        return {
            "name": self.name,
            "values": {k: v.detach().cpu() for k, v in self.values.items()},
            "curves": {k: v.detach().cpu() for k, v in self.curves.items()},
            "steps": {k: v.detach().cpu() for k, v in self.steps.items()},
            "headline": self.headline,
            "higher_is_better": dict(self.higher_is_better),
            "params": dict(self.params),
            "auc_of_mean": dict(self.auc_of_mean),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> MetricResult:
        """The result that :meth:`state_dict` described."""
        return cls(
            name=state["name"],
            values=dict(state["values"]),
            curves=dict(state["curves"]),
            steps=dict(state["steps"]),
            headline=state["headline"],
            higher_is_better=dict(state["higher_is_better"]),
            params=dict(state["params"]),
            auc_of_mean=dict(state["auc_of_mean"]),
        )


def _nanmean(tensor: Tensor, dim: int) -> Tensor:
    if tensor.numel() == 0:
        return torch.full(tensor.shape[1:], float("nan"), dtype=tensor.dtype)
    return tensor.nanmean(dim=dim)


# ----------------------------------------------------------------------------------------------
# Maps and targets
# ----------------------------------------------------------------------------------------------


def prepare_maps(maps: Tensor | Explanation, size: Sequence[int] | None = None, *, normalize: bool = False) -> Tensor:
    """Validate saliency maps and bring them to ``[B, H, W]`` float at ``size``.

    Args:
        maps: ``[B, H, W]`` or ``[B, 1, H, W]`` tensor, or an Explanation.
        size: the inputs' spatial size; maps of another size are resized bilinearly.
        normalize: apply ReLU and per-image min-max scaling to [0, 1]
            (:func:`camscope.engine.explainer.normalize_maps`).
    """
    if isinstance(maps, Explanation):
        maps = maps.maps
    if not isinstance(maps, Tensor):
        raise CamscopeError(f"maps must be a tensor [B, H, W] or an Explanation, got {type(maps).__name__}")
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3:
        raise CamscopeError(f"maps must have shape [B, H, W] (or [B, 1, H, W]), got {list(maps.shape)}")
    maps = maps.detach()
    if not maps.is_floating_point():
        maps = maps.float()
    if not bool(torch.isfinite(maps).all()):
        raise CamscopeError("maps contain NaN or infinite values")
    if size is not None and tuple(maps.shape[1:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return normalize_maps(maps) if normalize else maps


def _forward(model: nn.Module, inputs: Tensor, *, out_of_memory: bool = False) -> Tensor:
    """The model's output tensor; a failure is a CamscopeError (out of memory passes through with ``out_of_memory``)."""
    try:
        return output_tensor(model(inputs))
    except CamscopeError:
        raise
    except (RuntimeError, ValueError, AssertionError) as error:
        if out_of_memory and isinstance(error, torch.OutOfMemoryError):
            raise  # the perturbed passes step down to a smaller batch (camscope.metrics.batching)
        raise CamscopeError(f"the model failed on inputs of shape {list(inputs.shape)}: {error}") from error


def clean_pass(model: nn.Module, inputs: Tensor, target: Any, maps: Any = None) -> tuple[Tensor, Target]:
    """The model's outputs on the clean inputs and the target resolved on them.

    When ``target`` is None and ``maps`` is an Explanation, its resolved target is used.
    """
    inputs = validate_inputs(model, inputs)
    with model_state(model, True), torch.no_grad():
        logits = _forward(model, inputs).detach()
    if target is None and isinstance(maps, Explanation):
        resolved: Target = FrozenTarget(maps.targets)
    else:
        resolved = as_target(target).resolve(logits)
    return logits, resolved


Scorer = Callable[[Tensor], Tensor]


def make_scorer(target: Target, score: str | Callable[[Tensor, Target], Tensor] = "probability") -> Scorer:
    """A function mapping a batch of outputs ``[B, K]`` (rows aligned with the samples) to ``[B]`` scores."""
    if callable(score) and not isinstance(score, str):

        def custom(outputs: Tensor) -> Tensor:
            return score(outputs, target).reshape(-1)

        return custom
    if score == "probability":
        classes = target.classes()
        if classes is None:
            raise CamscopeError(
                f"score='probability' needs a class target, but the target is {target!r}: "
                "pass score='logit' to use the target's own score, or a callable score(outputs, target)"
            )

        def probability(outputs: Tensor) -> Tensor:
            if outputs.ndim != 2:
                raise CamscopeError(f"score='probability' needs outputs [batch, classes], got {list(outputs.shape)}")
            probs = torch.softmax(outputs.float(), dim=1)
            return probs.gather(1, classes.to(outputs.device)[:, None])[:, 0]

        return probability
    if score in ("logit", "target"):

        def own(outputs: Tensor) -> Tensor:
            values = target(outputs)
            return (values.mean(dim=1) if values.ndim == 2 else values).float()

        return own
    raise CamscopeError(f"unknown score {score!r}: use 'probability', 'logit' or a callable score(outputs, target)")


def score_perturbed(
    model: nn.Module,
    scorer: Scorer,
    clean_outputs: Tensor,
    make_inputs: Callable[[Tensor, slice], Tensor],
    steps: int,
    batch_size: BatchSize = "auto",
    *,
    like: Tensor | None = None,
) -> Tensor:
    """Scores of ``steps`` perturbed copies of a batch, ``[steps, B, ...]``, in chunks sized by ``batch_size``.

    ``make_inputs(t, rows)`` returns the perturbed inputs for the steps ``t`` (a long
    tensor) and the samples ``rows`` (a slice), ordered step-major:
    ``[len(t) * n_rows, C, H, W]``. Whole batches are scored together so that targets
    with per-sample state (classes, references) see their own rows; a step split
    across chunks is completed with the clean outputs before scoring.

    ``batch_size``: perturbed images per forward pass, or ``"auto"`` to calibrate it on
    these forward passes (:mod:`camscope.metrics.batching`); ``like`` is a clean input
    batch (its image shape, device and dtype key the calibration).
    """
    batch = clean_outputs.shape[0]
    device = clean_outputs.device
    reference = like if like is not None else clean_outputs
    batches = PerturbedBatches(model, reference, batch_size)
    scores: Tensor | None = None
    with model_state(model, True), torch.inference_mode():
        for t, rows in batches.chunks(steps, batch):
            inputs = make_inputs(t, rows)
            outputs = batches.forward(lambda chunk: _forward(model, chunk, out_of_memory=True).detach(), inputs)
            n_rows = rows.stop - rows.start
            outputs = outputs.reshape(len(t), n_rows, *outputs.shape[1:])
            for i, step in enumerate(t.tolist()):
                if n_rows == batch:
                    value = scorer(outputs[i]).float()
                else:
                    full = clean_outputs.clone()
                    full[rows] = outputs[i]
                    value = scorer(full)[rows].float()
                if scores is None:
                    scores = torch.empty(steps, batch, *value.shape[1:], device=device, dtype=torch.float32)
                scores[step, rows] = value
    if scores is None:
        raise CamscopeError("no perturbed copies to score")
    return scores.clone()  # a normal tensor: inference tensors refuse later in-place updates


def rank_pixels(maps: Tensor, descending: bool = True) -> Tensor:
    """Rank of every pixel by its map value, ``[B, H*W]`` (0 = first removed).

    Ties keep raster order (a stable sort), as torchcam's DeletionInsertionMetric does.
    """
    flat = maps.flatten(1)
    order = torch.argsort(flat, dim=1, descending=descending, stable=True)
    return torch.argsort(order, dim=1)


# ----------------------------------------------------------------------------------------------
# Substrates: what removed pixels are replaced with
# ----------------------------------------------------------------------------------------------


def rise_kernel(kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """The blur kernel of RISE's reference code, ``[k, k]``.

    RISE builds it as ``scipy.ndimage.gaussian_filter`` of a ``k x k`` delta image
    (mode ``reflect``, truncate 4): a Gaussian wider than the window folded back
    into it, so it sums to 1 but is flatter than a truncated Gaussian. Computed here
    in closed form without scipy.
    """
    if kernel_size < 1 or sigma <= 0:
        raise CamscopeError(f"blur needs kernel_size >= 1 and sigma > 0, got {kernel_size} and {sigma}")
    radius = int(4.0 * float(sigma) + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = weights / weights.sum()
    centre = kernel_size // 2
    profile = torch.zeros(kernel_size, dtype=torch.float64)
    period = 2 * kernel_size
    for i in range(kernel_size):
        for k, w in zip(range(-radius, radius + 1), weights.tolist()):
            j = (i + k) % period
            if j >= kernel_size:
                j = period - 1 - j
            if j == centre:
                profile[i] += w
    return torch.outer(profile, profile).float()


def rise_blur(inputs: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's blurred substrate: each channel convolved with :func:`rise_kernel`, zero padding."""
    channels = inputs.shape[1]
    kernel = rise_kernel(kernel_size, sigma).to(device=inputs.device, dtype=inputs.dtype)
    weight = kernel.expand(channels, 1, kernel_size, kernel_size)
    return F.conv2d(inputs, weight, padding=kernel_size // 2, groups=channels)


SubstrateSpec = str | Tensor | Callable[[Tensor], Tensor]


def substrate(inputs: Tensor, spec: SubstrateSpec, *, blur_kernel: int = 11, blur_sigma: float = 5.0) -> Tensor:
    """What removed pixels are replaced with, ``[B, C, H, W]``.

    Args:
        inputs: the clean batch.
        spec: ``"zero"`` (zeros of the normalised input, i.e. the dataset mean colour
            for mean/std-normalised images), ``"blur"`` (RISE's blur, kernel 11, sigma 5),
            ``"mean"`` (each image's per-channel mean, ROAD's "fixed" imputation), a tensor
            broadcastable to the inputs, or a callable ``inputs -> tensor``.
    """
    if isinstance(spec, Tensor):
        base = spec.to(device=inputs.device, dtype=inputs.dtype)
    elif callable(spec) and not isinstance(spec, str):
        base = spec(inputs)
        if not isinstance(base, Tensor):
            raise CamscopeError("a substrate callable must return a tensor")
    elif spec == "zero":
        return torch.zeros_like(inputs)
    elif spec == "blur":
        return rise_blur(inputs, blur_kernel, blur_sigma)
    elif spec == "mean":
        return inputs.mean(dim=tuple(range(2, inputs.ndim)), keepdim=True).expand_as(inputs)
    else:
        raise CamscopeError(f"unknown substrate {spec!r}: use 'zero', 'blur', 'mean', a tensor or a callable")
    try:
        return torch.broadcast_to(base.to(inputs), inputs.shape)
    except RuntimeError as error:
        raise CamscopeError(
            f"the substrate of shape {list(base.shape)} does not broadcast to the inputs {list(inputs.shape)}"
        ) from error


def pixel_count(total: int, fraction: float) -> int:
    """``floor(total * fraction)``, robust to floating-point error (``0.29 * 100`` is 29, not 28)."""
    return math.floor(total * float(fraction) + 1e-9)


def check_fractions(fractions: Sequence[float], what: str, allow_one: bool = False) -> list[float]:
    """``fractions`` as floats, each in ``[0, 1)`` (``[0, 1]`` with ``allow_one``); ``what`` names them in errors."""
    values = [float(f) for f in fractions]
    if not values:
        raise CamscopeError(f"{what} must not be empty")
    upper = "1]" if allow_one else "1)"
    for value in values:
        if not (0.0 <= value <= 1.0) or (value == 1.0 and not allow_one):
            raise CamscopeError(f"{what} must lie in [0, {upper}, got {value} (give fractions: 0.05 for 5%)")
    return values


# ----------------------------------------------------------------------------------------------
# Dataset passes
# ----------------------------------------------------------------------------------------------


def progress_option(progress: bool | None, show_progress: bool | None, function: str) -> bool | None:
    """The ``progress=`` of a dataset pass, accepting the deprecated ``show_progress=`` alias with a warning.

    Args:
        progress: the progress bar: True, False, or None for "when stderr is a terminal".
        show_progress: the former name of ``progress`` (None: not given).
        function: the public function's name, for the messages.

    Raises:
        CamscopeError: when both are given and disagree.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     progress_option(None, False, "consistency"), caught[0].category.__name__
        (False, 'DeprecationWarning')
    """
    if show_progress is None:
        return progress
    warnings.warn(f"{function}(show_progress=...) is deprecated: use progress=...", DeprecationWarning, stacklevel=3)
    if progress is not None and bool(progress) != bool(show_progress):
        raise CamscopeError(f"{function} got progress={progress} and show_progress={show_progress}: give only progress")
    return show_progress
