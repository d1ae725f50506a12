"""DiffCAM's kNN group read as the paper words it: the k nearest class means themselves (brute-force reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import camscope
from camscope.accumulators.reference_bank import ReferenceBank
from camscope.errors import CamscopeError
from conftest import feature_net as _net


def _data(n: int = 84, classes: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 12, 12, generator=generator, dtype=torch.float64)
    labels = torch.arange(n) % classes
    return x + 0.4 * labels[:, None, None, None].double(), labels


def _embeddings(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.features(x).mean(dim=(2, 3)).numpy()


def test_knn_means_group_equals_a_brute_force_computation() -> None:
    model = _net(classes=None)
    x, labels = _data()
    bank = ReferenceBank.build(model, [(x, labels)], layer="features")
    queries = x[:5] + 0.1
    k, r = 3, 0.5
    explanation = camscope.explain(
        model, queries, method="diffcam", layer="features", bank=bank, reference=f"knn:{k}", knn_group="means",
        regularization=r,
    )  # fmt: skip
    bank_z, query_z = _embeddings(model, x), _embeddings(model, queries)
    means = {c: bank_z[labels.numpy() == c].mean(axis=0) for c in range(7)}
    for i, z in enumerate(query_z):
        distances = {c: float(((z - m) ** 2).sum()) for c, m in means.items()}
        own = min(distances, key=distances.__getitem__)  # an embedding model: the nearest class mean
        assert int(explanation.classes[i]) == own
        neighbours = sorted((c for c in distances if c != own), key=distances.__getitem__)[:k]
        group = np.stack([means[c] for c in neighbours])
        mu = group.mean(axis=0)
        covariance = sum(np.outer(m - mu, m - mu) for m in group) / k
        regularised = covariance + r * np.trace(covariance) / len(z) * np.eye(len(z))
        expected = np.linalg.solve(regularised, z - mu)
        np.testing.assert_allclose(explanation.weights[i].numpy(), expected, rtol=1e-6, atol=1e-9)


def test_knn_samples_and_means_differ_and_the_option_is_checked() -> None:
    model = _net(classes=None)
    x, labels = _data()
    bank = ReferenceBank.build(model, [(x, labels)], layer="features")
    options = {"method": "diffcam", "layer": "features", "bank": bank, "reference": "knn:3"}
    pooled = camscope.explain(model, x[:4], **options).weights
    means = camscope.explain(model, x[:4], knn_group="means", **options).weights
    assert not torch.allclose(pooled, means)
    with pytest.raises(CamscopeError, match="knn_group"):
        camscope.explain(model, x[:4], knn_group="medoids", **options)
