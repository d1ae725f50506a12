"""Consistency's accumulator (merge, state) and the dataset passes' ``progress=`` of the IFA metrics."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import camscope
from camscope.errors import CamscopeError
from camscope.metrics import consistency, feature_masking_accuracy
from camscope.metrics.consistency import ConsistencyStatistics
from camscope.passes.engine import Accumulator


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(12, 3, 16, 16, generator=generator), torch.randint(0, 5, (12,), generator=generator)


def _identity(maps: torch.Tensor) -> torch.Tensor:
    return maps


def _double(maps: torch.Tensor) -> torch.Tensor:
    return 2 * maps


def _update(statistics: ConsistencyStatistics, model: nn.Module, inputs: torch.Tensor) -> None:
    explanation = camscope.explain(model, inputs, "gradcam", layer="features")
    sums = explanation.maps.flatten(1).sum(dim=1)
    statistics.update(torch.stack([sums, 2 * sums]), explanation.logits, explanation.classes)


def test_merging_two_halves_equals_one_pass(tiny_cnn: nn.Module, data) -> None:
    images, _ = data
    one, first, second = ConsistencyStatistics(2), ConsistencyStatistics(2), ConsistencyStatistics(2)
    for part in (images[:4], images[4:8], images[8:]):
        _update(one, tiny_cnn, part)
    _update(first, tiny_cnn, images[:4])
    _update(first, tiny_cnn, images[4:8])
    _update(second, tiny_cnn, images[8:])
    assert isinstance(first, Accumulator)
    merged = first.merge(second)
    for key, value in one.state_dict().items():
        expected = torch.as_tensor(value)
        assert torch.equal(torch.as_tensor(merged.state_dict()[key]), expected), key
    # The function's own pass gives the same per-image numbers (same batches).
    plain, raw, doubled = consistency(
        tiny_cnn, images, layer="features", scale=[None, _identity, _double], batch_size=4
    )
    assert torch.equal(plain.cam_sums, merged.cam_sums[0]) and torch.equal(plain.logits, merged.logits)
    assert torch.equal(doubled.cam_sums, 2 * raw.cam_sums)  # one row per variant, in order
    assert [r.name for r in (plain, raw, doubled)] == ["gradcam", "S-gradcam", "S-gradcam"]
    assert plain.logit.coefficient == merged.results(["a", "b"])[0].logit.coefficient
    with pytest.raises(CamscopeError, match="variants"):
        merged.merge(ConsistencyStatistics(1))


def test_state_dict_round_trip(tiny_cnn: nn.Module, data) -> None:
    images, _ = data
    statistics = ConsistencyStatistics(2)
    _update(statistics, tiny_cnn, images)
    restored = ConsistencyStatistics().load_state_dict(statistics.state_dict())
    assert len(restored) == 12 and restored.variants == 2
    for key, value in statistics.state_dict().items():
        assert torch.equal(torch.as_tensor(restored.state_dict()[key]), torch.as_tensor(value)), key
    before, after = statistics.results(["a", "b"]), restored.results(["a", "b"])
    assert [r.logit.coefficient for r in after] == [r.logit.coefficient for r in before]
    assert torch.equal(statistics.probabilities, tiny_cnn(images).softmax(1).max(1).values.double())


def test_consistency_needs_batches_and_checks_targets(tiny_cnn: nn.Module, data) -> None:
    images, _ = data
    with pytest.raises(CamscopeError, match="no batches"):
        consistency(tiny_cnn, [], layer="features")
    with pytest.raises(CamscopeError, match="needs a label"):
        consistency(tiny_cnn, images, layer="features", target="true")


def test_show_progress_is_a_deprecated_alias(tiny_cnn: nn.Module, data) -> None:
    images, labels = data
    with pytest.warns(DeprecationWarning, match="consistency"):
        old = consistency(tiny_cnn, images, layer="features", show_progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = consistency(tiny_cnn, images, layer="features", progress=False)
        accuracy = feature_masking_accuracy(tiny_cnn, [(images, labels)], "features", progress=False)
    assert torch.equal(old.cam_sums, new.cam_sums)
    with pytest.warns(DeprecationWarning, match="feature_masking_accuracy"):
        assert feature_masking_accuracy(tiny_cnn, [(images, labels)], "features", show_progress=False) == accuracy
    with pytest.raises(CamscopeError, match="only progress"):
        consistency(tiny_cnn, images, layer="features", progress=False, show_progress=True)
