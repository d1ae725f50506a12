"""Reference groups: DiffCAM's regularised solve against numpy and sklearn closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camscope.errors import CamscopeError
from camscope.stats.reference_group import ReferenceGroup, oas_shrinkage


def _np_scatter(z: np.ndarray) -> np.ndarray:
    centred = z - z.mean(axis=0)
    return centred.T @ centred


def test_weights_match_numpy_closed_form_unregularised_and_ridge() -> None:
    rng = np.random.default_rng(0)
    references = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5))
    z = rng.normal(size=(3, 5))
    group = ReferenceGroup.from_embeddings(torch.from_numpy(references))
    covariance = _np_scatter(references) / len(references)
    mu = references.mean(axis=0)
    expected = np.linalg.solve(covariance, (z - mu).T).T
    got = group.weights(torch.from_numpy(z), regularization=0).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    # the paper's scatter form differs by the factor n only: same direction
    paper = np.linalg.solve(_np_scatter(references), (z - mu).T).T
    np.testing.assert_allclose(got, paper * len(references), rtol=1e-9)
    lam = 0.1 * np.trace(covariance) / 5
    ridge = np.linalg.solve(covariance + lam * np.eye(5), (z - mu).T).T
    np.testing.assert_allclose(group.weights(torch.from_numpy(z), regularization=0.1).numpy(), ridge, rtol=1e-9)


def test_oas_regularisation_matches_sklearn() -> None:
    from sklearn.covariance import OAS

    rng = np.random.default_rng(1)
    for n in (8, 40, 400):  # fewer and more references than features
        references = rng.normal(size=(n, 20)) * np.linspace(0.1, 3, 20)
        z = rng.normal(size=(4, 20))
        oas = OAS(store_precision=False).fit(references)
        group = ReferenceGroup.from_embeddings(torch.from_numpy(references))
        assert group.shrinkage() == pytest.approx(oas.shrinkage_, rel=1e-10)
        expected = np.linalg.solve(oas.covariance_, (z - references.mean(axis=0)).T).T
        np.testing.assert_allclose(group.weights(torch.from_numpy(z)).numpy(), expected, rtol=1e-8)
        matrix, lam = group.regularized_covariance("oas")
        np.testing.assert_allclose(matrix.numpy(), oas.covariance_, rtol=1e-10, atol=1e-14)
        assert lam == pytest.approx(oas.shrinkage_ / (1 - oas.shrinkage_) * np.trace(_np_scatter(references) / n) / 20)


def test_direction_recovers_the_discriminative_axis() -> None:
    """The example differs from the group along a low-variance axis and a high-variance one equally."""
    rng = np.random.default_rng(2)
    k = 8
    spread = np.full(k, 10.0)
    spread[0] = 0.5  # the group hardly varies along axis 0: a difference there is discriminative
    references = rng.normal(size=(5000, k)) * spread + 3.0
    z = references.mean(axis=0) + 2.0 * np.eye(k)[0] + 2.0 * np.eye(k)[1]
    group = ReferenceGroup.from_embeddings(torch.from_numpy(references))
    w = group.weights(torch.from_numpy(z[None])).numpy()[0]
    cosine = abs(w[0]) / np.linalg.norm(w)
    assert cosine > 0.99
    # the plain difference z - mu splits evenly between the two axes
    d = z - references.mean(axis=0)
    assert abs(d[0]) / np.linalg.norm(d) < 0.75

    # Fisher criterion: w* beats the plain difference and random directions
    def fisher(v: np.ndarray) -> float:
        return float((v @ d) ** 2 / (v @ _np_scatter(references) @ v))

    assert fisher(w) >= fisher(d)
    assert all(fisher(w) >= fisher(rng.normal(size=k)) for _ in range(50))


def test_oas_default_has_small_shrinkage_with_many_references() -> None:
    rng = np.random.default_rng(3)
    spread = 1.0 / np.arange(1, 17)  # anisotropic (isotropic data would rightly be shrunk all the way)
    many = ReferenceGroup.from_embeddings(torch.from_numpy(rng.normal(size=(5000, 16)) * spread))
    few = ReferenceGroup.from_embeddings(torch.from_numpy(rng.normal(size=(6, 16)) * spread))
    assert many.shrinkage() < 0.01 < few.shrinkage()
    assert oas_shrinkage(torch.zeros(3, 3, dtype=torch.float64), 5) == 1.0


def test_a_single_reference_gives_the_plain_difference() -> None:
    reference = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    group = ReferenceGroup.from_embeddings(reference)
    z = torch.tensor([[2.0, 2.0, 5.0]], dtype=torch.float64)
    torch.testing.assert_close(group.weights(z), z - reference)
    with pytest.raises(CamscopeError, match="1 references for 3 features"):
        group.weights(z, regularization=0)
