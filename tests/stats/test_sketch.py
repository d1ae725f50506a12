"""The exactly mergeable quantile sketch and the moments accumulator (camscope.stats.sketch)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from camscope.errors import CamscopeError
from camscope.passes.engine import Accumulator
from camscope.stats.sketch import Moments, QuantileSketch


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


_QS = np.array([0, 0.1, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 100])


def _samples(kind: str, g: torch.Generator) -> torch.Tensor:
    if kind == "normal":
        return torch.randn(50_000, generator=g)
    if kind == "lognormal":
        return torch.randn(50_000, generator=g).exp()
    if kind == "offset":  # far from zero: a histogram anchored at 0 with relative bins would fail here
        return 1000 + torch.rand(50_000, generator=g)
    if kind == "ties":
        return torch.randint(-3, 4, (20_000,), generator=g).float()
    if kind == "outlier":  # one extreme value stretches the range
        return torch.cat([torch.randn(5_000, generator=g) * 1e-3, torch.tensor([1e6, -5.0])])
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["normal", "lognormal", "offset", "ties", "outlier"])
def test_sketch_quantiles_match_numpy_within_the_guarantee(kind):
    x = _samples(kind, _generator(1)).float()
    sketch = QuantileSketch()
    for chunk in x.split(1237):
        sketch.update(chunk)
    estimate = sketch.quantile(torch.tensor(_QS / 100)).numpy()
    reference = np.percentile(x.double().numpy(), _QS)
    spread = float(x.max() - x.min())
    error = np.abs(estimate - reference).max()
    assert error <= 0.001 * spread  # the requirement
    assert error <= 2 * spread / (sketch.bins - 2)  # the documented bound
    assert sketch.width < 2 * spread / (sketch.bins - 2)
    assert estimate[0] == reference[0] and estimate[-1] == reference[-1]  # min and max exact
    assert int(sketch.count) == x.numel()


def test_sketch_small_and_constant_inputs():
    sketch = QuantileSketch()
    sketch.update(torch.tensor([2.5]))
    assert sketch.quantile([0.0, 0.5, 1.0]).tolist() == [2.5, 2.5, 2.5]
    sketch.update(torch.full((10,), 2.5))
    assert sketch.quantile(0.3).item() == 2.5
    zeros = QuantileSketch()
    zeros.update(torch.zeros(5))
    assert zeros.quantile(0.5).item() == 0.0
    two = QuantileSketch()
    two.update(torch.tensor([-1.0, 3.0]))
    torch.testing.assert_close(two.quantile([0.0, 0.25, 1.0]), torch.tensor([-1.0, 0.0, 3.0], dtype=torch.float64))
    with pytest.raises(CamscopeError, match="empty"):
        QuantileSketch().quantile(0.5)
    with pytest.raises(CamscopeError, match=r"\[0, 1\]"):
        two.quantile(1.5)


@pytest.mark.parametrize("kind", ["normal", "offset", "outlier"])
def test_sketch_merge_equals_the_whole_bit_for_bit(kind):
    g = _generator(2)
    x = _samples(kind, g).float()
    whole = QuantileSketch(bins=512)
    whole.update(x)
    order = torch.randperm(x.numel(), generator=g)
    shards = [QuantileSketch(bins=512) for _ in range(3)]
    for i, part in enumerate(x[order].split(x.numel() // 3 + 1)):
        for chunk in part.split(101):  # other batching, other order
            shards[i].update(chunk)
    merged = shards[2].merge(shards[0]).merge(shards[1]).merge(QuantileSketch(bins=512))
    assert merged.equal(whole)
    assert QuantileSketch(bins=512).merge(whole).equal(whole)


# --------------------------------------------------------------------------------------
# Moments and the Accumulator protocol (state_dict / load_state_dict)
# --------------------------------------------------------------------------------------


def test_moments_match_numpy_and_merge():
    x = torch.randn(10_001, generator=_generator(3), dtype=torch.float64) * 3 + 7
    whole, first, second = Moments(), Moments(), Moments()
    for chunk in x.split(997):
        whole.update(chunk)
    first.update(x[:4000])
    second.update(x[4000:])
    merged = first.merge(second)
    values = x.numpy()
    for moments in (whole, merged):
        assert int(moments.count) == x.numel()
        assert float(moments.mean) == pytest.approx(values.mean(), rel=1e-13)
        assert moments.variance == pytest.approx(values.var(), rel=1e-12)
    assert math.isnan(Moments().variance)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and value.device == b[key].device, key
            assert torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


@pytest.mark.parametrize("accumulator", [QuantileSketch, Moments])
def test_accumulators_follow_the_protocol_and_round_trip_exactly(accumulator):
    g = _generator(4)
    first = accumulator(**({"bins": 128} if accumulator is QuantileSketch else {}))
    first.update(torch.randn(3000, generator=g))
    assert isinstance(first, Accumulator)
    state = first.state_dict()
    restored = type(first)(**({"bins": 16} if accumulator is QuantileSketch else {})).load_state_dict(state)
    _assert_same_state(restored.state_dict(), state)
    # A copy: later updates of the original leave the state (and the restored accumulator) alone.
    more = torch.randn(500, generator=g) * 10
    first.update(more)
    _assert_same_state(restored.state_dict(), state)
    # Resuming from the state gives what one uninterrupted stream gives.
    restored.update(more)
    _assert_same_state(restored.state_dict(), first.state_dict())


def test_sketch_state_is_checked():
    state = QuantileSketch(bins=32).state_dict()
    state["counts"] = state["counts"][:16]
    with pytest.raises(CamscopeError, match="32 counts"):
        QuantileSketch().load_state_dict(state)
