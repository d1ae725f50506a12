"""Fuzzed inputs and targets across every registered method.

Each call returns finite maps of the input's spatial shape, or raises a CamscopeError (never another
exception type); afterwards no hook is left on the model and its modes, flags and buffers are unchanged.

Policies checked here: an empty batch is refused by every method; inputs must have the dtype of the
model's parameters (nothing is cast: fp16/bf16/fp64 models take inputs of their own dtype);
bools are not class indices; NumPy integers are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import camscope
from camscope.errors import CamscopeError
from camscope.methods.attention import AttentionMethod
from conftest import TinyStridedCNN

ALL_METHODS = sorted(camscope.available_methods())
# The attention methods refuse this CNN (a CamscopeError, which the fuzzed calls accept); they are fuzzed on
# transformers in tests/methods/test_attention_robustness.py.
METHODS = [name for name in ALL_METHODS if not issubclass(camscope.available_methods()[name], AttentionMethod)]
SCORE_FAMILY = {"scorecam", "sscam", "iscam", "finer-scorecam", "ablationcam"}


class OneChannel(nn.Module):
    """A grayscale model with a 1 x 1 grid at its last convolution for 4 x 4 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, stride=4, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def options_for(method: str, inputs: torch.Tensor) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if method == "diffcam":
        options["reference"] = torch.randn(3, *inputs.shape[1:], generator=torch.Generator().manual_seed(5)).to(
            inputs.dtype
        )
    if method in SCORE_FAMILY:
        options["batch_size"] = 4
    if method in ("sscam", "iscam"):
        options["samples"] = 2
    if method == "smoothgradcampp":
        options["samples"] = 2
    if method.startswith("finer-"):
        options["references"] = 2
    return options


def snapshot(model: nn.Module) -> tuple[list[bool], list[bool], dict[str, torch.Tensor]]:
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def check_call(model: nn.Module, inputs: Any, method: str, target: Any = None, layer: Any = None, **extra: Any) -> str:
    """Run one call; assert the property; return 'ok' or 'error'."""
    before = snapshot(model)
    options = options_for(method, inputs) if isinstance(inputs, torch.Tensor) else {}
    options.update(extra)
    try:
        explanation = camscope.explain(model, inputs, method=method, layer=layer, target=target, **options)
    except CamscopeError as error:
        message = str(error)
        outcome = "error"
    else:
        assert explanation.maps.shape == (inputs.shape[0], *inputs.shape[2:])
        assert bool(torch.isfinite(explanation.maps).all()), f"{method}: non-finite maps"
        assert bool(torch.isfinite(explanation.raw).all()), f"{method}: non-finite raw"
        outcome, message = "ok", "ok"
    assert message
    after = snapshot(model)
    assert hook_count(model) == 0
    assert after[:2] == before[:2]
    assert all(torch.equal(after[2][k], before[2][k]) for k in after[2])
    return outcome


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return TinyStridedCNN().train()  # BatchNorm in train mode: nothing may move it


def images(batch: int = 2, size: int = 8, channels: int = 3, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(batch + size)).to(dtype)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_plain_call_succeeds(one_thread, model: nn.Module, method: str) -> None:
    assert check_call(model, images(), method, target=[1, 2]) == "ok"


@pytest.mark.parametrize("method", METHODS)
def test_empty_batch_is_a_clear_error_for_every_method(one_thread, model: nn.Module, method: str) -> None:
    with pytest.raises(CamscopeError, match="empty batch"):
        camscope.explain(model, images(batch=0), method=method, **options_for(method, images()))
    assert hook_count(model) == 0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "variant", ["batch1", "odd", "channels_last", "noncontiguous", "nan", "inf", "fp64-inputs", "one-channel"]
)
def test_input_variants(one_thread, model: nn.Module, method: str, variant: str) -> None:
    x = images(batch=3, size=9)
    net, layer = model, None
    expected = "ok"
    if variant == "batch1":
        x = x[:1]
    elif variant == "odd":
        x = images(batch=2, size=11)[..., :7]
    elif variant == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif variant == "noncontiguous":
        x = images(batch=2, size=18)[:, :, ::2, ::2]
        assert not x.is_contiguous()
    elif variant in ("nan", "inf"):
        x[1, 0, 2, 3] = float("nan") if variant == "nan" else float("inf")
        expected = "error"
    elif variant == "fp64-inputs":
        x = x.double()
        expected = "error"
    elif variant == "one-channel":
        torch.manual_seed(0)
        net, x, layer = OneChannel().eval(), images(batch=2, size=4, channels=1), "features.1"  # a 1 x 1 grid
    target = None if method.startswith("finer-") else 0
    assert check_call(net, x, method, target=target, layer=layer) == expected


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", METHODS)
def test_models_in_other_dtypes(one_thread, method: str, dtype: torch.dtype) -> None:
    """A model in fp64/bf16/fp16 explains inputs of its own dtype; float32 inputs are refused, not cast."""
    torch.manual_seed(0)
    net = TinyStridedCNN().to(dtype).eval()
    assert check_call(net, images(dtype=dtype), method) == "ok"
    with pytest.raises(CamscopeError, match="does not cast silently"):
        camscope.explain(net, images(), method=method, **options_for(method, images()))


BAD_TARGETS: list[Any] = [True, False, [True, 0], [1, False], np.array([True, False]), torch.tensor([True, False])]
BAD_TARGETS += [99, -1, [0, 99], 2.0, [0.5, 1.0], "cat", [0, "x"], [0, 1, 2], np.array([0.0, 1.0]), 2**70]


@pytest.mark.parametrize("target", BAD_TARGETS, ids=[repr(t)[:20] for t in BAD_TARGETS])
@pytest.mark.parametrize("method", ["gradcam", "scorecam", "eigencam"])
def test_bad_targets_are_clear_errors(one_thread, model: nn.Module, method: str, target: Any) -> None:
    assert check_call(model, images(), method, target=target) == "error"


GOOD_TARGETS: list[Any] = [1, [1, 2], (3, 0), torch.tensor(2), torch.tensor([0, 3]), np.int64(2)]
GOOD_TARGETS += [np.array([1, 2]), np.array([1, 2], dtype=np.int32), [np.int64(1), np.int16(3)], np.array(3)]


@pytest.mark.parametrize("target", GOOD_TARGETS, ids=[repr(t)[:24] for t in GOOD_TARGETS])
def test_integer_targets_of_every_kind(one_thread, model: nn.Module, target: Any) -> None:
    explanation = camscope.explain(model, images(), method="gradcam", target=target)
    expected = np.broadcast_to(np.asarray([int(t) for t in np.asarray(target).reshape(-1)]), (2,))
    assert explanation.classes.tolist() == expected.tolist()


@pytest.mark.parametrize("layer", [3, 2.5, [3], ["stage.0", 1], {"a": 1}, None])
def test_layer_of_the_wrong_type(one_thread, model: nn.Module, layer: Any) -> None:
    if layer is None:
        return
    with pytest.raises(CamscopeError, match="dotted module name"):
        camscope.explain(model, images(), layer=layer)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(ALL_METHODS),
    batch=st.integers(0, 3),
    size=st.integers(1, 12),
    layout=st.sampled_from(["plain", "channels_last", "noncontiguous"]),
    poison=st.sampled_from([None, float("nan"), float("inf"), float("-inf")]),
    target=st.one_of(
        st.none(),
        st.integers(-2, 6),
        st.booleans(),
        st.lists(st.integers(-1, 5), min_size=0, max_size=4),
        st.integers(0, 3).map(np.int64),
    ),
)
def test_fuzz_property(one_thread, model: nn.Module, method, batch, size, layout, poison, target) -> None:
    x = torch.randn(batch, 3, 2 * size if layout == "noncontiguous" else size, size)
    if layout == "noncontiguous":
        x = x[:, :, ::2]
    elif layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    if poison is not None and x.numel():
        x[0, 0, 0, 0] = poison
    if method.startswith("finer-") and target is not None and not isinstance(target, bool):
        target = None  # Finer-CAM explains the predicted class against its neighbours
    check_call(model, x, method, target=target)
