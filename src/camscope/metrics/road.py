"""ROAD: RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022, arXiv:2202.00449).

The imputation (noisy linear imputation, batched and solved in torch on the inputs'
device) lives in :mod:`camscope.metrics.imputation`; its public names are re-exported
here. The metric removes the most (MoRF) or least (LeRF) relevant pixels at each
percentage, imputes them and re-scores the model, the forward passes batched over
percentages and orders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.explainer import Explanation
from camscope.errors import CamscopeError
from camscope.metrics.common import (
    MetricResult,
    check_fractions,
    clean_pass,
    make_scorer,
    pixel_count,
    prepare_maps,
    score_perturbed,
)
from camscope.metrics.imputation import NEIGHBOUR_WEIGHTS, add_noise, noisy_linear_impute, solve_chunks

__all__ = ["NEIGHBOUR_WEIGHTS", "noisy_linear_impute", "road"]

_DEFAULT_PERCENTAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# ----------------------------------------------------------------------------------------------
# The metric
# ----------------------------------------------------------------------------------------------


def _impute(
    inputs: Tensor,
    keep: Tensor,
    imputation: str | Callable[[Tensor, Tensor], Tensor],
    noise: float,
    generator: torch.Generator,
    atol: float,
) -> Tensor:
    if callable(imputation) and not isinstance(imputation, str):
        return imputation(inputs, keep)
    if imputation == "linear":
        return noisy_linear_impute(inputs, keep, noise, generator=generator, atol=atol)
    if imputation == "mean":
        mean = inputs.mean(dim=(2, 3), keepdim=True)
        return torch.where(keep[:, None], inputs, mean)
    if imputation == "zero":
        return inputs * keep[:, None]
    raise CamscopeError(f"unknown imputation {imputation!r}: use 'linear', 'mean', 'zero' or a callable(inputs, keep)")


def _removal_ranks(maps: Tensor, tie_break: float, generator: torch.Generator) -> Tensor:
    """``[B, H*W]`` rank of every pixel (0 = most relevant): min-max scaled maps plus seeded tie-breaking noise."""
    flat = maps.flatten(1).double()
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    scaled = (flat - low) / torch.where(high > low, high - low, torch.ones_like(high))
    if tie_break:
        noise = torch.randn(flat.shape[1], generator=generator, dtype=torch.float64)
        scaled = scaled + tie_break * noise.to(scaled.device)
    order = torch.argsort(scaled, dim=1, descending=True, stable=True)
    return torch.argsort(order, dim=1)


class _Perturbations:
    """The imputed inputs of ROAD's steps (MoRF steps ``0..P-1``, then LeRF), for :func:`score_perturbed`.

    With the linear imputation on the CPU, each step's system is solved starting from
    the noiseless result of the previous step of the same order and rows when that
    removal was nested in this one (MoRF removes the ``count`` top-ranked pixels, LeRF
    the ``count`` bottom-ranked ones, so a smaller count of the same order is nested):
    the residual then starts on the newly removed pixels only. On other devices all
    steps of a call are solved together instead. The noise is drawn as
    :func:`noisy_linear_impute` draws it for the whole call (chunks of 8 rows on the CPU).
    """

    def __init__(
        self,
        inputs: Tensor,
        ranks: Tensor,
        counts: list[int],
        imputation: str | Callable[[Tensor, Tensor], Tensor],
        noise: float,
        generator: torch.Generator,
        atol: float,
    ) -> None:
        self.inputs, self.ranks, self.counts = inputs, ranks, counts
        self.imputation, self.noise, self.generator, self.atol = imputation, noise, generator, atol
        self.linear = isinstance(imputation, str) and imputation == "linear"
        self.work = torch.float64 if inputs.dtype == torch.float64 else torch.float32
        self.chunk = 8 if inputs.device.type == "cpu" else None
        self.previous: dict[tuple[bool, int], tuple[int, Tensor]] = {}
        self.workspace: dict[str, Tensor] = {}  # the solver's work tensors, reused by every step

    def removed(self, step: int, rows: slice) -> Tensor:
        """``[n, H, W]`` bool: the pixels removed at ``step`` in the images ``rows``."""
        n_steps, pixels = len(self.counts), self.ranks.shape[1]
        count = self.counts[step % n_steps]
        rank = self.ranks[rows]
        removed = rank < count if step < n_steps else rank >= pixels - count
        return removed.reshape(-1, *self.inputs.shape[2:])

    def __call__(self, steps: Tensor, rows: slice) -> Tensor:
        images = self.inputs[rows]
        removed = torch.stack([self.removed(step, rows) for step in steps.tolist()])  # [t, n, H, W]
        flat_removed = removed.reshape(-1, *removed.shape[2:])
        if not self.linear:
            expanded = images.expand(len(steps), *images.shape).reshape(-1, *images.shape[1:])
            return _impute(expanded, ~flat_removed, self.imputation, self.noise, self.generator, self.atol)
        if bool((removed.flatten(2).all(dim=2)).any()):
            raise CamscopeError(
                "noisy linear imputation needs at least one kept pixel per image: lower the removal fraction"
            )
        n = images.shape[0]
        out = images.new_empty(len(steps) * n, *images.shape[1:])
        if self.chunk is None:  # a GPU: every step of the call in one solve (fewer, larger kernels)
            expanded = images.expand(len(steps), *images.shape).reshape(-1, *images.shape[1:])
            solve_chunks(expanded, flat_removed, self.atol, 100, self.work, len(out), None, out)
            if self.noise:
                add_noise(out, flat_removed, self.noise, self.generator, len(out), self.work)
            return out
        touched = set()
        for i, step in enumerate(steps.tolist()):
            key = (step < len(self.counts), rows.start)
            count = self.counts[step % len(self.counts)]
            previous = self.previous.get(key)
            initial = previous[1] if previous is not None and previous[0] <= count else None
            part = out[i * n : (i + 1) * n]
            solve_chunks(images, removed[i], self.atol, 100, self.work, self.chunk, initial, part, self.workspace)
            self.previous[key] = (count, part)
            touched.add(key)
        for key in touched:  # the next call starts from the noiseless results
            count, part = self.previous[key]
            self.previous[key] = (count, part.clone())
        if self.noise:
            add_noise(out, flat_removed, self.noise, self.generator, self.chunk, self.work, self.workspace)
        return out


def road(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any = None,
    *,
    percentages: Sequence[float] = _DEFAULT_PERCENTAGES,
    imputation: str | Callable[[Tensor, Tensor], Tensor] = "linear",
    noise: float = 0.01,
    score: str | Callable[[Tensor, Any], Tensor] = "probability",
    tie_break: float = 1e-4,
    seed: int = 0,
    batch_size: int = 64,
    atol: float = 1e-4,
) -> MetricResult:
    r"""ROAD (Rong et al. 2022): remove the most (MoRF) or least (LeRF) relevant pixels, impute, re-score.

    For each fraction ``p`` in ``percentages`` the ``floor(p * H * W)`` pixels ranked
    highest (MoRF) or lowest (LeRF) by the map are removed and imputed (noisy linear
    imputation by default), and the target's score is measured. A faithful map makes
    the MoRF curve fall fast and the LeRF curve stay high.

    .. math::
        \mathrm{combined} = \frac{1}{|P|} \sum_{p \in P} \frac{s_\mathrm{LeRF}(p) - s_\mathrm{MoRF}(p)}{2}

    which equals grad-cam 1.5.7's ``ROADCombined`` (it averages the differences to the
    clean score, which cancel).

    Protocol details and deviations:
        * Ranking follows the reference ``ImputedDataset``: the map is min-max scaled,
          ``tie_break * N(0, 1)`` noise (one field for the batch, seeded) is added so
          that plateaus (zeros after ReLU) are removed in random rather than raster
          order, and ``floor(p * H * W)`` pixels are removed.
        * ``p`` is the fraction *removed* for both orders. The reference code's LeRF
          keeps the top ``p`` (removes ``1 - p``) and grad-cam's ``percentile`` is the
          fraction kept; over a symmetric set such as 0.1..0.9 the averaged scores agree
          (up to grad-cam's ``np.percentile`` rounding of the pixel count).
        * DiffCAM reports ROAD at 25/50/75%: ``percentages=(0.25, 0.5, 0.75)``.

    Args:
        model: the classifier.
        inputs: ``[B, C, H, W]`` on the model's device.
        maps: ``[B, H, W]`` maps (or an Explanation), resized to the inputs.
        target: what is scored (see :mod:`camscope.metrics`); default the predicted class.
        percentages: fractions of pixels removed (each in [0, 1)).
        imputation: ``"linear"`` (noisy linear, ROAD's default), ``"mean"`` (per-image
            channel mean, ROAD's "fixed"), ``"zero"``, or ``callable(inputs, keep)``.
        noise: noise of the linear imputation (0.01).
        score: ``"probability"`` (softmax of the target class; ROAD), ``"logit"`` or a callable.
        tie_break: scale of the ranking noise (1e-4 as in the reference; 0 for raster-order ties).
        seed: seeds the ranking and imputation noise.
        batch_size: perturbed images per forward pass (several percentages and orders of the
            batch together); the imputation solves 8 images at a time on the CPU, a whole
            step on other devices.
        atol: accuracy of the imputation solve (see :func:`noisy_linear_impute`).

    Returns:
        A :class:`MetricResult` with values ``combined`` (headline, higher is better),
        ``morf`` (mean MoRF score, lower is better), ``lerf`` (mean LeRF score, higher is
        better) and ``score`` (clean score); curves ``morf`` and ``lerf`` ``[B, P]`` over
        ``percentages``.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> x = torch.randn(2, 3, 32, 32)
        >>> e = camscope.explain(model, x, "gradcam", layer="layer3")
        >>> r = camscope.metrics.road(model, x, e, percentages=(0.25, 0.5, 0.75))
        >>> r["morf"].shape, r.curves["lerf"].shape
        (torch.Size([2]), torch.Size([2, 3]))
    """
    fractions = check_fractions(percentages, "percentages")
    logits, resolved = clean_pass(model, inputs, target, maps)
    maps = prepare_maps(maps, inputs.shape[2:]).to(inputs.device)
    scorer = make_scorer(resolved, score)
    clean_scores = scorer(logits).float()
    pixels = maps[0].numel()

    generator = torch.Generator().manual_seed(int(seed))
    ranks = _removal_ranks(maps, tie_break, generator)
    counts = [pixel_count(pixels, p) for p in fractions]
    if imputation == "linear" and inputs.device.type != "cpu":
        generator = torch.Generator(device=inputs.device).manual_seed(int(seed))  # the noise is drawn on the device
    make_inputs = _Perturbations(inputs, ranks, counts, imputation, noise, generator, atol)
    n_steps = len(fractions)
    scores = score_perturbed(model, scorer, logits, make_inputs, 2 * n_steps, batch_size)  # [2P, B]
    morf_curve, lerf_curve = scores[:n_steps].T, scores[n_steps:].T
    steps = torch.tensor(fractions)
    return MetricResult(
        name="road",
        values={
            "combined": ((lerf_curve - morf_curve) / 2).mean(dim=1),
            "morf": morf_curve.mean(dim=1),
            "lerf": lerf_curve.mean(dim=1),
            "score": clean_scores,
        },
        curves={"morf": morf_curve, "lerf": lerf_curve},
        steps={"morf": steps, "lerf": steps},
        headline="combined",
        higher_is_better={"combined": True, "morf": False, "lerf": True, "score": True},
        params={
            "percentages": fractions,
            "imputation": imputation if isinstance(imputation, str) else getattr(imputation, "__name__", "custom"),
            "noise": noise,
            "score": score if isinstance(score, str) else "custom",
            "tie_break": tie_break,
            "seed": seed,
        },
    )
