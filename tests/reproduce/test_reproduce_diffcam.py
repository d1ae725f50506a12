"""The DiffCAM report section's own pieces: statistics, verdict rule, per-pair DiffCAM maps (tiny, seeded)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.covariance import OAS
from sklearn.metrics import roc_auc_score

from camscope.accumulators.reference_bank import ReferenceBank
from camscope.reproduce import FAILS, HOLDS, PARTLY
from camscope.reproduce.diffcam.measure import auroc, comparison_verdict, diffcam_versus, paired_bootstrap


def test_paired_bootstrap_mean_interval_and_nans() -> None:
    generator = torch.Generator().manual_seed(0)
    b = torch.rand(200, generator=generator)
    a = b + 0.1 + 0.05 * torch.randn(200, generator=generator)
    a[:5] = float("nan")  # undefined samples are skipped
    result = paired_bootstrap(a, b, torch.Generator().manual_seed(3))
    difference = (a - b)[5:].double()
    assert result.count == 195
    assert result.difference == pytest.approx(float(difference.mean()), abs=1e-12)
    standard_error = float(difference.std() / math.sqrt(195))
    assert result.low < result.difference < result.high
    # a percentile interval of the mean is close to +-1.96 standard errors
    assert result.high - result.low == pytest.approx(2 * 1.96 * standard_error, rel=0.15)
    assert result.outcome == "better"
    assert paired_bootstrap(b, a, torch.Generator().manual_seed(3)).outcome == "worse"
    again = paired_bootstrap(a, b, torch.Generator().manual_seed(3))
    assert (again.low, again.high) == (result.low, result.high)


def test_comparison_verdict_rule() -> None:
    assert comparison_verdict(["better", "better"]) == HOLDS
    assert comparison_verdict(["better", "tie"]) == PARTLY
    assert comparison_verdict(["better", "worse"]) == PARTLY
    assert comparison_verdict(["tie", "tie"]) == FAILS
    assert comparison_verdict(["worse", "tie"]) == FAILS


def test_auroc_matches_sklearn_with_ties() -> None:
    generator = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 6, (80,), generator=generator).double()
    positives = torch.rand(80, generator=generator) < 0.3
    assert auroc(scores, positives) == pytest.approx(roc_auc_score(positives.numpy(), scores.numpy()), abs=1e-12)
    assert math.isnan(auroc(scores, torch.zeros(80, dtype=torch.bool)))


def test_diffcam_versus_uses_each_pairs_class(tiny_cnn: torch.nn.Module) -> None:
    """Each sample's map is DiffCAM against its own counterfactual class (reference: sklearn's OAS)."""
    tiny_cnn.cam_layer = "features"
    generator = torch.Generator().manual_seed(2)
    train = torch.randn(60, 3, 8, 8, generator=generator)
    train_labels = torch.arange(60) % 3
    bank = ReferenceBank.build(tiny_cnn, [(train, train_labels)], layer="features", progress=False)
    images = torch.randn(6, 3, 8, 8, generator=generator)
    explained = torch.tensor([0, 1, 2, 0, 1, 2])
    versus = torch.tensor([1, 2, 0, 2, 0, 1])
    maps = diffcam_versus(tiny_cnn, images, explained, versus, bank, "oas")

    with torch.no_grad():
        train_features = tiny_cnn.features(train).double()
        features = tiny_cnn.features(images).double()
    embeddings = train_features.mean(dim=(2, 3)).numpy()
    for i in range(images.shape[0]):
        members = embeddings[(train_labels == versus[i]).numpy()]
        covariance = OAS().fit(members).covariance_
        weights = np.linalg.solve(covariance, features[i].mean(dim=(1, 2)).numpy() - members.mean(axis=0))
        raw = np.maximum(np.tensordot(weights, features[i].numpy(), axes=1), 0)  # stride 1: no upsampling
        expected = (raw - raw.min()) / (raw.max() - raw.min())
        np.testing.assert_allclose(maps[i].numpy(), expected, atol=1e-4)
