"""1-D signals [B, C, T] for a model whose first convolution is Conv1d: maps run over time.

Grad-CAM, LayerCAM and Score-CAM are checked against hand-written autograd references.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camscope
from camscope.errors import CamscopeError
from camscope.methods.attention import AttentionMethod

# The attention methods read vision transformers' tokens, not signals.
CNN_METHODS = sorted(name for name, cls in camscope.available_methods().items() if not issubclass(cls, AttentionMethod))


class TinySignalNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(2, 6, 5, padding=2), nn.ReLU(), nn.Conv1d(6, 8, 3, stride=2, padding=1), nn.ReLU()
        )
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=2))


@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(0)
    return TinySignalNet().eval()


@pytest.fixture
def signals() -> torch.Tensor:
    return torch.randn(2, 2, 21, generator=torch.Generator().manual_seed(4))


def _layer_and_gradient(net: nn.Module, x: torch.Tensor, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    activations = net.features(x).detach().requires_grad_(True)
    scores = net.fc(activations.mean(dim=2)).gather(1, torch.tensor(classes)[:, None]).sum()
    (gradients,) = torch.autograd.grad(scores, activations)
    return activations.detach(), gradients


def _to_maps(raw: torch.Tensor, length: int) -> torch.Tensor:
    """ReLU at the layer's resolution, linear upsampling over time, min-max per signal."""
    up = F.interpolate(raw.clamp(min=0)[:, None], size=length, mode="linear", align_corners=False)[:, 0]
    low, high = up.min(dim=1, keepdim=True).values, up.max(dim=1, keepdim=True).values
    return torch.where(high > low, (up - low) / (high - low).clamp(min=1e-30), torch.zeros_like(up))


def test_gradcam_and_layercam_match_autograd(net: nn.Module, signals: torch.Tensor) -> None:
    classes = [1, 2]
    activations, gradients = _layer_and_gradient(net, signals, classes)
    references = {
        "gradcam": (gradients.mean(dim=2, keepdim=True) * activations).sum(dim=1),
        "layercam": (gradients.clamp(min=0) * activations).sum(dim=1),
    }
    for method, raw in references.items():
        explanation = camscope.explain(net, signals, method=method, layer="features.3", target=classes)
        assert explanation.raw.shape == (2, 11)
        assert explanation.maps.shape == (2, 21)
        torch.testing.assert_close(explanation.raw, raw)
        torch.testing.assert_close(explanation.maps, _to_maps(raw, 21))


def test_scorecam_matches_a_hand_written_loop(net: nn.Module, signals: torch.Tensor) -> None:
    classes = [0, 2]
    activations = net.features(signals).detach()
    scores = []
    for k in range(activations.shape[1]):
        mask = F.interpolate(activations[:, k : k + 1], size=21, mode="linear", align_corners=False)
        low, high = mask.amin(dim=2, keepdim=True), mask.amax(dim=2, keepdim=True)
        mask = torch.where(high > low, (mask - low) / (high - low).clamp(min=1e-30), torch.zeros_like(mask))
        with torch.no_grad():
            scores.append(net(signals * mask).gather(1, torch.tensor(classes)[:, None])[:, 0])
    weights = torch.stack(scores, dim=1).softmax(dim=1)
    raw = (weights[:, :, None] * activations).sum(dim=1)
    explanation = camscope.explain(net, signals, method="scorecam", layer="features.3", target=classes, batch_size=5)
    torch.testing.assert_close(explanation.raw, raw)
    torch.testing.assert_close(explanation.maps, _to_maps(raw, 21))


@pytest.mark.parametrize("method", CNN_METHODS)
def test_every_method_gives_maps_over_time(net: nn.Module, signals: torch.Tensor, method: str) -> None:
    options: dict = {"reference": torch.randn(3, 8)} if method == "diffcam" else {}
    if method in ("scorecam", "sscam", "iscam", "finer-scorecam", "ablationcam"):
        options["batch_size"] = 8
    if method in ("sscam", "iscam", "smoothgradcampp"):
        options["samples"] = 2
    explanation = camscope.explain(net, signals, method=method, **options)
    assert explanation.maps.shape == (2, 21)
    assert bool(torch.isfinite(explanation.maps).all())


def test_diffcam_takes_reference_signals(net: nn.Module, signals: torch.Tensor) -> None:
    references = torch.randn(5, 2, 21, generator=torch.Generator().manual_seed(6))
    from_inputs = camscope.explain(net, signals, method="diffcam", layer="features", reference=references)
    with torch.no_grad():
        embeddings = net.features(references).mean(dim=2)  # the default "mean" embedding over time
    from_embeddings = camscope.explain(net, signals, method="diffcam", layer="features", reference=embeddings)
    torch.testing.assert_close(from_inputs.raw, from_embeddings.raw)


def test_default_layer_is_the_last_conv_stage(net: nn.Module, signals: torch.Tensor) -> None:
    assert camscope.explain(net, signals).layer == "features"  # the outermost module ending on that tensor


def test_wrong_ranks_for_a_signal_model_are_clear(net: nn.Module) -> None:
    with pytest.raises(CamscopeError, match=r"\[B, C, T\].*x.unsqueeze\(0\)"):
        camscope.explain(net, torch.randn(2, 21))
    with pytest.raises(CamscopeError, match="first convolution takes 2 channels"):
        camscope.explain(net, torch.randn(1, 3, 21))
