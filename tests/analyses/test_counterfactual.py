"""Counterfactual pairs: "why c, not d" and its counterpart against closed forms."""

from __future__ import annotations

import torch
from torch import nn

from camscope.analyses.counterfactual import counterfactual
from camscope.stats.reference_bank import ReferenceBank
from conftest import feature_net as _net


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _layer_embeddings(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Independent embedding: the features' spatial mean, computed directly."""
    with torch.no_grad():
        return model.features(x).mean(dim=(2, 3))


def _labelled_data(model: nn.Module, n: int = 60, classes: int = 3, seed: int = 0, size: int = 12):
    x = torch.randn(n, 3, size, size, generator=_generator(seed), dtype=torch.float64)
    labels = torch.arange(n) % classes
    x = x + labels[:, None, None, None].double() * 0.5  # classes differ
    return x, labels


def test_counterfactual_pair() -> None:
    model = _net()
    x, labels = _labelled_data(model)
    bank = ReferenceBank.build(model, [(x, labels)], layer="features", class_names=["a", "b", "c"])
    xq = x[:2]
    pair = counterfactual(model, xq, bank, versus="c", explained="a")
    z = _layer_embeddings(model, xq)
    torch.testing.assert_close(pair.why.weights, bank.group("class", 2).weights(z), rtol=1e-7, atol=1e-9)
    group_a = bank.group("class", 0)
    expected = group_a.solve((bank.group("class", 2).mean - group_a.mean).expand(2, -1))
    torch.testing.assert_close(pair.counterpart.weights, expected, rtol=1e-7, atol=1e-9)
    with torch.no_grad():
        activations = model.features(xq)
    torch.testing.assert_close(pair.counterpart.raw, torch.einsum("bk,bkhw->bhw", expected, activations))
    assert pair.explained.tolist() == [0, 0] and pair.versus == 2 and pair.counterpart.classes.tolist() == [2, 2]
    # with examples of d, the counterpart is DiffCAM on them against class c
    others = x[labels == 2][:3]
    pair = counterfactual(model, xq, bank, versus=2, explained=0, counter_inputs=others)
    torch.testing.assert_close(
        pair.counterpart.weights, group_a.weights(_layer_embeddings(model, others)), rtol=1e-7, atol=1e-9
    )
