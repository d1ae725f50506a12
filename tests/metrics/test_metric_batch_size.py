"""A metric's batch_size must be a positive integer: anything else is a clear CamscopeError."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from camscope.errors import CamscopeError
from camscope.metrics.faithfulness import average_drop, deletion, insertion


@pytest.mark.parametrize("batch_size", [2.5, 0, -3, True, "8", None])
@pytest.mark.parametrize("metric", [deletion, insertion, average_drop])
def test_bad_batch_size_is_a_clear_error(
    tiny_cnn: nn.Module, images: torch.Tensor, metric: Any, batch_size: Any
) -> None:
    maps = torch.rand(images.shape[0], *images.shape[2:])
    with pytest.raises(CamscopeError, match="batch_size must be a positive integer"):
        metric(tiny_cnn, images, maps, target=0, batch_size=batch_size)


def test_integer_like_batch_sizes_work(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    maps = torch.rand(images.shape[0], *images.shape[2:])
    plain = deletion(tiny_cnn, images, maps, target=0, batch_size=4)
    numpy = deletion(tiny_cnn, images, maps, target=0, batch_size=np.int64(4))
    assert plain.values.keys() == numpy.values.keys()
    assert all(torch.equal(plain.values[key], numpy.values[key]) for key in plain.values)


@pytest.mark.parametrize("size", [1, 2, 5, 7, 64])
def test_chunks_cover_every_step_and_row_once_in_order(size: int) -> None:
    from camscope.metrics.batching import PerturbedBatches

    batches = PerturbedBatches(nn.Identity(), torch.zeros(5, 3, 4, 4), batch_size=size)
    covered = [
        (int(step), row)
        for t, rows in batches.chunks(steps=7, rows=5)
        for step in t
        for row in range(rows.start, rows.stop)
    ]
    assert covered == [(step, row) for step in range(7) for row in range(5)]


class _Clock:
    """A fake clock that the model below advances by its cost: per-image seconds by batch size."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class _CostlyModel(nn.Module):
    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.per_image = {4: 1.0, 8: 0.6, 16: 0.5, 32: 0.7, 64: 0.3}
        self.clock = clock
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.shape[0])
        self.clock.now += self.per_image.get(x.shape[0], 1.0) * x.shape[0]
        return self.weight * x.flatten(1)[:, :3]


def test_auto_batch_size_is_calibrated_on_the_metrics_own_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sizes 4, 8, 16, 32 are tried (twice each) until one is >5% slower per image; the search resumes, the best is kept."""
    from camscope.metrics import batching

    clock = _Clock()
    monkeypatch.setattr(batching, "time", clock)
    model, images = _CostlyModel(clock), torch.rand(2, 3, 4, 4)
    maps = torch.rand(2, 4, 4)
    expected = [[4, 4, 8, 8, 8], [16, 16], [32], [32], [16, 16]]  # 16 steps x 2 images: 32 perturbed images a call
    for call, sizes in enumerate(expected):
        model.seen.clear()
        result = deletion(model, images, maps, target=0, step=1)
        assert model.seen[1:] == sizes, call  # after the clean pass
        assert batching.calibrated_batch_size(model, images) == (16 if call >= 3 else None)
    assert result.curves["curve"].shape == (2, 17)
    assert batching.calibrated_batch_size(model, torch.rand(2, 3, 8, 8)) is None  # another image size: its own search


class _SmallMemoryModel(_CostlyModel):
    """Faster per image in larger batches, but out of (GPU) memory on more than 8 images at once."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__(clock)
        self.per_image = {4: 1.0, 8: 0.9, 16: 0.8}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(x)


def test_auto_batch_size_steps_down_when_memory_runs_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from camscope.metrics import batching

    monkeypatch.setattr(batching, "time", _Clock())
    model, images, maps = _SmallMemoryModel(batching.time), torch.rand(2, 3, 4, 4), torch.rand(2, 4, 4)
    expected = deletion(model, images, maps, target=0, step=1, batch_size=4)
    for _ in range(3):  # the search reaches 16, which runs out of memory: 8 it is
        model.seen.clear()
        result = deletion(model, images, maps, target=0, step=1)
        torch.testing.assert_close(result.curves["curve"], expected.curves["curve"])
    assert batching.calibrated_batch_size(model, images) == 8 and model.seen[1:] == [8, 8, 8, 8]
    with pytest.raises(CamscopeError, match="ran out of memory on 16 perturbed images at once: pass a smaller"):
        deletion(model, images, maps, target=0, step=1, batch_size=16)
