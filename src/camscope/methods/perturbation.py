"""Perturbation CAMs: Score-CAM, SS-CAM, IS-CAM and Ablation-CAM.

These methods need no gradients: a channel's weight comes from the target
score of extra forward passes. Score-CAM and its variants mask the *input*
with each upsampled, min-max scaled activation channel; Ablation-CAM zeroes
one channel of the *layer's output* inside the network.

Shared machinery (all four methods):

* **Chunks.** The perturbed passes run in chunks of at most ``batch_size``
  inputs, so peak memory is bounded by the chunk, not by the number of
  channels: masks are upsampled per chunk and never materialised for all
  channels at once. The capture hooks are silent during these passes
  (``CamContext.forward``).
* **One synchronisation.** Deciding which passes are needed (duplicate masks,
  constant channels, the selected channels of the approximate mode) is done
  on the device with fixed shapes, then read back once; after that, nothing
  is copied to the host until the method returns.
* **Duplicates run once.** Channels whose min-max scaled activations are
  bitwise equal (a constant or all-zero channel after a ReLU, duplicated
  filters) give identical masked inputs: one pass is run and its score copied.
  A constant channel's scaled mask is zero, so its masked input *is* the
  baseline and needs no pass at all.
* **Any target.** Each pass is scored with the resolved target, which may
  return ``[B]`` scores or ``[B, R]`` component scores (averaged over ``R``);
  ``ClassDifference(c, d, gamma)`` gives Finer-CAM's ``y_c - gamma * y_d``
  from the same masked pass, at no extra cost.
* **Approximate mode.** ``channels=k`` keeps, per image, the ``k`` channels
  with the highest spatial variance of their activations (as "Faster
  Score-CAM" does); the others get weight 0 and no pass. Off by default.
* **Progress.** A progress bar (rich, on stderr, when stderr is a terminal)
  appears once the passes have taken more than a second; ``progress=False``
  or ``True`` forces it off or on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.engine.capture import register_owned_hook, split_output
from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.errors import CamscopeError
from camscope.options import Option
from camscope.progress import ProgressBar

__all__ = ["BATCH_SIZE", "CHANNELS", "ISCAM", "PROGRESS", "SSCAM", "AblationCAM", "ScoreCAM"]

#: Code of a channel whose perturbed pass equals the baseline (Score-CAM: a constant
#: channel, whose scaled mask is zero) or the clean pass (Ablation-CAM: a channel
#: already equal to the ablation value everywhere).
_SAME_AS_REFERENCE = -1
#: Code of a channel left out by the approximate mode (``channels=k``).
_LEFT_OUT = -2

_NORMALIZATIONS = ("softmax", "difference", "probability")
_INTEGRATION_PATHS = ("paper", "torchcam", "linear")

#: Options of every perturbation method.
BATCH_SIZE = Option("batch_size", int, 32, "perturbed inputs per forward pass", positive=True)
CHANNELS = Option(
    "channels", int, None, "approximate mode: only the k channels of highest spatial variance per image", positive=True
)
PROGRESS = Option("progress", bool, None, "show a progress bar (None: when stderr is a terminal, after 1 s)")


# --------------------------------------------------------------------------- helpers


def _top_variance(flat: Tensor, channels: int | None) -> Tensor | None:
    """``[B, K]`` bool: the ``channels`` channels of highest spatial variance per image (None: all)."""
    if channels is None:
        return None
    batch, total = flat.shape[:2]
    if channels >= total:
        return None
    variance = flat.float().var(dim=-1, unbiased=False) if flat.shape[-1] > 1 else flat.new_zeros(batch, total)
    chosen = variance.topk(channels, dim=1).indices
    return torch.zeros(batch, total, dtype=torch.bool, device=flat.device).scatter_(1, chosen, True)


def _first_equal(rows: Tensor, selected: Tensor | None) -> Tensor:
    """``[B, K]``: for each row of ``rows [B, K, P]``, the index of a bitwise-equal row of the same image.

    Rows are sorted by a random projection (a hash); runs of adjacent rows that
    are exactly equal share the run's first row as representative. A hash
    collision can only split a run (a duplicate is then evaluated twice), never
    join different rows, so the result is exact. Selected rows sort first
    within equal hashes, so a selected row never points to a left-out one.
    Fixed shapes throughout: no host synchronisation.
    """
    batch, total, size = rows.shape
    device = rows.device
    key_dtype = torch.float32 if device.type == "mps" else torch.float64
    probe = torch.rand(size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    keys = rows.to(key_dtype) @ probe.to(device=device, dtype=key_dtype)
    order = torch.arange(total, device=device).expand(batch, total)
    if selected is not None:
        order = torch.argsort((~selected).to(torch.uint8), dim=1, stable=True)
    order = order.gather(1, torch.argsort(keys.gather(1, order), dim=1, stable=True))
    ordered = rows.gather(1, order[..., None].expand(batch, total, size))
    same = (ordered[:, 1:] == ordered[:, :-1]).all(dim=-1)
    start = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=device), ~same], dim=1)
    position = torch.arange(total, device=device).expand(batch, total)
    run_start = torch.where(start, position, torch.zeros_like(position)).cummax(dim=1).values
    return torch.empty_like(order).scatter_(1, order, order.gather(1, run_start))


@dataclass
class _Schedule:
    """The passes to run: jobs ``(image b, channel k)`` in a row-major ``[rows, B]`` grid, cut in chunks."""

    image: Tensor  # [n] long, on the device
    channel: Tensor  # [n] long
    cell: Tensor  # [n] long: row * B + b
    chunks: list[tuple[int, int, int, int]]  # (first job, end job, first row, end row)

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


def _schedule(codes: list[list[int]], batch_size: int, device: torch.device) -> _Schedule:
    """Jobs for the channels that point to themselves (``codes[b][k] == k``)."""
    per_image = [[k for k, code in enumerate(row) if code == k] for row in codes]
    batch = len(codes)
    rows = max((len(jobs) for jobs in per_image), default=0)
    image, channel, cell, row_of = [], [], [], []
    for row in range(rows):
        for b, jobs in enumerate(per_image):
            if row < len(jobs):
                image.append(b)
                channel.append(jobs[row])
                cell.append(row * batch + b)
                row_of.append(row)
    chunks = []
    for start in range(0, len(image), batch_size):
        end = min(start + batch_size, len(image))
        chunks.append((start, end, row_of[start], row_of[end - 1] + 1))

    def tensor(values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.long).to(device, non_blocking=True)

    return _Schedule(tensor(image), tensor(channel), tensor(cell), chunks)


def _score_function(ctx: CamContext, probability: bool = False, baseline: bool = False) -> Callable[[Tensor], Tensor]:
    """Outputs ``[B, ...]`` of one pass per image -> the target's score ``[B]`` (components averaged).

    With ``baseline``, the target's :meth:`~camscope.targets.base.Target.baseline_scores`: what the
    increase ``S_k`` subtracts (the explained class alone for a comparison, Finer-CAM's Eq. 9).
    """

    def score(outputs: Tensor) -> Tensor:
        if probability:
            outputs = outputs.softmax(dim=1)
        scores = ctx.target.baseline_scores(outputs) if baseline else ctx.target(outputs)
        return scores.mean(dim=1) if scores.ndim == 2 else scores

    return score


def _run(
    ctx: CamContext,
    schedule: _Schedule,
    forward: Callable[[slice], Tensor],
    score: Callable[[Tensor], Tensor],
    progress: ProgressBar,
) -> Tensor:
    """Scores ``[n]`` of the scheduled jobs, one forward pass per chunk.

    The target is defined on a batch of the ``B`` explained images, so each
    chunk's outputs are placed in a ``[rows, B, ...]`` grid (cells without a
    job keep the clean outputs) and the target scores one row at a time.
    """
    clean = ctx.outputs
    batch = clean.shape[0]
    results = []
    for start, end, first_row, end_row in schedule.chunks:
        outputs = forward(slice(start, end))
        if outputs.shape[0] != end - start or outputs.shape[1:] != clean.shape[1:]:
            raise CamscopeError(
                f"the model returned outputs of shape {list(outputs.shape)} for a batch of {end - start} perturbed "
                f"inputs (expected {[end - start, *clean.shape[1:]]}): the model must treat samples independently"
            )
        rows = end_row - first_row
        grid = clean.to(outputs.dtype).unsqueeze(0).repeat(rows, *([1] * clean.ndim))
        cells = schedule.cell[start:end] - first_row * batch
        grid.view(rows * batch, *clean.shape[1:])[cells] = outputs
        row_scores = torch.stack([score(grid[row]) for row in range(rows)])
        results.append(row_scores.reshape(-1)[cells])
        progress.advance()
    if not results:
        return clean.new_zeros(0)
    return torch.cat(results)


def _accumulator_dtype(tensor: Tensor) -> torch.dtype:
    return torch.promote_types(tensor.dtype, torch.float32)


# --------------------------------------------------------------------------- Score-CAM family


class _ScoreFamily(CamMethod):
    """Score-CAM and its smoothed and integrated variants (one implementation)."""

    uses_gradients = False
    declared_options: ClassVar[tuple[Option, ...]] = (
        BATCH_SIZE,
        Option("normalization", str, "softmax", "how scores become channel weights", choices=_NORMALIZATIONS),
        Option("baseline", (float, Tensor), None, "the baseline input x_b, a number or a tensor (None: zeros)"),
        CHANNELS,
        Option("deduplicate", bool, True, "evaluate bitwise-equal scaled masks once"),
        PROGRESS,
    )

    # Variants: a list of mask scales, and noise.
    def _scales(self) -> list[float]:
        return [1.0]

    def _noise(self) -> tuple[float, str, torch.Generator | None]:
        return 0.0, "mask", None

    def __call__(self, ctx: CamContext) -> CamResult:
        opts = self.options
        scales = self._scales()
        std, noise_on, generator = self._noise()
        x = ctx.inputs
        activations = ctx.activations
        batch, total = activations.shape[:2]
        if activations.ndim != x.ndim:
            raise CamscopeError(
                f"{self.name} masks the input with the layer's maps, but the layer's maps have "
                f"{activations.ndim - 2} spatial dimensions and the input {x.ndim - 2}"
            )
        baseline = _baseline(opts["baseline"], x, self.name)
        probability = opts["normalization"] == "probability"
        noisy = std > 0

        with torch.no_grad():
            flat = activations.flatten(2)
            low = flat.amin(dim=-1, keepdim=True)
            span = flat.amax(dim=-1, keepdim=True) - low
            constant = ~(span > 0).squeeze(-1)
            selected = _top_variance(flat, opts["channels"])
            if opts["deduplicate"] and not noisy:
                scaled = torch.where(span > 0, (flat - low) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)
                codes = _first_equal(scaled, selected)
            else:
                codes = torch.arange(total, device=x.device).expand(batch, total).clone()
            if not noisy or probability:
                # A constant channel's scaled mask is zero: its masked input is the baseline
                # (the reference code gives it weight 0 in the probability normalisation).
                codes = torch.where(constant, torch.full_like(codes, _SAME_AS_REFERENCE), codes)
            if selected is not None:
                codes = torch.where(selected, codes, torch.full_like(codes, _LEFT_OUT))
            host_codes = codes.tolist()  # the one device-to-host synchronisation

            schedule = _schedule(host_codes, opts["batch_size"], x.device)
            evaluated = [scale for scale in scales if scale != 0]
            zero_scales = len(scales) - len(evaluated)
            has_constant = any(code == _SAME_AS_REFERENCE for row in host_codes for code in row)
            need_baseline = (
                opts["normalization"] == "difference" or zero_scales > 0 or (has_constant and not probability)
            )

            score = _score_function(ctx, probability)
            passes = len(schedule.chunks) * len(evaluated) + int(need_baseline)
            progress = ProgressBar(passes, f"{self.name}: masked passes", opts["progress"], delay=1.0)
            try:
                reference = shift = None
                if need_baseline:
                    reference_input = torch.zeros_like(x) if baseline is None else baseline.contiguous()
                    reference_outputs = ctx.forward(reference_input)
                    reference = score(reference_outputs).to(_accumulator_dtype(ctx.outputs))
                    shift = _score_function(ctx, probability, baseline=True)(reference_outputs).to(reference.dtype)
                    progress.advance()
                total_scores = torch.zeros(batch, total, dtype=_accumulator_dtype(ctx.outputs), device=x.device)
                for scale in evaluated:
                    builder = _MaskedInputs(ctx, schedule, baseline, scale, std, noise_on, generator)
                    scores = _run(ctx, schedule, builder.forward, score, progress)
                    total_scores.index_put_(
                        (schedule.image, schedule.channel), scores.to(total_scores.dtype), accumulate=True
                    )
            finally:
                progress.close()
            if zero_scales:
                assert reference is not None  # zero scales need the baseline pass
                total_scores += zero_scales * reference[:, None]
            mean = total_scores / len(scales)
            weights = _combine(mean, codes, reference, shift, opts["normalization"])
        return CamResult(weights=ctx.expand(weights.to(activations.dtype)))


def _baseline(value: Any, x: Tensor, method: str) -> Tensor | None:
    """The baseline input expanded to ``x`` (None for the zero input)."""
    if value is None:
        return None
    if not isinstance(value, Tensor):
        return None if value == 0 else torch.full_like(x, float(value))
    tensor = value.to(device=x.device, dtype=x.dtype)
    if tensor.ndim == x.ndim - 1:
        tensor = tensor.unsqueeze(0)
    try:
        return tensor.expand_as(x)
    except RuntimeError:
        raise CamscopeError(
            f"{method}: baseline of shape {list(value.shape)} does not broadcast to the inputs {list(x.shape)}: "
            f"pass [C, H, W], [1, C, H, W] or [B, C, H, W]"
        ) from None


class _MaskedInputs:
    """Builds the masked inputs of a chunk: ``x_b + (s * H_k + noise) * (x - x_b)``."""

    def __init__(
        self,
        ctx: CamContext,
        schedule: _Schedule,
        baseline: Tensor | None,
        scale: float,
        std: float,
        noise_on: str,
        generator: torch.Generator | None,
    ) -> None:
        self.ctx = ctx
        self.schedule = schedule
        self.baseline = baseline
        self.difference = None if baseline is None else ctx.inputs - baseline
        self.scale = scale
        self.std = std
        self.noise_on = noise_on
        self.generator = generator

    def __call__(self, chunk: slice) -> Tensor:
        x = self.ctx.inputs
        images = self.schedule.image[chunk]
        maps = self.ctx.activations[images, self.schedule.channel[chunk]].unsqueeze(1)
        masks = _scaled_masks(maps, x.shape[2:]).to(x.dtype)
        if self.scale != 1:
            masks = masks * self.scale
        if self.std > 0 and self.noise_on == "mask":
            masks = masks + self.std * self._randn(masks.shape)
        if self.baseline is None or self.difference is None:
            inputs = x[images] * masks
        else:
            inputs = torch.addcmul(self.baseline[images], masks, self.difference[images])
        if self.std > 0 and self.noise_on == "input":
            inputs = inputs + self.std * self._randn(inputs.shape)
        return inputs

    def forward(self, chunk: slice) -> Tensor:
        """The model's outputs on the masked inputs of a chunk."""
        return self.ctx.forward(self(chunk))

    def _randn(self, shape: torch.Size) -> Tensor:
        x = self.ctx.inputs
        return torch.randn(shape, generator=self.generator, device=x.device, dtype=x.dtype)


def _scaled_masks(maps: Tensor, size: torch.Size) -> Tensor:
    """``[n, 1, *s]`` maps -> upsampled (bilinear/trilinear, align_corners=False), min-max scaled ``[n, 1, *S]``."""
    if tuple(maps.shape[2:]) != tuple(size):
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[maps.ndim - 2]
        maps = F.interpolate(maps, size=tuple(size), mode=mode, align_corners=False)
    flat = maps.flatten(1)
    low = flat.amin(dim=1)
    span = flat.amax(dim=1) - low
    shape = (-1,) + (1,) * (maps.ndim - 1)
    safe = torch.where(span > 0, span, torch.ones_like(span)).reshape(shape)
    return torch.where(span.reshape(shape) > 0, (maps - low.reshape(shape)) / safe, torch.zeros_like(maps))


def _combine(mean: Tensor, codes: Tensor, reference: Tensor | None, shift: Tensor | None, normalization: str) -> Tensor:
    """Channel weights from the mean score per (image, channel) of the evaluated channels.

    ``reference`` is the target's score on the baseline (the score of a channel whose masked
    input is the baseline), ``shift`` what every increase subtracts (equal to ``reference``
    except for comparisons: Eq. 9 of Finer-CAM subtracts the explained class's score only).
    """
    index = codes.clamp(min=0)
    mean = mean.gather(1, index)  # duplicates take their representative's score
    same = codes == _SAME_AS_REFERENCE
    left_out = codes == _LEFT_OUT
    if normalization == "probability":
        return torch.where(same | left_out, torch.zeros_like(mean), mean)
    if reference is not None and shift is not None:
        increase = torch.where(same, (reference - shift)[:, None].expand_as(mean), mean - shift[:, None])
    else:  # softmax without a reference pass: softmax is shift-invariant
        increase = mean
    if normalization == "difference":
        return torch.where(left_out, torch.zeros_like(increase), increase)
    increase = torch.where(left_out, torch.full_like(increase, -math.inf), increase)
    return increase.softmax(dim=1)


@register_method
class ScoreCAM(_ScoreFamily):
    r"""Score-CAM (Wang et al. 2020): channel weights from the scores of masked inputs.

    For each channel ``k``: ``H_k = s(Up(A_k))``, the activation map upsampled to
    the input (bilinear, ``align_corners=False``) and min-max scaled to [0, 1]
    (a constant channel gives ``H_k = 0``); the masked input is
    ``x_b + H_k * (x - x_b)`` (``x * H_k`` for the default zero baseline ``x_b``);
    ``S_k = y(masked input) - y(x_b)`` is the target score's increase. Then
    ``M = sum_k w_k A_k`` with, by ``normalization``:

    * ``"softmax"`` (default): ``w = softmax_k(S_k)``, the paper's Algorithm 1 on
      logits, and what pytorch-grad-cam 1.5.7 and torchcam 0.5.0 compute (softmax
      is shift-invariant, so ``y(x_b)`` cancels: grad-cam never computes it and
      torchcam subtracts the clean input's score instead).
    * ``"difference"``: ``w_k = S_k``, the plain increase of Finer-CAM's Eq. 3;
      with a comparison target (``ClassDifference``, ``Finer``) exactly Eq. 9,
      ``w_k = f(x o H_k)^c - gamma f(x o H_k)^d - f(x_b)^c``: only the explained
      class's baseline score is subtracted (0.1.0 subtracted the whole
      ``y_c(x_b) - gamma y_d(x_b)``, which adds ``gamma y_d(x_b) sum_k A_k`` to the map).
    * ``"probability"``: ``w_k = target(softmax_classes(f(masked input)))``, what
      the authors' public code (``cam/scorecam.py``) does: the class probability
      of each masked input, no baseline, and weight 0 for constant channels.

    A target with component scores ``[B, R]`` (Finer-CAM's ``T`` references)
    has its ``R`` scores of each pass averaged before the normalisation: with
    ``"difference"`` this is exactly Finer-CAM's mean of the weights before the
    ReLU (Eq. 8); with ``"softmax"`` the softmax of the mean increase.

    Differences between the peers, for the record: grad-cam upsamples with
    ``align_corners=True`` and min-max scales after upsampling (with ``+1e-8``);
    torchcam min-max scales at the layer's resolution, then upsamples with
    ``align_corners=False``; camscope upsamples with ``align_corners=False`` as
    the reference code, then min-max scales (the paper's ``s(Up(A_k))``). At a
    layer that keeps the input size all three agree (checked in the tests).

    Options:
        batch_size: masked inputs per forward pass (default 32, as torchcam).
        normalization: ``"softmax"``, ``"difference"`` or ``"probability"``.
        baseline: the baseline input ``x_b``: a number or a tensor broadcastable
            to the inputs (default 0, the zero image).
        channels: approximate mode: only the ``k`` channels of highest spatial
            variance per image (others weight 0); default None (exact).
        deduplicate: evaluate bitwise-equal scaled masks once (default True).
        progress: show a progress bar (None: when stderr is a terminal and the
            passes take more than a second).

    Example:
        >>> import camscope, torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(8, 4)).eval()
        >>> explanation = camscope.explain(model, torch.randn(2, 3, 32, 32), method="scorecam", layer="1", target=[0, 3])
        >>> explanation.weights.shape, explanation.weights.sum(dim=1).round(decimals=4).tolist()
        (torch.Size([2, 8]), [1.0, 1.0])
    """

    name = "scorecam"
    display_name = "Score-CAM"


@register_method
class SSCAM(_ScoreFamily):
    r"""SS-CAM, smoothed Score-CAM (Wang, Naidu et al. 2020).

    ``S_k = (1/N) sum_i [y(x_b + (H_k + delta_i) * (x - x_b)) - y(x_b)]`` with
    ``delta_i ~ N(0, std^2)`` drawn per pixel of each mask (``noise_on="mask"``,
    the paper's SS-CAM(1), as torchcam), or added to the masked input
    (``noise_on="input"``, the paper's SS-CAM(2)); weights normalised as in
    :class:`ScoreCAM` (softmax over channels by default). Defaults are the
    paper's: ``samples=35`` and ``std=2.0`` (torchcam's too).

    Deviations: the authors' code adds the noise to the upsampled map *before*
    min-max scaling, with a standard deviation ``(2 / (max - min))^2`` that
    depends on the map's range (its ``normal_(mean, sigma**2)`` passes a variance
    where a standard deviation is expected); camscope, like torchcam, follows the
    paper's formula on the scaled mask. Noisy masks are never duplicates, so all
    channels are evaluated (constant ones too, except with
    ``normalization="probability"``).

    Options (besides those of :class:`ScoreCAM`):
        samples: noise draws ``N`` (default 35).
        std: the noise's standard deviation (default 2.0).
        noise_on: ``"mask"`` (default) or ``"input"``.
        generator: a ``torch.Generator`` on the inputs' device, for reproducible noise.

    Example:
        >>> import camscope, torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(8, 4)).eval()
        >>> explanation = camscope.explain(model, torch.randn(1, 3, 32, 32), method="sscam", layer="1",
        ...                                samples=4, generator=torch.Generator().manual_seed(0))
        >>> explanation.maps.shape
        torch.Size([1, 32, 32])
    """

    name = "sscam"
    display_name = "SS-CAM"
    declared_options = (
        *_ScoreFamily.declared_options,
        Option("samples", int, 35, "noise draws N", positive=True),
        Option("std", float, 2.0, "standard deviation of the noise", min=0),
        Option("noise_on", str, "mask", "add the noise to the mask or to the masked input", choices=("mask", "input")),
        Option("generator", torch.Generator, None, "random generator on the inputs' device, for reproducible noise"),
    )

    def _scales(self) -> list[float]:
        return [1.0] * self.options["samples"]

    def _noise(self) -> tuple[float, str, torch.Generator | None]:
        return self.options["std"], self.options["noise_on"], self.options["generator"]


def _check_scales(spec: Any) -> None:
    if isinstance(spec, str) and spec in _INTEGRATION_PATHS:
        return
    if isinstance(spec, str) or not isinstance(spec, Sequence) or not spec:
        raise CamscopeError(
            f"iscam: scales must be 'paper', 'torchcam', 'linear' or a non-empty list of numbers, got {spec!r}"
        )
    if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in spec):
        raise CamscopeError(f"iscam: scales must be numbers, got {list(spec)!r}")


def _integration_scales(spec: Any, samples: int) -> list[float]:
    _check_scales(spec)
    if spec == "paper":
        return [i * (i - 1) / (2 * samples) for i in range(1, samples + 1)]
    if spec == "torchcam":
        return [i * (i + 1) / (2 * samples) for i in range(1, samples + 1)]
    if spec == "linear":
        return [i / samples for i in range(1, samples + 1)]
    return [float(value) for value in spec]


@register_method
class ISCAM(_ScoreFamily):
    r"""IS-CAM, integrated Score-CAM (Naidu et al. 2020).

    The masks are scaled along a path and the scores averaged:
    ``S_k = (1/N) sum_{i=1..N} [y(x_b + c_i H_k * (x - x_b)) - y(x_b)]``, then
    normalised as in :class:`ScoreCAM` (softmax over channels by default).
    Default ``N = 10`` (the paper's and torchcam's).

    ``scales`` chooses the ``c_i``:

    * ``"paper"`` (default): the paper's cumulative sum
      ``M_i = sum_{j=0}^{i-1} (j/N) H_k``, i.e. ``c_i = i (i - 1) / (2N)``:
      ``0, 0.1, 0.3, ..., 4.5`` for ``N = 10`` (the first step is the baseline
      itself and costs no pass).
    * ``"torchcam"``: torchcam 0.5.0's code, ``c_i = i (i + 1) / (2N)``
      (``0.1, 0.3, ..., 5.5``), one step further than its documented formula.
    * ``"linear"``: ``c_i = i / N``, a straight path from the baseline to the
      Score-CAM mask, as integrated gradients would take.
    * any list of numbers.

    Options (besides those of :class:`ScoreCAM`):
        samples: ``N`` (default 10).
        scales: see above.

    Example:
        >>> import camscope, torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(8, 4)).eval()
        >>> camscope.explain(model, torch.randn(1, 3, 32, 32), method="iscam", layer="1", samples=5).raw.shape
        torch.Size([1, 32, 32])
    """

    name = "iscam"
    display_name = "IS-CAM"
    declared_options = (
        *_ScoreFamily.declared_options,
        Option("samples", int, 10, "steps N of the integration path", positive=True),
        Option(
            "scales",
            (str, Sequence),
            "paper",
            "the mask scales c_i: 'paper', 'torchcam', 'linear' or a list of numbers",
            check=_check_scales,
        ),
    )

    def _scales(self) -> list[float]:
        return _integration_scales(self.options["scales"], self.options["samples"])


# --------------------------------------------------------------------------- Ablation-CAM


class _Ablation:
    """A forward hook that replaces the layer's output by copies with one channel set to ``value``.

    ``rows`` picks, for each copy, the batch row of the layer's actual output it
    starts from; ``channels`` the channel to ablate in each copy. The channel
    axis is 1 for ``[B, K, ...]`` outputs and the last axis for tokens
    ``[B, N, K]`` or channels-last ``[B, h, w, K]`` (all tokens, prefix tokens
    included, are ablated, as pytorch-grad-cam does for ViTs).
    """

    def __init__(self, name: str, activations: Tensor, value: float) -> None:
        self.name = name
        self.shape = tuple(activations.shape[1:])
        self.value = value
        self.rows: Tensor | None = None
        self.channels: Tensor | None = None

    def __call__(self, _module: nn.Module, _inputs: Any, output: Any) -> Any:
        if self.rows is None or self.channels is None:
            return None
        tensor, rebuild = split_output(output, self.name)
        copies = tensor[self.rows]
        index = torch.arange(copies.shape[0], device=copies.device)
        if tuple(tensor.shape[1:]) == self.shape:
            copies[index, self.channels] = self.value
        elif tensor.shape[-1] == self.shape[0]:
            copies[index, ..., self.channels] = self.value
        else:
            raise CamscopeError(
                f"ablationcam: cannot find the {self.shape[0]} channels in the output of layer {self.name!r} "
                f"(shape {list(tensor.shape)})"
            )
        return rebuild(copies)


@register_method
class AblationCAM(CamMethod):
    r"""Ablation-CAM (Desai & Ramaswamy 2020): the score drop when one channel is zeroed.

    ``w_k = (y - y_k) / y`` where ``y`` is the target score and ``y_k`` the score
    with channel ``k`` of the layer's output set to 0 inside the network;
    ``M = sum_k w_k A_k``. camscope divides by ``|y|`` (the paper and
    pytorch-grad-cam divide by ``y``, which flips the map when the explained
    score is negative, e.g. a class difference); ``normalization="drop"`` gives
    the plain ``y - y_k``. A channel that is already 0 everywhere cannot change
    the score: it gets weight 0 without a pass.

    How the layer's output is replaced: a forward hook on the layer returns a
    batch of ablated copies of its output, so the layers *before* the chosen
    layer run on the ``B`` original images only (once per chunk), not on every
    ablated copy, and only the layers after it run on the copies. This needs the
    network after the layer to treat each copy independently; a block whose
    residual branch comes from before the layer (a layer inside a ResNet block)
    breaks that for ``B > 1``. ``recompute="auto"`` checks it on the first
    channels (the substituted pass must match a full pass) and otherwise runs
    every copy through the whole network, as pytorch-grad-cam does. The hook
    works for any model (no tracing), unlike a ``torch.fx`` split, which fails
    on data-dependent control flow.

    pytorch-grad-cam 1.5.7 ablates with 0 only when the batch minimum of the
    layer's output is 0, and otherwise with ``min - 1e7``; camscope uses ``value``
    (default 0, the paper's).

    Options:
        batch_size: ablated copies per forward pass (default 32, as grad-cam);
            with substitution the layers before still run on the ``B`` images
            once per chunk.
        normalization: ``"relative"`` (default, ``(y - y_k) / |y|``) or ``"drop"``.
        value: the value an ablated channel takes (default 0).
        channels: approximate mode: only the ``k`` channels of highest spatial
            variance per image are ablated (others weight 0).
        recompute: ``"auto"`` (default), ``"never"`` (always substitute after the
            layer) or ``"always"`` (always run the whole network).
        progress: show a progress bar (None: when stderr is a terminal and the
            passes take more than a second).

    Example:
        >>> import camscope, torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(8, 4)).eval()
        >>> explanation = camscope.explain(model, torch.randn(2, 3, 32, 32), method="ablationcam", layer="1")
        >>> explanation.weights.shape
        torch.Size([2, 8])
    """

    name = "ablationcam"
    display_name = "Ablation-CAM"
    uses_gradients = False

    declared_options = (
        BATCH_SIZE,
        Option("normalization", str, "relative", "(y - y_k) / |y| or the plain drop", choices=("relative", "drop")),
        Option("value", float, 0.0, "the value an ablated channel takes"),
        CHANNELS,
        Option(
            "recompute",
            str,
            "auto",
            "run the layers before the ablated one again for every copy",
            choices=("auto", "never", "always"),
        ),
        PROGRESS,
    )

    def __call__(self, ctx: CamContext) -> CamResult:
        options = self.options
        batch_size, normalization, recompute = options["batch_size"], options["normalization"], options["recompute"]
        value, channels = options["value"], options["channels"]
        modules = dict(ctx.model.named_modules())
        if ctx.layer not in modules or modules[ctx.layer] is ctx.model:
            raise CamscopeError("ablationcam needs a layer inside the model, not the model itself")

        x = ctx.inputs
        activations = ctx.activations
        batch, total = activations.shape[:2]
        hook = _Ablation(ctx.layer, activations, value)
        handle = register_owned_hook(modules[ctx.layer], hook)
        try:
            with torch.no_grad():
                flat = activations.flatten(2)
                codes = torch.arange(total, device=x.device).expand(batch, total).clone()
                unchanged = (flat == value).all(dim=-1)
                codes = torch.where(unchanged, torch.full_like(codes, _SAME_AS_REFERENCE), codes)
                selected = _top_variance(flat, channels)
                if selected is not None:
                    codes = torch.where(selected, codes, torch.full_like(codes, _LEFT_OUT))
                substitute, agreement = self._check_substitution(ctx, hook, recompute, batch_size)
                packed = (
                    codes.flatten() if agreement is None else torch.cat([agreement.reshape(1).long(), codes.flatten()])
                )
                host = packed.tolist()  # the one device-to-host synchronisation
                if agreement is not None:
                    substitute, host = bool(host[0]), host[1:]
                host_codes = [host[b * total : (b + 1) * total] for b in range(batch)]

                schedule = _schedule(host_codes, batch_size, x.device)
                progress = ProgressBar(
                    len(schedule.chunks), f"{self.name}: ablated passes", options["progress"], delay=1.0
                )

                def forward(chunk: slice) -> Tensor:
                    images = schedule.image[chunk]
                    hook.channels = schedule.channel[chunk]
                    if substitute:
                        hook.rows = images
                        return ctx.forward(x)
                    hook.rows = torch.arange(images.shape[0], device=x.device)
                    return ctx.forward(x[images])

                try:
                    scores = _run(ctx, schedule, forward, _score_function(ctx), progress)
                finally:
                    progress.close()
                clean = ctx.scores.to(_accumulator_dtype(ctx.outputs))
                ablated = clean[:, None].repeat(1, total)
                ablated[schedule.image, schedule.channel] = scores.to(ablated.dtype)
                weights = clean[:, None] - ablated
                if normalization == "relative":
                    weights = weights / torch.where(clean != 0, clean.abs(), torch.ones_like(clean))[:, None]
        finally:
            handle.remove()
        return CamResult(weights=ctx.expand(weights.to(activations.dtype)))

    @staticmethod
    def _check_substitution(
        ctx: CamContext, hook: _Ablation, recompute: str, batch_size: int
    ) -> tuple[bool, Tensor | None]:
        """Whether substituting after the layer gives the same scores as a full pass.

        Returns ``(substitute, agreement)``: with ``recompute="auto"`` the
        agreement is a device bool read with the method's one synchronisation.
        """
        if recompute != "auto":
            return recompute == "never", None
        x = ctx.inputs
        batch, total = ctx.activations.shape[:2]
        # The first two channels of each image, at most one chunk of copies.
        probe = min(total, 2)
        images = torch.arange(batch, device=x.device).repeat_interleave(probe)[:batch_size]
        hook.channels = torch.arange(probe, device=x.device).repeat(batch)[:batch_size]
        try:
            hook.rows = torch.arange(images.numel(), device=x.device)
            full = ctx.forward(x[images])
            hook.rows = images
            try:
                substituted = ctx.forward(x)
            except Exception:  # noqa: BLE001 - whatever the model raises on substituted rows, full passes are safe
                return False, None
        finally:
            hook.rows = hook.channels = None
        if substituted.shape != full.shape:
            return False, None
        tolerance = 1e-4 * full.abs().amax().clamp(min=1e-6)
        return False, ((substituted - full).abs() <= tolerance + 1e-4 * full.abs()).all()
