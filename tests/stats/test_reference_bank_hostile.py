"""Reference banks refuse NaN models, bad labels, foreign banks and empty classes with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import camscope
from camscope.errors import CamscopeError
from camscope.passes.batches import label_tensor


class _Poison(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _net(factor: float = 1.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), _Poison(factor), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    ).eval()


X = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 1, 0, 1])


def _bank(model: nn.Module | None = None, layer: str = "1", size: int = 8, **options) -> camscope.ReferenceBank:
    data = [(X[:, :, :size, :size], LABELS)]
    return camscope.ReferenceBank.build(model or _net(), data, layer=layer, progress=False, **options)


@pytest.mark.parametrize("factor", [float("nan"), float("inf")])
def test_a_model_with_non_finite_activations_is_a_clear_error(factor):
    with pytest.raises(CamscopeError, match="NaN or infinite"):
        _bank(_net(factor))
    with pytest.raises(CamscopeError, match="NaN or infinite"):
        camscope.explain(_net(factor), X, method="diffcam", layer="1", reference=torch.rand(5, 4))
    with pytest.raises(CamscopeError, match="NaN or infinite"):
        camscope.explain(_net(factor), X, method="diffcam", layer="1", reference=X)
    with pytest.raises(CamscopeError, match="NaN or infinite"):
        camscope.explain(_net(), X, method="diffcam", layer="1", reference=_net(factor)[:2](X).mean((2, 3)).detach())


def test_weights_that_overflow_the_activations_dtype_are_a_clear_error():
    tiny = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 1e-25
    with pytest.raises(CamscopeError, match="overflow"):
        camscope.explain(_net(), X, method="diffcam", layer="1", reference=tiny)


@pytest.mark.parametrize(
    "labels, message",
    [
        (torch.tensor([True, False, True, False]), "dtype torch.bool"),
        (torch.tensor([0.0, 1.0, 0.5, 1.0]), "dtype torch.float32"),
        (np.array([0.0, 1.0, np.nan, 1.0]), "dtype torch.float64"),
        (torch.tensor([1j, 0j, 1j, 0j]), "dtype torch.complex64"),
        (["cat", "dog", "cat", "dog"], "map class names to indices"),
        (torch.tensor([0, 1, 0]), "4 samples but labels of shape \\[3\\]"),
        (torch.tensor([[0, 1], [0, 1]]), "4 samples but labels of shape \\[2, 2\\]"),
        (torch.tensor([0, 1, -5, 1]), "label -5 is not a class index"),
    ],
)
def test_bad_labels_are_clear_errors_in_build_and_update(labels, message):
    with pytest.raises(CamscopeError, match=message):
        camscope.ReferenceBank.build(_net(), [(X, labels)], layer="1", progress=False)
    with pytest.raises(CamscopeError, match=message):
        camscope.ReferenceBank(4, "1").update(torch.rand(4, 4), labels)


def test_good_labels_are_accepted_in_every_form():
    whole_floats = (np.array([0.0, 1.0, 0.0, 1.0]), LABELS.float())  # exact: nothing is truncated
    for labels in (
        LABELS,
        LABELS.int(),
        np.array([0, 1, 0, 1]),
        [0, 1, 0, 1],
        LABELS[:, None],
        [-1, 0, -1, 0],
        *whole_floats,
    ):
        assert label_tensor(labels, 4).dtype == torch.int64
        bank = camscope.ReferenceBank(4, "1").update(torch.rand(4, 4), labels)
        assert bank.count == 4


def test_merging_banks_that_differ_is_a_clear_error():
    bank = _bank()
    others = {
        "model": _bank(_net(seed=1)),
        "layer": _bank(layer="0"),
        "embedding": camscope.ReferenceBank(4, "1", embedding="cls", model=bank.model),
        "feature size": camscope.ReferenceBank(3, "1", model=bank.model),
        "input size": _bank(size=6),
    }
    for what, other in others.items():
        with pytest.raises(CamscopeError, match=f"cannot merge reference banks that differ: {what}"):
            bank.merge(other)
    with pytest.raises(CamscopeError, match="can only merge a ReferenceBank"):
        bank.merge(5)  # type: ignore[arg-type]


def test_a_merged_bank_keeps_the_fingerprint_of_either_side():
    bank = _bank()
    plain = camscope.ReferenceBank(4, "1").update(torch.rand(2, 4), [0, 1])
    merged = plain.merge(bank)
    assert merged.model == bank.model and merged.input_size == bank.input_size
    with pytest.raises(CamscopeError, match="other weights"):
        merged.check(model=_net(seed=1))


def test_a_class_without_samples_is_a_clear_error():
    bank = _bank()
    with pytest.raises(CamscopeError, match=r"the bank has no class 7; it has 0 \(0\), 1 \(1\)"):
        bank.group("class", 7)
    with pytest.raises(CamscopeError, match="the bank has no class 'zebra'"):
        camscope.explain(_net(), X, method="diffcam", layer="1", bank=bank, reference="class:zebra")
    single = camscope.ReferenceBank(4, "1").update(torch.rand(3, 4), [0, 0, 0])
    with pytest.raises(CamscopeError, match=r"group others\(0\) is empty"):
        single.group("others", 0)


def test_an_empty_knn_group_says_which_group_and_how_to_fix():
    single = camscope.ReferenceBank(4, "1").update(torch.rand(3, 4), [0, 0, 0])
    with pytest.raises(CamscopeError, match=r"group knn is empty.*use reference 'all' or 'intra'"):
        single.group("knn", 0, embedding=torch.rand(4))
    with pytest.raises(CamscopeError, match=r"group knn is empty"):
        camscope.explain(
            _net(), X, method="diffcam", layer="1", bank=single, reference="knn", target=0, check_model=False
        )
