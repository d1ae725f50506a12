"""Embedding similarity (pytorch-grad-cam's tutorial targets), pairs, and models of several inputs."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM as PeerGradCAM
from pytorch_grad_cam import ScoreCAM as PeerScoreCAM
from torch import nn

import camscope
from camscope.errors import CamscopeError
from conftest import TinyCNN


class SimilarityToConceptTarget:
    """pytorch-grad-cam's embedding-similarity tutorial target, as written there."""

    def __init__(self, features):
        self.features = features

    def __call__(self, model_output):
        cos = torch.nn.CosineSimilarity(dim=0)
        return cos(model_output, self.features)


class DifferenceFromConceptTarget:
    """The tutorial's opposite target."""

    def __init__(self, features):
        self.features = features

    def __call__(self, model_output):
        cos = torch.nn.CosineSimilarity(dim=0)
        return 1 - cos(model_output, self.features)


def _embedder() -> nn.Module:
    """TinyCNN's trunk: the embedding is the pooled features ``[B, 16]``."""
    torch.manual_seed(0)
    trunk = TinyCNN()
    return nn.Sequential(trunk.features, nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


@pytest.fixture
def embedder() -> nn.Module:
    return _embedder()


@pytest.mark.parametrize("method, peer_cls", [("gradcam", PeerGradCAM), ("scorecam", PeerScoreCAM)])
@pytest.mark.parametrize("dissimilar", [False, True])
def test_similarity_target_matches_the_tutorial_targets(embedder, images, method, peer_cls, dissimilar):
    concept = embedder(torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))).mean(dim=0).detach()
    ours = camscope.explain(
        embedder, images, method=method, layer="0.3", target=camscope.SimilarityTarget(concept, dissimilar)
    )
    layer = embedder[0][3]
    peer_target = DifferenceFromConceptTarget if dissimilar else SimilarityToConceptTarget
    targets = [peer_target(concept) for _ in range(images.shape[0])]
    with peer_cls(model=embedder, target_layers=[layer]) as cam:
        cam(input_tensor=images, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients
        peer = torch.as_tensor(
            cam.get_cam_image(images, layer, targets, activations, grads[0].numpy() if grads else None, False)
        )
    embedder.zero_grad(set_to_none=True)
    assert peer.abs().max() > 0
    torch.testing.assert_close(ours.raw, peer, atol=1e-5 * peer.abs().max(), rtol=0)


def test_both_maps_of_a_pair(embedder, images):
    first, second = camscope.explain_pair(embedder, images[:2], images[1:])
    with torch.no_grad():
        a, b = embedder(images[:2]), embedder(images[1:])
    alone = camscope.explain(embedder, images[:2], layer="0.3", target=camscope.SimilarityTarget(b))
    torch.testing.assert_close(first.raw, alone.raw)
    torch.testing.assert_close(first.scores, F.cosine_similarity(a, b))
    torch.testing.assert_close(second.scores, first.scores)
    assert second.targets.reference.shape == (2, 16) and second.maps.shape == (2, 16, 16)


class RGBD(nn.Module):
    """Two branches (image, depth) fused by a linear head; a metadata vector too."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rgb = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.depth = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(6 + 4 + 2, 3)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        pooled = [self.rgb(rgb).mean(dim=(2, 3)), self.depth(depth).mean(dim=(2, 3)), meta]
        return self.head(torch.cat(pooled, dim=1))


class Bound(nn.Module):
    """The same model with the depth and the metadata fixed: the brute-force reference."""

    def __init__(self, model: RGBD, depth: torch.Tensor, meta: torch.Tensor) -> None:
        super().__init__()
        self.model, self.fixed = model, (depth, meta)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.model(rgb, *(t.expand(rgb.shape[0], *t.shape[1:]) for t in self.fixed))


@pytest.fixture
def rgbd():
    generator = torch.Generator().manual_seed(2)
    inputs = (
        torch.rand(2, 3, 8, 8, generator=generator),
        torch.rand(2, 1, 8, 8, generator=generator),
        torch.rand(2, 2),
    )
    return RGBD().eval(), inputs


def test_one_input_of_several_is_explained_the_others_held_fixed(rgbd):
    model, (rgb, depth, meta) = rgbd
    ours = camscope.explain(model, (rgb, depth, meta), layer="rgb.1", target=[0, 2])
    reference = camscope.explain(Bound(model, depth, meta), rgb, layer="model.rgb.1", target=[0, 2])
    torch.testing.assert_close(ours.raw, reference.raw)
    by_key = camscope.explain(
        model, {"depth": depth, "rgb": rgb, "meta": meta}, layer="depth.1", target=[0, 2], explained_input="depth"
    )
    assert by_key.maps.shape == (2, 8, 8) and by_key.activations.shape[1] == 4
    # Score-CAM masks the explained input only; one sample pairs with the others' rows.
    one = camscope.explain(model, (rgb[:1], depth[:1], meta[:1]), method="scorecam", layer="rgb.1", target=1)
    single = camscope.explain(
        Bound(model, depth[:1], meta[:1]), rgb[:1], method="scorecam", layer="model.rgb.1", target=1
    )
    torch.testing.assert_close(one.raw, single.raw)


class Siamese(nn.Module):
    """One backbone for both images (the layer runs twice); the score is their cosine similarity."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _embedder()

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(self.backbone(first), self.backbone(second))[:, None]


def test_a_shared_backbone_is_explained_on_the_chosen_input_path(images):
    model = Siamese().eval()
    a, b = images[:2], images[1:]
    target = camscope.RegressionTarget()
    first = camscope.explain(model, (a, b), layer="backbone.0.3", target=target)
    second = camscope.explain(model, (a, b), layer="backbone.0.3", target=target, explained_input=1)
    pair = camscope.explain_pair(model.backbone, a, b, layer="0.3")
    torch.testing.assert_close(first.raw, pair[0].raw)
    torch.testing.assert_close(second.raw, pair[1].raw)


def test_several_inputs_mistakes_get_one_clear_error(rgbd):
    model, (rgb, depth, meta) = rgbd
    with pytest.raises(CamscopeError, match="not reached from the explained input 0"):
        camscope.explain(model, (rgb, depth, meta), layer="depth.1")
    with pytest.raises(CamscopeError, match="explained_input='ir' is not one of the inputs"):
        camscope.explain(model, {"rgb": rgb, "depth": depth, "meta": meta}, layer="rgb.1", explained_input="ir")
    with pytest.raises(CamscopeError, match="3 rows but the explained input 0 has 2"):
        camscope.explain(model, (rgb, depth, torch.rand(3, 2)), layer="rgb.1")
    with pytest.raises(CamscopeError, match="one sample at a time"):
        camscope.explain(model, (rgb, depth, meta), method="scorecam", layer="rgb.1")
    with pytest.raises(CamscopeError, match="one tensor"):
        camscope.explain(model.rgb, rgb, explained_input=1)
    with pytest.raises(CamscopeError, match=r"torch\.stack"):
        camscope.explain(model.rgb, [rgb[0], rgb[1]])
    with pytest.raises(CamscopeError, match="non-zero"):
        camscope.SimilarityTarget(torch.zeros(4))
    with pytest.raises(CamscopeError, match="does not match the model's embeddings"):
        camscope.explain(_embedder(), rgb, layer="0.3", target=camscope.SimilarityTarget(torch.ones(5)))
    for parameter in model.parameters():
        assert parameter.requires_grad  # the flags the dependence check turns off are restored


class InPlaceRGBD(RGBD):
    """Changes its inputs in place before the branches (a hostile but legal model)."""

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        rgb.mul_(2.0)
        return super().forward(rgb, depth, meta)


def test_in_place_inputs_and_two_threads(rgbd):
    model, (rgb, depth, meta) = rgbd
    hostile = InPlaceRGBD().eval()
    before = rgb.clone()
    ours = camscope.explain(hostile, (rgb, depth, meta), layer="rgb.1", target=[0, 1])
    reference = camscope.explain(model, (2 * rgb, depth, meta), layer="rgb.1", target=[0, 1])
    torch.testing.assert_close(ours.raw, reference.raw)
    assert torch.equal(rgb, before)  # the caller's tensor is untouched

    results: dict[int, torch.Tensor] = {}

    def run(index: int) -> None:
        inputs = (rgb, depth, meta) if index % 2 else {"rgb": rgb, "depth": depth, "meta": meta}
        results[index] = camscope.explain(model, inputs, layer="rgb.1", target=[0, 1]).raw

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = camscope.explain(model, (rgb, depth, meta), layer="rgb.1", target=[0, 1]).raw
    assert all(torch.equal(results[i], expected) for i in range(4))
    assert all(parameter.requires_grad for parameter in model.parameters())
