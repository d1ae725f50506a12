"""Removing pixels by their rank in a map and imputing them: the perturbed inputs of ROAD and the
perturbation-confidence metrics (grad-cam 1.5.7's ``PerturbationConfidenceMetric`` family).

A *step* ``(order, count)`` removes the ``count`` pixels ranked highest by the map (``"morf"``,
most relevant first) or lowest (``"lerf"``, least relevant first) and imputes them. The default
imputation is ROAD's noisy linear imputation (Rong et al., "A Consistent and Efficient Evaluation
Strategy for Attribution Methods", ICML 2022, arXiv:2202.00449; :mod:`camscope.metrics.imputation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.explainer import Explanation
from camscope.errors import CamscopeError
from camscope.metrics.batching import BatchSize
from camscope.metrics.common import clean_pass, make_scorer, pixel_count, prepare_maps, score_perturbed
from camscope.metrics.imputation import solve_chunks

__all__ = [
    "ORDERS",
    "Imputation",
    "RemovalProtocol",
    "RemovalSteps",
    "check_imputation",
    "removal_ranks",
    "removal_scores",
    "step_noise",
]

ORDERS = ("morf", "lerf")
"""Most relevant first, least relevant first."""

Imputation = str | Callable[[Tensor, Tensor], Tensor]


def removal_ranks(maps: Tensor, tie_break: float, generator: torch.Generator) -> Tensor:
    """``[B, H*W]`` rank of every pixel (0 = most relevant): min-max scaled maps plus seeded tie-breaking noise.

    As the ROAD reference's ``ImputedDataset``: ``tie_break * N(0, 1)`` (one field for the
    batch, drawn from ``generator``) is added so that plateaus (zeros after ReLU) are removed in
    random rather than raster order; ``tie_break=0`` keeps raster order.

    Example:
        >>> import torch
        >>> removal_ranks(torch.tensor([[[0.1, 0.9], [0.5, 0.0]]]), 0.0, torch.Generator())
        tensor([[2, 0, 1, 3]])
    """
    flat = maps.flatten(1).double()
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    scaled = (flat - low) / torch.where(high > low, high - low, torch.ones_like(high))
    if tie_break:
        noise = torch.randn(flat.shape[1], generator=generator, dtype=torch.float64)
        scaled = scaled + tie_break * noise.to(scaled.device)
    order = torch.argsort(scaled, dim=1, descending=True, stable=True)
    return torch.argsort(order, dim=1)


def step_noise(shape: Sequence[int], seed: int, order: str, count: int, device: torch.device) -> Tensor:
    """``N(0, 1)`` ``[C, H, W]`` of the step ``(order, count)``, the same for every image of the batch.

    Seeded by ``(seed, order, count)`` alone, so that an image's imputation does not depend on
    the batch it comes in, on the chunks the batch is cut into, nor on the other steps asked:
    each image's noise is i.i.d. Gaussian per pixel, as in the reference. Drawn on the CPU
    (the same numbers on every device).

    Example:
        >>> import torch
        >>> a = step_noise((1, 2, 2), 0, "morf", 3, torch.device("cpu"))
        >>> bool(torch.equal(a, step_noise((1, 2, 2), 0, "morf", 3, torch.device("cpu")))), a.shape
        (True, torch.Size([1, 2, 2]))
    """
    mixed = (int(seed) * 1_000_003 + ORDERS.index(order) * 1_000_000_007 + int(count) * 7_919) % (2**63 - 1)
    generator = torch.Generator().manual_seed(mixed)
    return torch.randn(tuple(shape), generator=generator).to(device)


def _simple_impute(inputs: Tensor, keep: Tensor, imputation: Imputation) -> Tensor:
    """The imputations other than the linear one: ``"mean"``, ``"zero"`` or ``callable(inputs, keep)``."""
    if callable(imputation) and not isinstance(imputation, str):
        return imputation(inputs, keep)
    if imputation == "mean":
        mean = inputs.mean(dim=(2, 3), keepdim=True)
        return torch.where(keep[:, None], inputs, mean)
    if imputation == "zero":
        return inputs * keep[:, None]
    raise CamscopeError(f"unknown imputation {imputation!r}: use 'linear', 'mean', 'zero' or a callable(inputs, keep)")


def check_imputation(imputation: Imputation) -> None:
    """Refuse an unknown imputation before any work is done."""
    if isinstance(imputation, str) and imputation not in ("linear", "mean", "zero"):
        raise CamscopeError(
            f"unknown imputation {imputation!r}: use 'linear', 'mean', 'zero' or a callable(inputs, keep)"
        )
    if not isinstance(imputation, str) and not callable(imputation):
        raise CamscopeError(f"imputation must be a name or a callable(inputs, keep), got {type(imputation).__name__}")


class RemovalSteps:
    """The imputed inputs of removal steps, for :func:`~camscope.metrics.common.score_perturbed`.

    ``steps`` lists ``(order, count)``; step ``s`` of image ``i`` removes ``count`` pixels of
    ``ranks[i]`` from the top (``"morf"``) or the bottom (``"lerf"``) and imputes them.

    With the linear imputation on the CPU, each step's system is solved starting from the
    noiseless result of the previous step of the same order and images (a warm start: the
    nested removal of a smaller count is a close guess; the solution is the same to the
    solver's tolerance). On other devices all steps of a chunk are solved together instead.
    The noise of the linear imputation is :func:`step_noise`: it and the warm starts follow
    the steps, not the chunks, so the result does not depend on how the work is batched.
    """

    def __init__(
        self,
        inputs: Tensor,
        ranks: Tensor,
        steps: Sequence[tuple[str, int]],
        imputation: Imputation = "linear",
        *,
        noise: float = 0.01,
        seed: int = 0,
        atol: float = 1e-4,
    ) -> None:
        check_imputation(imputation)
        self.inputs, self.ranks, self.steps = inputs, ranks, list(steps)
        self.imputation, self.noise, self.seed, self.atol = imputation, noise, seed, atol
        self.linear = isinstance(imputation, str) and imputation == "linear"
        self.work = torch.float64 if inputs.dtype == torch.float64 else torch.float32
        self.chunk = 8 if inputs.device.type == "cpu" else None
        self.solutions: dict[str, Tensor] = {}  # per order: the last noiseless result of every image
        self.solved: dict[str, Tensor] = {}  # per order: [B] bool, whether the image has one
        self.noises: dict[int, Tensor] = {}
        self.workspace: dict[str, Tensor] = {}  # the solver's work tensors, reused by every step

    def removed(self, step: int, rows: slice) -> Tensor:
        """``[n, H, W]`` bool: the pixels removed at ``step`` in the images ``rows``."""
        order, count = self.steps[step]
        rank = self.ranks[rows]
        removed = rank < count if order == "morf" else rank >= rank.shape[1] - count
        return removed.reshape(-1, *self.inputs.shape[2:])

    def __call__(self, steps: Tensor, rows: slice) -> Tensor:
        images = self.inputs[rows]
        indices = steps.tolist()
        removed = torch.stack([self.removed(step, rows) for step in indices])  # [t, n, H, W]
        if not self.linear:
            expanded = images.expand(len(indices), *images.shape).reshape(-1, *images.shape[1:])
            return _simple_impute(expanded, ~removed.reshape(-1, *removed.shape[2:]), self.imputation)
        if bool(removed.flatten(2).all(dim=2).any()):
            raise CamscopeError(
                "noisy linear imputation needs at least one kept pixel per image: lower the removal fraction"
            )
        out = images.new_empty(len(indices), *images.shape)
        if self.chunk is None:  # a GPU: every step of the chunk in one solve (fewer, larger kernels)
            expanded = images.expand(len(indices), *images.shape).reshape(-1, *images.shape[1:])
            flat = out.view(-1, *images.shape[1:])
            solve_chunks(
                expanded, removed.reshape(-1, *removed.shape[2:]), self.atol, 100, self.work, len(flat), None, flat
            )
        else:
            for i, step in enumerate(indices):
                self._solve_warm(step, rows, images, removed[i], out[i])
        if self.noise:
            for i, step in enumerate(indices):
                out[i].add_(self._noise(step).mul(removed[i][:, None]), alpha=self.noise)
        return out.view(-1, *images.shape[1:])

    def _solve_warm(self, step: int, rows: slice, images: Tensor, removed: Tensor, out: Tensor) -> None:
        """One step's noiseless solve into ``out``, from the images' last result of the same order."""
        order = self.steps[step][0]
        if order not in self.solutions:
            self.solutions[order] = torch.empty_like(self.inputs)
            self.solved[order] = torch.zeros(self.inputs.shape[0], dtype=torch.bool)
        solutions, solved = self.solutions[order], self.solved[order]
        initial = solutions[rows] if bool(solved[rows].all()) else None
        solve_chunks(images, removed, self.atol, 100, self.work, self.chunk or 8, initial, out, self.workspace)
        solutions[rows] = out
        solved[rows] = True

    def _noise(self, step: int) -> Tensor:
        if step not in self.noises:
            order, count = self.steps[step]
            self.noises[step] = step_noise(self.inputs.shape[1:], self.seed, order, count, self.inputs.device)
            self.noises[step] = self.noises[step].to(self.inputs.dtype)
        return self.noises[step]


@dataclass(frozen=True)
class RemovalProtocol:
    """The protocol of a removal metric: how removed pixels are imputed and the perturbed images scored.

    These are the keywords of :func:`~camscope.metrics.road` and of the perturbation-confidence
    metrics (:mod:`camscope.metrics.perturbation_confidence`), which take them one by one.

    Attributes:
        imputation: ``"linear"`` (ROAD's noisy linear), ``"mean"``, ``"zero"`` or ``callable(inputs, keep)``.
        noise: the noise of the linear imputation.
        score: the score of the class: ``"probability"``, ``"logit"`` or ``callable(outputs, target)``.
        tie_break: the scale of the ranking's tie-breaking noise (0: raster order).
        seed: seeds the ranking and the imputation noise.
        batch_size: perturbed images per forward pass, or ``"auto"`` (:mod:`camscope.metrics.batching`).
        atol: the accuracy of the imputation's solve.

    Example:
        >>> RemovalProtocol("mean", 0.01, "logit", 1e-4, 0, "auto", 1e-4).params()
        {'imputation': 'mean', 'noise': 0.01, 'score': 'logit', 'tie_break': 0.0001, 'seed': 0}
    """

    imputation: Imputation
    noise: float
    score: str | Callable[[Tensor, Any], Tensor]
    tie_break: float
    seed: int
    batch_size: BatchSize
    atol: float

    def params(self) -> dict[str, Any]:
        """The protocol as a result records it: a callable imputation by its name, a callable score as ``"custom"``."""
        imputation = self.imputation
        return {
            "imputation": imputation if isinstance(imputation, str) else getattr(imputation, "__name__", "custom"),
            "noise": self.noise,
            "score": self.score if isinstance(self.score, str) else "custom",
            "tie_break": self.tie_break,
            "seed": self.seed,
        }


def removal_scores(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any,
    orders: Sequence[str],
    fractions: Sequence[float],
    protocol: RemovalProtocol,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clean scores ``[B]`` and, per order, the scores after each removal ``[B, P]``.

    ``floor(p * H * W)`` pixels are removed for each fraction ``p`` (ranked by
    :func:`removal_ranks`), imputed by :class:`RemovalSteps`, and the target scored; the
    forward passes of every order and fraction are batched together.
    """
    check_imputation(protocol.imputation)
    logits, resolved = clean_pass(model, inputs, target, maps)
    maps = prepare_maps(maps, inputs.shape[2:]).to(inputs.device)
    scorer = make_scorer(resolved, protocol.score)
    generator = torch.Generator().manual_seed(int(protocol.seed))
    ranks = removal_ranks(maps, protocol.tie_break, generator)
    counts = [pixel_count(maps[0].numel(), p) for p in fractions]
    steps = [(order, count) for order in orders for count in counts]
    make_inputs = RemovalSteps(
        inputs, ranks, steps, protocol.imputation, noise=protocol.noise, seed=protocol.seed, atol=protocol.atol
    )
    scores = score_perturbed(model, scorer, logits, make_inputs, len(steps), protocol.batch_size, like=inputs)  # [S, B]
    curves = {order: scores[i * len(counts) : (i + 1) * len(counts)].T for i, order in enumerate(orders)}
    return scorer(logits).float(), curves
