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


class _OneChannel(nn.Module):
    """One non-negative feature map (ReLU of the channels' sum), pooled, and a linear head over 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 1, 1, bias=False), nn.ReLU())
        nn.init.constant_(self.features[0].weight, 1.0)
        self.head = nn.Linear(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_an_empty_map_is_said_and_its_signed_raw_map_is_what_argues_against() -> None:
    from camscope.analyses.counterfactual import empty_maps, signed_maps

    torch.manual_seed(0)
    model = _OneChannel().double().eval()
    # class c: dim images, class d: bright ones; with one feature w = (z - mu_d) / (s + lambda) < 0 for c's images
    dim = torch.rand(6, 3, 4, 4, generator=_generator(1), dtype=torch.float64) * 0.2
    bright = 0.8 + torch.rand(6, 3, 4, 4, generator=_generator(2), dtype=torch.float64) * 0.2
    middle = 0.4 + torch.rand(6, 3, 4, 4, generator=_generator(3), dtype=torch.float64) * 0.2
    labels = torch.tensor([0] * 6 + [1] * 6 + [2] * 6)
    bank = ReferenceBank.build(model, [(torch.cat([dim, bright, middle]), labels)], layer="features")
    pair = counterfactual(model, dim[:2], bank, versus=1, explained=0, regularization=0.1)
    assert bool((pair.why.weights < 0).all()) and bool((pair.why.raw < 0).all())
    assert pair.why_empty.tolist() == [True, True] and float(pair.why.maps.abs().max()) == 0.0
    # the counterpart (why d, not c: mu_d - mu_c > 0) is not empty
    assert pair.counterpart_empty.tolist() == [False, False]
    # the signed map is the raw map upsampled and divided by its largest |value|: in [-1, 0) here
    signed = signed_maps(pair.why)
    expected = pair.why.raw / pair.why.raw.abs().flatten(1).amax(dim=1)[:, None, None]
    torch.testing.assert_close(signed, expected)  # 4x4 inputs: the layer's grid is the input's
    assert float(signed.min()) == -1.0
    assert empty_maps(pair.counterpart).tolist() == [False, False]
