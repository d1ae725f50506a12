"""Accumulator states as tensors plus JSON: exact round trips, nothing pickled."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from camscope.errors import CamscopeError
from camscope.passes.state import flatten_state, unflatten_state

_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.integers(0, 4).map(lambda n: torch.arange(n, dtype=torch.float64) / 3),
)
_keys = st.one_of(st.text(max_size=4), st.integers(-5, 5), st.booleans(), st.none())
_states = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_keys, inner, max_size=3),
    ),
    max_leaves=8,
)


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@settings(max_examples=60, deadline=None)
@given(_states)
def test_flatten_and_unflatten_round_trip_exactly(state: object) -> None:
    tensors, tree = flatten_state(state)
    text = json.dumps(tree, allow_nan=False)  # strict JSON: NaN and infinities are spelled out
    assert _same(unflatten_state(tensors, json.loads(text)), state)


def test_values_that_are_not_json_are_refused() -> None:
    with pytest.raises(CamscopeError, match="cannot store a state value of type object"):
        flatten_state({"x": object()})
    with pytest.raises(CamscopeError, match="dict key is a tuple"):
        flatten_state({(1, 2): 3})
    with pytest.raises(CamscopeError, match="missing"):
        unflatten_state({}, {"T": "t0"})
