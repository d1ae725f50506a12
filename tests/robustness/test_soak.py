"""2,000 calls mixing successes and failures leave no hook, the model as it was, and bounded memory.

Memory is measured as the number of live Python objects (tensors included) after a warm-up: a leak of
hooks, captured activations, closures or tensors grows it with the number of calls.
"""

from __future__ import annotations

import gc
import itertools
from typing import Any

import torch
from torch import nn

import camscope
from camscope.errors import CamscopeError
from conftest import TinyStridedCNN

CALLS = 2000
WARM_UP = 200


def _calls(x: torch.Tensor, bad: torch.Tensor) -> list[tuple[dict[str, Any], bool]]:
    """(keyword arguments, succeeds) for each kind of call."""
    return [
        ({"method": "gradcam", "target": [1, 2]}, True),
        ({"method": "layercam", "layer": "stage.0"}, True),
        ({"method": "eigencam", "layer": "stem"}, True),
        ({"method": "scorecam", "layer": "stem", "target": 3, "batch_size": 8}, True),
        ({"method": "gradcam", "layer": "stage.9"}, False),  # unknown layer
        ({"method": "gradcam", "layer": 3}, False),  # a layer of the wrong type
        ({"method": "gradcam", "target": 7}, False),  # out of range
        ({"method": "scorecam", "target": [True, False]}, False),  # bools are not classes
        ({"method": "gradcam", "inputs": bad}, False),  # NaN input
        ({"method": "eigencam", "inputs": x[:0]}, False),  # empty batch
    ]


def _state(model: nn.Module) -> tuple[list[bool], list[bool], dict[str, torch.Tensor]]:
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def test_soak(one_thread) -> None:
    torch.manual_seed(0)
    model = TinyStridedCNN().train()
    model.stem[0].weight.requires_grad_(False)  # mixed flags must come back as they were
    x = torch.randn(2, 3, 4, 4)
    bad = x.clone()
    bad[1, 2, 3, 1] = float("nan")
    kinds = _calls(x, bad)
    before = _state(model)
    outcomes = {"ok": 0, "error": 0}

    def call(kwargs: dict[str, Any], succeeds: bool) -> None:
        kwargs = dict(kwargs)
        inputs = kwargs.pop("inputs", x)
        try:
            maps = camscope.explain(model, inputs, **kwargs).maps
        except CamscopeError:
            assert not succeeds
            outcomes["error"] += 1
        else:
            assert succeeds and maps.shape == (2, 4, 4)
            outcomes["ok"] += 1

    cycle = itertools.cycle(kinds)
    for _ in range(WARM_UP):
        call(*next(cycle))
    gc.collect()
    start = len(gc.get_objects())
    for _ in range(CALLS - WARM_UP):
        call(*next(cycle))
    gc.collect()
    growth = len(gc.get_objects()) - start
    assert outcomes == {"ok": CALLS * 4 // 10, "error": CALLS * 6 // 10}
    assert growth < 200, f"{growth} more live objects after {CALLS - WARM_UP} calls"
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0
    after = _state(model)
    assert after[:2] == before[:2]
    assert all(torch.equal(after[2][k], before[2][k]) for k in after[2])
