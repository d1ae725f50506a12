"""DiffCAM never returns another model's references, an unbounded cache, or a NaN score for a bad target."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

import camscope
from camscope.errors import CamscopeError
from camscope.methods.diffcam import GROUP_CACHE_SIZE, DiffCAM


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    ).eval()


X = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
REFERENCES = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _maps(model: nn.Module, method: DiffCAM) -> torch.Tensor:
    return camscope.explain(model, X, method=method, layer="0").maps


def test_a_reused_method_embeds_the_references_with_the_model_it_explains():
    first, second = _net(0), _net(1)
    method = DiffCAM(reference=REFERENCES)
    _maps(first, method)
    torch.testing.assert_close(_maps(second, method), _maps(second, DiffCAM(reference=REFERENCES)))
    torch.testing.assert_close(_maps(first, method), _maps(first, DiffCAM(reference=REFERENCES)))


def test_a_reused_method_sees_new_weights_after_load_state_dict():
    model, other = _net(0), _net(1)
    method = DiffCAM(reference=REFERENCES)
    before = _maps(model, method)
    model.load_state_dict(other.state_dict())
    after = _maps(model, method)
    torch.testing.assert_close(after, _maps(model, DiffCAM(reference=REFERENCES)))
    assert not torch.allclose(before, after)
    with torch.no_grad():  # an in-place update of one parameter
        model[0].bias.add_(1.0)
    torch.testing.assert_close(_maps(model, method), _maps(model, DiffCAM(reference=REFERENCES)))


def test_changing_the_references_in_place_keeps_the_cache_bounded():
    model = _net(0)
    references = REFERENCES.clone()
    method = DiffCAM(reference=references)
    for _ in range(40):
        references.mul_(1.01)
        got = _maps(model, method)
    torch.testing.assert_close(got, _maps(model, DiffCAM(reference=references.clone())))
    assert len(method._tensor_groups) <= GROUP_CACHE_SIZE


def test_the_cache_does_not_keep_a_model_alive():
    model = _net(2)
    alive = weakref.ref(model)
    method = DiffCAM(reference=REFERENCES)
    _maps(model, method)
    del model
    gc.collect()
    assert alive() is None


def _bank(model: nn.Module) -> camscope.ReferenceBank:
    data = [(torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 1, 2, 3] * 2))]
    return camscope.ReferenceBank.build(model, data, layer="0", progress=False)


@pytest.mark.parametrize("target", [99, 4, -1, [0, 99]])
@pytest.mark.parametrize(
    "form", ["tensor", "embeddings", "group", "bank", "class:1", "all", "others", "intra", "knn:2", "pair"]
)
def test_an_out_of_range_target_is_a_clear_error_for_every_reference(form, target):
    model = _net(0)
    bank = _bank(model)
    options = {
        "tensor": {"reference": REFERENCES},
        "embeddings": {"reference": torch.rand(5, 8)},
        "group": {"reference": bank.group("class", 1)},
        "bank": {"reference": bank},
        "pair": {"reference": (bank, "intra")},
    }.get(form, {"bank": bank, "reference": form})
    with pytest.raises(CamscopeError, match=r"target class (99|4|-1) is (out of range|not in the reference bank)"):
        camscope.explain(model, X, method="diffcam", layer="0", target=target, **options)


@pytest.mark.parametrize("target", [1.5, True, "dog", [0, 1, 2]])
def test_a_target_that_is_not_a_label_is_a_clear_error(target):
    with pytest.raises(CamscopeError, match="target"):
        camscope.explain(_net(0), X, method="diffcam", layer="0", reference=REFERENCES, target=target)


def test_a_valid_target_gives_the_models_score():
    model = _net(0)
    e = camscope.explain(model, X, method="diffcam", layer="0", reference=REFERENCES, target=3)
    torch.testing.assert_close(e.scores, model(X)[:, 3].detach())


def test_a_target_without_class_scores_is_a_clear_error():
    features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    with pytest.raises(CamscopeError, match="not class scores"):
        camscope.explain(features, X, method="diffcam", layer="0", reference=REFERENCES, target=1)


@pytest.mark.parametrize(
    "references, regularization",
    [
        (REFERENCES[:1], "oas"),  # one sample: w = z - mu
        (REFERENCES[:1].repeat(4, 1, 1, 1), "oas"),  # no spread
        (torch.cat([torch.zeros(20, 4), torch.rand(20, 4)], 1), 0.1),  # channels that never activate
        (torch.cat([torch.zeros(20, 4), torch.rand(20, 4)], 1), "oas"),
    ],
)
def test_degenerate_reference_groups_give_finite_maps(references, regularization):
    e = camscope.explain(_net(0), X, method="diffcam", layer="0", reference=references, regularization=regularization)
    assert torch.isfinite(e.maps).all() and torch.isfinite(e.raw).all() and torch.isfinite(e.weights).all()


@pytest.mark.parametrize(
    "references, message",
    [
        (REFERENCES[:1], "has 1 references for 8 features"),
        (torch.cat([torch.zeros(20, 4), torch.rand(20, 4)], 1), "singular"),
    ],
)
def test_unregularised_degenerate_groups_are_clear_errors(references, message):
    with pytest.raises(CamscopeError, match=message):
        camscope.explain(_net(0), X, method="diffcam", layer="0", reference=references, regularization=0)


def test_an_empty_group_names_the_group_and_the_fix():
    bank = camscope.ReferenceBank(8, "0").update(torch.rand(5, 8), torch.zeros(5, dtype=torch.long))
    with pytest.raises(CamscopeError, match=r"group others\(0\) is empty.*choose another group"):
        camscope.explain(_net(0), X, method="diffcam", layer="0", bank=bank, reference="others", check_model=False)
