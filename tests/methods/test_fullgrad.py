"""FullGrad against pytorch-grad-cam 1.5.7, a hand-written decomposition and the completeness identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import FullGrad as PeerFullGrad
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import camscope
from camscope.errors import CamscopeError
from conftest import Tiny3DCNN, TinyStridedCNN


class Shuffled(nn.Module):
    """Bias layers registered in another order than they run, an in-place ReLU after the BatchNorm, a shared ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(4)
        self.first = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.second = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm(self.first(x)))
        h = self.act(self.second(h))
        return self.fc(h.mean(dim=(2, 3)))


def _norm_bias(norm: nn.BatchNorm2d) -> torch.Tensor:
    return (norm.bias - norm.running_mean * norm.weight / torch.sqrt(norm.running_var + norm.eps)).detach()


def _psi(term: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The paper's psi, channel by channel: abs, rescale to [0, 1], bilinear upsampling; summed over channels."""
    total = torch.zeros(term.shape[0], *size, dtype=term.dtype)
    for b in range(term.shape[0]):
        for c in range(term.shape[1]):
            t = term[b, c].abs()
            if t.max() > t.min():
                scaled = (t - t.min()) / (t.max() - t.min())
                total[b] += F.interpolate(scaled[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return total


def _shuffled_by_hand(model: Shuffled, x: torch.Tensor, score) -> tuple[torch.Tensor, torch.Tensor]:
    """FullGrad of ``score(logits)`` with the forward pass written out; returns the map and the terms' sums."""
    x = x.clone().requires_grad_(True)
    z1 = model.first(x)
    z2 = model.norm(z1)
    z3 = model.second(torch.relu(z2))
    logits = model.fc(torch.relu(z3).mean(dim=(2, 3)))
    g = torch.autograd.grad(score(logits).sum(), [x, z1, z2, z3])
    biases = [model.first.bias.detach(), _norm_bias(model.norm), model.second.bias.detach()]
    terms = [(x * g[0]).detach()] + [(b[None, :, None, None] * grad).detach() for b, grad in zip(biases, g[1:])]
    size = tuple(x.shape[2:])
    return sum(_psi(t, size) for t in terms), torch.stack([t.sum(dim=(1, 2, 3)) for t in terms], dim=1)


@pytest.fixture(scope="module")
def shuffled() -> Shuffled:
    torch.manual_seed(0)
    model = Shuffled()
    with torch.no_grad():
        model.norm.running_mean.normal_()
        model.norm.running_var.uniform_(0.5, 2.0)
        model.fc.weight.mul_(1e3)  # gradients far above pytorch-grad-cam's eps = 1e-7 in its rescaling
    return model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_matches_pytorch_grad_cam(one_thread, images) -> None:
    torch.manual_seed(0)
    model = TinyStridedCNN().eval()  # conv + BatchNorm + conv, maps upsampled by 2 and 4
    with torch.no_grad():
        model.stem[1].running_mean.normal_()
        model.stem[1].running_var.uniform_(0.5, 2.0)
        model.head[2].weight.mul_(1e4)  # pytorch-grad-cam divides by max + 1e-7: keep the terms far above it
    classes = [0, 2, 3]
    ours = camscope.explain(model, images, method="fullgrad", target=classes)
    peer = PeerFullGrad(model, [])(input_tensor=images.clone(), targets=[ClassifierOutputTarget(c) for c in classes])
    assert np.abs(ours.maps.numpy() - peer).max() < 1e-5  # measured 1.8e-6 (float32 rounding)


def test_matches_a_hand_written_decomposition_and_is_complete(one_thread, shuffled, images) -> None:
    classes = torch.tensor([0, 1, 2])
    ours = camscope.explain(shuffled, images, method="fullgrad", layer="second", target=classes)
    expected, sums = _shuffled_by_hand(shuffled, images, lambda y: y.gather(1, classes[:, None])[:, 0])
    torch.testing.assert_close(ours.raw, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.extras["term_sums"], sums, rtol=1e-5, atol=1e-6)
    # Completeness: the terms and the linear head's bias add up to the logit.
    logits = shuffled(images).gather(1, classes[:, None])[:, 0]
    torch.testing.assert_close(sums.sum(dim=1) + shuffled.fc.bias[classes], logits.detach(), rtol=1e-4, atol=1e-5)


def test_a_finer_comparison_is_the_fullgrad_of_its_score(one_thread, shuffled, images) -> None:
    finer = camscope.Finer(references=2, gamma=0.6)
    ours = camscope.explain(shuffled, images, method="fullgrad", layer="second", target=finer)
    classes, references = ours.targets.classes(), ours.targets.references()

    def comparison(logits: torch.Tensor) -> torch.Tensor:  # mean over t of y_c - 0.6 y_{d_t}
        return logits.gather(1, classes[:, None])[:, 0] - 0.6 * logits.gather(1, references).mean(dim=1)

    expected, _ = _shuffled_by_hand(shuffled, images, comparison)
    torch.testing.assert_close(ours.raw, expected, rtol=1e-5, atol=1e-5)


def test_under_no_grad_on_volumes_and_hooks_removed(one_thread) -> None:
    torch.manual_seed(0)
    model = Tiny3DCNN().eval()
    volumes = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        ours = camscope.explain(model, volumes, method="fullgrad", target=[0, 2])
    assert ours.raw.shape == (2, 8, 8, 8) and bool((ours.raw >= 0).all())
    logits = model(volumes)[[0, 1], [0, 2]]
    torch.testing.assert_close(ours.extras["term_sums"].sum(dim=1) + model.fc.bias[[0, 2]], logits.detach())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


class _Interrupted(nn.Module):
    """Raises KeyboardInterrupt in its second forward pass (FullGrad's own, after the engine's)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyStridedCNN()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.net(x)


def test_an_interrupt_leaves_no_hook_and_batch_statistics_are_refused(one_thread, images) -> None:
    torch.manual_seed(0)
    model = _Interrupted().eval()
    with pytest.raises(KeyboardInterrupt):
        camscope.explain(model, images, method="fullgrad", layer="net.stage.0")
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    model.calls = 0
    with pytest.raises(CamscopeError, match=r"BatchNorm layer 'stem.1'.*eval mode"):
        camscope.explain(model.net.train(), images, method="fullgrad", eval_mode=False)
    assert model.net.training


def test_a_batchnorm_without_affine_parameters_keeps_its_bias(one_thread, images) -> None:
    """Its bias ``-mu / sqrt(var + eps)`` is not 0: completeness needs it; pytorch-grad-cam leaves the layer out."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4, affine=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[5].weight.mul_(1e3)
    model.eval()
    ours = camscope.explain(model, images, method="fullgrad", layer="0", target=[0, 1, 2])
    logits = model(images)[[0, 1, 2], [0, 1, 2]].detach()
    torch.testing.assert_close(ours.extras["term_sums"].sum(dim=1) + model[5].bias, logits, rtol=1e-4, atol=1e-5)
    assert ours.extras["term_sums"].shape == (3, 3)  # input, convolution, BatchNorm
    peer = PeerFullGrad(model, [])(input_tensor=images.clone(), targets=[ClassifierOutputTarget(c) for c in range(3)])
    assert np.abs(peer - ours.maps.numpy()).max() > 0.05
