"""grad-cam 1.5.7's confidence-change and perturbation-confidence metrics, number for number.

Tolerances: the confidence-change metrics agree to 1e-6 (one forward pass each, in float32);
the perturbation-confidence averages to 1e-5 (noiseless imputation solved to 1e-4, against
scipy's direct solve).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange, DropInConfidence, IncreaseInConfidence
from pytorch_grad_cam.metrics.perturbation_confidence import (
    AveragerAcrossThresholds,
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torch import nn

from camscope.errors import CamscopeError
from camscope.metrics import (
    confidence_change,
    drop_in_confidence,
    increase_in_confidence,
    least_relevant_first,
    most_relevant_first,
    road,
)

PERCENTILES = [10, 30, 50, 70, 90]  # grad-cam's shares of pixels kept


def _peer_targets(kind: str, classes: list[int]) -> list[Any]:
    target = ClassifierOutputSoftmaxTarget if kind == "probability" else ClassifierOutputTarget
    return [target(c) for c in classes]


@pytest.mark.parametrize("score", ["probability", "logit"])
def test_confidence_change_drop_and_increase_match_grad_cam(
    tiny_cnn: nn.Module, images: torch.Tensor, score: str
) -> None:
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))  # grad-cam multiplies as given
    classes = [0, 2, 4]
    targets = _peer_targets(score, classes)
    ours = confidence_change(tiny_cnn, images, maps, target=classes, score=score, normalize=False)
    for peer, key in ((CamMultImageConfidenceChange(), "change"), (DropInConfidence(), "drop")):
        np.testing.assert_allclose(ours[key].numpy(), peer(images, maps.numpy(), targets, tiny_cnn), atol=1e-6)
    drop = drop_in_confidence(tiny_cnn, images, maps, target=classes, score=score, normalize=False)
    assert drop.headline == "drop" and torch.equal(drop["drop"], ours["drop"])
    increase = increase_in_confidence(tiny_cnn, images, maps, target=classes, score=score)
    # increase_in_confidence scales the maps to [0, 1] (these are already nearly so): the same verdicts
    np.testing.assert_array_equal(
        increase["increase"].numpy(), IncreaseInConfidence()(images, maps.numpy(), targets, tiny_cnn)
    )


def test_confidence_change_closed_form_and_normalisation() -> None:
    """A linear model: the score of ``L * x`` is known in closed form; normalize=True scales L to [0, 1] first."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]))
    x = torch.ones(1, 1, 2, 2)
    maps = torch.tensor([[[2.0, 4.0], [6.0, 10.0]]])
    raw = confidence_change(model, x, maps, target=0, score="logit", normalize=False)
    assert raw["score"].item() == 10.0 and raw["masked_score"].item() == 2 + 8 + 18 + 40
    scaled = confidence_change(model, x, maps, target=0, score="logit")  # (L - 2) / 8
    torch.testing.assert_close(scaled["masked_score"], torch.tensor([(0 + 2 * 0.25 + 3 * 0.5 + 4 * 1.0)]))
    torch.testing.assert_close(scaled["change"], scaled["masked_score"] - 10.0)
    assert scaled["drop"].item() == pytest.approx(10.0 - 6.0)


def _peer_average(
    kind: str, imputer: Any, images: torch.Tensor, maps: torch.Tensor, targets: list[Any], model: nn.Module
) -> np.ndarray:
    remove = RemoveMostRelevantFirst if kind == "morf" else RemoveLeastRelevantFirst
    averager = AveragerAcrossThresholds(lambda q: PerturbationConfidenceMetric(remove(q, imputer)), PERCENTILES)
    return averager(images, maps.numpy(), targets, model)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 warns inside grad-cam's np.percentile on tensors
@pytest.mark.parametrize("imputation", ["linear", "zero"])
def test_perturbation_confidence_matches_grad_cam(tiny_cnn: nn.Module, imputation: str) -> None:
    from pytorch_grad_cam.metrics import road as peer

    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(5))  # distinct values: no ties
    classes = [1, 3, 0]
    targets = _peer_targets("probability", classes)
    # grad-cam keeps the pixels below np.percentile(map, q) (interpolated): remove N minus that many
    removed = [int((maps[0].numpy() >= np.percentile(maps[0].numpy(), q)).sum()) for q in PERCENTILES]
    assert all(
        int((m.numpy() >= np.percentile(m.numpy(), q)).sum()) == r for m in maps for q, r in zip(PERCENTILES, removed)
    )
    fractions = [r / 256 for r in removed]
    imputer = peer.NoisyLinearImputer(noise=0.0) if imputation == "linear" else (lambda image, keep: image * keep)
    options = dict(target=classes, fractions=fractions, imputation=imputation, noise=0.0, tie_break=0.0)
    for kind, metric in (("morf", most_relevant_first), ("lerf", least_relevant_first)):
        ours = metric(tiny_cnn, images, maps, **options)
        reference = _peer_average(kind, imputer, images, maps, targets, tiny_cnn)
        np.testing.assert_allclose(ours["change"].numpy(), reference, atol=1e-5)


def test_perturbation_confidence_is_half_of_road(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    """With noise: each order's change curve is ROAD's curve minus the clean score (the same seeded steps)."""
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    combined = road(tiny_cnn, images, maps, percentages=(0.25, 0.75), seed=3)
    morf = most_relevant_first(tiny_cnn, images, maps, fractions=(0.25, 0.75), seed=3)
    lerf = least_relevant_first(tiny_cnn, images, maps, fractions=(0.25, 0.75), seed=3)
    score = combined["score"][:, None]
    torch.testing.assert_close(morf.curves["change"], combined.curves["morf"] - score, atol=1e-6, rtol=0)
    torch.testing.assert_close(lerf.curves["change"], combined.curves["lerf"] - score, atol=1e-6, rtol=0)
    torch.testing.assert_close((lerf["change"] - morf["change"]) / 2, combined["combined"], atol=1e-6, rtol=0)
    assert morf.higher_is_better["change"] is False and lerf.higher_is_better["change"] is True


def test_perturbation_confidence_errors(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    maps = torch.rand(3, 16, 16)
    with pytest.raises(CamscopeError, match="unknown imputation"):
        most_relevant_first(tiny_cnn, images, maps, imputation="blur")
    with pytest.raises(CamscopeError, match="fractions must lie in"):
        least_relevant_first(tiny_cnn, images, maps, fractions=(50,))
    with pytest.raises(CamscopeError, match="batch_size must be a positive integer or 'auto'"):
        most_relevant_first(tiny_cnn, images, maps, batch_size="fast")
    with pytest.raises(CamscopeError, match="maps contain NaN"):
        confidence_change(tiny_cnn, images, torch.full((3, 16, 16), float("nan")))
