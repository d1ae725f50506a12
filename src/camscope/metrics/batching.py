"""How many perturbed images a metric feeds the model at once: chosen from the model's throughput.

A perturbation metric runs the model on many perturbed copies of a batch (ROAD: 18 per
image; deletion: one per step). The fastest batch size is the model's and the machine's,
not the metric's: on a 2-core CPU EfficientNet-Lite0 at 224 px costs about 25-29 ms per
image in batches of 8 but 46 ms in batches of 64 (the activations of a large batch fall
out of the caches), while a GPU keeps getting faster up to hundreds of images.

With ``batch_size="auto"`` (every metric's default) the size is *calibrated on the metric's
own perturbed batches*, so the calibration costs no extra forward pass: the first batches
run at 4, 8, 16, ... images (each size twice, the faster of the two kept, since the first
batch of a new shape also pays for its set-up), the search stops at the first size that is
more than 5% slower per image than the best so far (or at 64 on the CPU, 256 elsewhere), and
the best size is cached for the model, the image shape, the device, the dtype and the CPU
thread count, so later calls (every batch of ``camscope.evaluate``) start at it. A search
left unfinished by a short call resumes in the next one. Only the forward passes are timed
(synchronised on a GPU while searching). The metrics' results do not depend on the batch
size (up to the floating-point differences of batched kernels): their random draws are tied
to the images and steps, not to the batches.

An integer ``batch_size`` fixes the size instead.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import Tensor, nn

from camscope.errors import CamscopeError

__all__ = ["BatchSize", "PerturbedBatches", "calibrated_batch_size", "check_batch_size"]

BatchSize = int | Literal["auto"]

_SIZES = (4, 8, 16, 32, 64, 128, 256)
_CPU_LIMIT = 64
_TOLERANCE = 1.05  # a size more than 5% slower per image than the best so far ends the search
_REPEATS = 2


def check_batch_size(batch_size: object) -> int | None:
    """A validated ``batch_size``: a positive int, or None for ``"auto"``."""
    if isinstance(batch_size, str) and batch_size == "auto":
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise CamscopeError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    return int(batch_size)


class _Calibration:
    """Per-image forward seconds by batch size for one model and one kind of input."""

    def __init__(self, limit: int) -> None:
        self.sizes = tuple(size for size in _SIZES if size <= limit)
        self.seconds: dict[int, float] = {}  # the fastest per-image time seen
        self.runs: dict[int, int] = {}
        self.best: int | None = None
        self.lock = threading.Lock()

    def size(self) -> int:
        with self.lock:
            if self.best is not None:
                return self.best
            return next((size for size in self.sizes if self.runs.get(size, 0) < _REPEATS), self.sizes[-1])

    def exclude_from(self, size: int) -> None:
        """Sizes from ``size`` up ran out of memory: search and choose below it."""
        with self.lock:
            self.sizes = tuple(s for s in self.sizes if s < size)
            if self.best is not None and self.best >= size:
                self.best = None
            if self.best is None and self.sizes and all(self.runs.get(s, 0) >= _REPEATS for s in self.sizes):
                self.best = min(self.sizes, key=lambda s: self.seconds[s])

    def record(self, size: int, images: int, seconds: float) -> None:
        with self.lock:
            if self.best is not None or size not in self.sizes:
                return
            self.seconds[size] = min(self.seconds.get(size, math.inf), seconds / max(images, 1))
            self.runs[size] = self.runs.get(size, 0) + 1
            if self.runs[size] < _REPEATS:
                return
            done = [s for s in self.sizes if self.runs.get(s, 0) >= _REPEATS]
            fastest = min(done, key=lambda s: self.seconds[s])
            if self.seconds[size] > _TOLERANCE * self.seconds[fastest] or size == self.sizes[-1]:
                self.best = fastest


_CALIBRATIONS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[object, ...], _Calibration]] = (
    weakref.WeakKeyDictionary()
)
_LOCK = threading.Lock()


def _calibration(model: nn.Module, like: Tensor) -> _Calibration:
    device = like.device
    key = (
        tuple(like.shape[1:]),
        str(device),
        like.dtype,
        torch.get_num_threads(),
        torch.is_autocast_enabled(device.type),
    )
    with _LOCK:
        per_model = _CALIBRATIONS.setdefault(model, {})
        if key not in per_model:
            per_model[key] = _Calibration(_CPU_LIMIT if device.type == "cpu" else _SIZES[-1])
        return per_model[key]


def calibrated_batch_size(model: nn.Module, inputs: Tensor) -> int | None:
    """The batch size ``"auto"`` settled on for this model and inputs, or None while still searching.

    Example:
        >>> import torch
        >>> calibrated_batch_size(torch.nn.Linear(3, 2), torch.randn(1, 3)) is None
        True
    """
    calibration = _calibration(model, inputs)
    with calibration.lock:
        return calibration.best


class PerturbedBatches:
    """The chunks of a metric's perturbed copies and the timed forward pass that sizes them.

    ``steps`` perturbed copies of a batch of ``rows`` images are cut step-major into chunks
    ``(t, rows)``: whole steps of all rows when the batch fits the size (``size // rows``
    steps at once), else slices of rows of one step. The size is fixed (an integer
    ``batch_size``) or calibrated (``"auto"``, see the module docstring).

    Example:
        >>> import torch
        >>> batches = PerturbedBatches(torch.nn.Identity(), torch.zeros(3, 1, 2, 2), batch_size=6)
        >>> [(t.tolist(), rows) for t, rows in batches.chunks(steps=3, rows=3)]
        [([0, 1], slice(0, 3, None)), ([2], slice(0, 3, None))]
    """

    def __init__(self, model: nn.Module, like: Tensor, batch_size: BatchSize = "auto") -> None:
        fixed = check_batch_size(batch_size)
        self.fixed = fixed
        self.calibration = None if fixed is not None else _calibration(model, like)
        self.device = like.device
        self.planned: int | None = None  # the size the last chunk was cut for, when it is a full one

    def size(self) -> int:
        """The number of perturbed images the next chunk may hold."""
        if self.fixed is not None or self.calibration is None:
            return self.fixed or 1
        return self.calibration.size()

    def chunks(self, steps: int, rows: int) -> Iterator[tuple[Tensor, slice]]:
        """``(t, rows)`` chunks covering every step and row once, step-major (the size is read anew for each)."""
        step, start = 0, 0
        while step < steps:
            size = self.size()
            if start == 0 and rows <= size:
                per = max(1, size // rows)
                count = min(steps - step, per)
                # only a full chunk times the size (the last one may be cut short by the steps left)
                self.planned = size if count == per else None
                yield torch.arange(step, step + count, device=self.device), slice(0, rows)
                step += count
                continue
            stop = min(rows, start + size)
            self.planned = size if stop - start == size else None
            yield torch.tensor([step], device=self.device), slice(start, stop)
            step, start = (step + 1, 0) if stop == rows else (step, stop)

    def forward(self, run: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
        """``run(inputs)`` (the model on a chunk), timed while the size is being calibrated.

        With ``"auto"``, a chunk that runs out of GPU memory excludes its size and larger ones
        from the search and runs again in smaller pieces.
        """
        calibration, planned = self.calibration, self.planned
        try:
            if calibration is None or calibration.best is not None or planned is None:
                return run(inputs)
            return self._timed(run, inputs, calibration, planned)
        except torch.OutOfMemoryError as error:
            if calibration is None or inputs.shape[0] <= _SIZES[0]:
                raise CamscopeError(
                    f"the model ran out of memory on {inputs.shape[0]} perturbed images at once: "
                    "pass a smaller batch_size"
                ) from error
            calibration.exclude_from(min(inputs.shape[0], planned or inputs.shape[0]))
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            smaller = max(calibration.sizes[-1] if calibration.sizes else 1, 1)
            return torch.cat([self.forward(run, part) for part in inputs.split(min(smaller, inputs.shape[0] // 2))])

    def _timed(self, run: Callable[[Tensor], Tensor], inputs: Tensor, calibration: _Calibration, size: int) -> Tensor:
        synchronise = self.device.type == "cuda"
        if synchronise:
            torch.cuda.synchronize(self.device)
        began = time.perf_counter()
        result = run(inputs)
        if synchronise:
            torch.cuda.synchronize(self.device)
        calibration.record(size, inputs.shape[0], time.perf_counter() - began)
        return result
