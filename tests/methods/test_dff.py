"""Deep Feature Factorization against pytorch-grad-cam 1.5.7, scikit-learn's NMF and planted factorizations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.feature_factorization.deep_feature_factorization import dff as peer_dff
from sklearn.decomposition import NMF

import camscope
from camscope.errors import CamscopeError
from camscope.methods.dff import deep_feature_factorization, nmf
from conftest import TinyCNN


def _sklearn_random_init(matrix: np.ndarray, components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's ``init="random"`` with ``random_state=0``, what pytorch-grad-cam's ``dff`` starts from."""
    avg = np.sqrt(matrix.mean() / components)
    rng = np.random.RandomState(0)
    h = np.abs(avg * rng.standard_normal(size=(components, matrix.shape[1])).astype(matrix.dtype))
    w = np.abs(avg * rng.standard_normal(size=(matrix.shape[0], components)).astype(matrix.dtype))
    return torch.from_numpy(w), torch.from_numpy(h)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))


def test_matches_pytorch_grad_cam_from_the_same_start(one_thread, model, images) -> None:
    activations = model.features(images).detach()
    components = 4
    concepts, maps = peer_dff(activations.numpy().copy(), n_components=components)
    matrix = activations.transpose(0, 1).reshape(activations.shape[1], -1)
    init = _sklearn_random_init((matrix - matrix.amin(dim=1, keepdim=True)).numpy(), components)
    ours = deep_feature_factorization(activations, components, init=init)
    # float32 on both sides, different summation orders: measured 3.2e-6 and 2.3e-6.
    assert np.abs(ours.concepts[0].T.numpy() - concepts).max() < 1e-5 * np.abs(concepts).max()
    assert np.abs(ours.maps.numpy() - maps).max() < 1e-5 * np.abs(maps).max()


def test_nmf_is_scikit_learns_solver_in_float64() -> None:
    generator = torch.Generator().manual_seed(6)
    matrix = torch.rand(7, 30, generator=generator, dtype=torch.float64)
    w0, h0 = _sklearn_random_init(matrix.numpy(), 3)
    reference = NMF(n_components=3, init="custom", max_iter=200, tol=1e-3)
    w = reference.fit_transform(matrix.numpy(), W=w0.numpy().copy(), H=h0.numpy().copy())
    start = (w0.clone(), h0.clone())
    ours_w, ours_h = nmf(matrix, 3, init=(w0, h0), tol=1e-3)
    assert torch.equal(w0, start[0]) and torch.equal(h0, start[1])  # the start is copied, not updated
    assert np.abs(ours_w.numpy() - w).max() < 1e-10 and np.abs(ours_h.numpy() - reference.components_).max() < 1e-10


def test_a_planted_factorization_is_recovered_and_images_factorise_alone() -> None:
    generator = torch.Generator().manual_seed(7)
    concepts = torch.rand(6, 3, generator=generator, dtype=torch.float64)
    presence = torch.zeros(3, 40, dtype=torch.float64)
    for j in range(3):  # each concept alone at some positions: the factorization is unique up to scale
        presence[j, j * 8 : j * 8 + 8] = torch.rand(8, generator=generator, dtype=torch.float64) + 0.5
    presence[:, 24:] = torch.rand(3, 16, generator=generator, dtype=torch.float64)
    w, h = nmf(concepts @ presence, 3, iterations=400, tol=0.0)
    torch.testing.assert_close(w @ h, concepts @ presence, atol=1e-6, rtol=0)
    # Per image (shared=False), batched: each image's factorization alone, from the same start.
    activations = torch.rand(3, 5, 4, 4, generator=generator, dtype=torch.float64)
    w0 = torch.rand(3, 5, 2, generator=generator, dtype=torch.float64)
    h0 = torch.rand(3, 2, 16, generator=generator, dtype=torch.float64)
    batched = deep_feature_factorization(activations, 2, shared=False, init=(w0, h0))
    for i in range(3):
        alone = deep_feature_factorization(activations[i : i + 1], 2, init=(w0[i], h0[i]))
        torch.testing.assert_close(batched.concepts[i], alone.concepts[0])
        torch.testing.assert_close(batched.maps[i], alone.maps[0])


def test_concept_scores_are_the_classifiers_scores_of_the_concepts(one_thread, model, images) -> None:
    classes = torch.tensor([0, 2, 4])
    explanation = camscope.explain(model, images, method="dff", layer="features.3", target=classes, components=4)
    extras = explanation.extras
    factors = deep_feature_factorization(model.features(images).detach(), 4)
    torch.testing.assert_close(extras["concepts"], factors.concepts)
    torch.testing.assert_close(extras["concept_maps"], factors.maps)
    # Global average pooling + linear head (U, b): Z s_j + <U_c, m> + b_c = the head applied to the concept.
    head = model.fc(extras["concepts"]).detach()  # [B, k, classes], pytorch-grad-cam's computation_on_concepts
    expected = head[torch.arange(3), :, classes]
    offset_term = (model.fc.weight[classes] * factors.offset).sum(dim=1)[:, None] + model.fc.bias[classes][:, None]
    torch.testing.assert_close(16 * 16 * extras["concept_scores"] + offset_term.detach(), expected)
    raw = torch.einsum("bj,bjhw->bhw", extras["concept_scores"], extras["concept_maps"])
    torch.testing.assert_close(explanation.raw, raw)


def test_finer_scores_are_differences_of_concept_scores(one_thread, model, images) -> None:
    finer = camscope.explain(
        model,
        images,
        method="dff",
        layer="features.3",
        target=camscope.Finer(references=[[1], [3], [0]], gamma=0.6, explained=[0, 2, 4]),
    )
    explained = camscope.explain(model, images, method="dff", layer="features.3", target=[0, 2, 4])
    other = camscope.explain(model, images, method="dff", layer="features.3", target=[1, 3, 0])
    expected = explained.extras["concept_scores"] - 0.6 * other.extras["concept_scores"]
    torch.testing.assert_close(finer.extras["concept_scores"], expected, rtol=1e-4, atol=1e-7)


def test_negative_matrices_are_refused() -> None:
    with pytest.raises(CamscopeError, match="non-negative"):
        nmf(-torch.ones(3, 4), 2)
