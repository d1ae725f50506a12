"""Counterfactual pairs refuse what would give an empty or mislabelled map, with clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camscope
from camscope.analyses.counterfactual import counterfactual
from camscope.errors import CamscopeError


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)
    ).eval()
    images = torch.rand(9, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    bank = camscope.ReferenceBank.build(model, [(images, torch.arange(9) % 3)], layer="0", progress=False)
    return model, bank, torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))


def test_the_same_class_on_both_sides_is_a_clear_error(setup):
    model, bank, x = setup
    with pytest.raises(CamscopeError, match="explained and versus are the same class"):
        counterfactual(model, x, bank, versus=1, explained=1)


def test_an_input_explained_as_the_versus_class_is_a_clear_error(setup):
    model, bank, x = setup
    z = camscope.explain(model, x, method="gradcam", layer="0").activations.mean(dim=(2, 3))
    versus = int(bank.nearest_classes(z, 1)[0, 0])
    with pytest.raises(CamscopeError, match=r"input\(s\) \[0.*\] are explained as class"):
        counterfactual(model, x, bank, versus=versus, predict="nearest")


@pytest.mark.parametrize("option", ["target", "reference", "method"])
def test_options_counterfactual_sets_itself_are_clear_errors(setup, option):
    model, bank, x = setup
    with pytest.raises(CamscopeError, match=f"counterfactual sets {option} itself"):
        counterfactual(model, x, bank, versus=0, explained=1, **{option: 2})


def test_a_valid_pair_has_finite_nonzero_maps(setup):
    model, bank, x = setup
    pair = counterfactual(model, x, bank, versus=0, explained=1)
    for explanation in (pair.why, pair.counterpart):
        assert torch.isfinite(explanation.maps).all() and (explanation.maps.flatten(1).amax(1) > 0).all()
