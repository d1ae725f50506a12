"""Guided Grad-CAM against pytorch-grad-cam 1.5.7 and a hand-written guided backward; the model is left as it was."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import camscope
from camscope.methods.guided import guided_relus
from conftest import TinyCNN


class _GuidedReLU(torch.autograd.Function):
    """The rule written out: ``R_in = 1[x > 0] 1[R_out > 0] R_out``."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


class Mixed(nn.Module):
    """A functional ReLU, an in-place ReLU on a slice, an in-place ReLU module after a residual sum."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.body = nn.Conv2d(6, 6, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor, relu=None) -> torch.Tensor:
        h = torch.relu(self.stem(x)) if relu is None else relu(self.stem(x))
        z = self.body(h)
        if relu is None:
            z[:, :3].relu_()
            z = self.act(z * 1 + h)
        else:
            z = relu(torch.cat([relu(z[:, :3]), z[:, 3:]], dim=1) * 1 + h)
        return self.fc(z.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def mixed() -> Mixed:
    torch.manual_seed(0)
    return Mixed().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))


def test_matches_pytorch_grad_cam(one_thread) -> None:
    torch.manual_seed(0)
    model = TinyCNN().eval()  # its last ReLU is in place
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    classes = [1, 3]
    ours = camscope.explain(model, x, method="guided-gradcam", layer="features.3", target=classes)
    with GradCAM(model=model, target_layers=[model.features[3]]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])
    for i, c in enumerate(classes):
        # The peer explains one image per call and replaces the model's ReLUs: it gets a copy.
        guided = GuidedBackpropReLUModel(copy.deepcopy(model), device="cpu")(x[i : i + 1].clone(), target_category=c)
        pixels = heat[i][:, :, None] * guided  # pytorch-grad-cam's Guided Grad-CAM before deprocess_image
        scale = np.abs(pixels).max()
        assert np.abs(ours.extras["pixels"][i].permute(1, 2, 0).numpy() - pixels).max() < 1e-5 * scale
        assert np.abs(ours.extras["guided_backprop"][i].permute(1, 2, 0).numpy() - guided).max() < 1e-5 * scale
    assert np.abs(ours.extras["gradcam"].numpy() - heat).max() < 1e-5  # measured 3e-7 (their eps = 1e-7)
    torch.testing.assert_close(ours.raw, ours.extras["pixels"].abs().amax(dim=1))


def _guided_by_hand(model: Mixed, x: torch.Tensor, score) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(score(model(x, relu=_GuidedReLU.apply)).sum(), x)[0]


def test_every_relu_is_guided_and_the_model_is_unchanged(one_thread, mixed, images) -> None:
    seen: list[int] = []
    handle = mixed.act.register_forward_hook(lambda *_: seen.append(1))
    try:
        ours = camscope.explain(mixed, images, method="guided-gradcam", layer="body", target=[0, 3])
    finally:
        handle.remove()
    assert len(seen) == 2  # the engine's pass and the guided pass: the user's hook ran in both
    assert isinstance(mixed.act, nn.ReLU) and mixed.act.inplace
    index = torch.tensor([[0], [3]])
    expected = _guided_by_hand(mixed, images, lambda y: y.gather(1, index)[:, 0])
    torch.testing.assert_close(ours.extras["guided_backprop"], expected, rtol=1e-5, atol=1e-7)
    # Outside the call, ReLUs back-propagate as usual.
    x = torch.tensor([1.0, -1.0], requires_grad=True)
    assert torch.autograd.grad((torch.relu(x) * -2).sum(), x)[0].tolist() == [-2.0, 0.0]


def test_a_finer_target_guides_its_comparison(one_thread, mixed, images) -> None:
    finer = camscope.Finer(references=2, gamma=0.6)
    with torch.no_grad():  # the user's no_grad does not stop the explanation
        ours = camscope.explain(mixed, images, method="guided-gradcam", layer="body", target=finer)
    classes, references = ours.targets.classes(), ours.targets.references()

    def comparison(logits: torch.Tensor) -> torch.Tensor:
        return logits.gather(1, classes[:, None])[:, 0] - 0.6 * logits.gather(1, references).mean(dim=1)

    torch.testing.assert_close(ours.extras["guided_backprop"], _guided_by_hand(mixed, images, comparison))
    plain = camscope.explain(mixed, images, method="finer-gradcam", layer="body", references=2, gamma=0.6)
    torch.testing.assert_close(ours.extras["gradcam"], plain.maps)


class _Interrupting(nn.Module):
    """Its second forward pass (the guided one) raises KeyboardInterrupt after a ReLU ran guided."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyCNN()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.net(x)
        if self.calls == 2:
            raise KeyboardInterrupt
        return out


def test_an_interrupt_ends_the_guided_rule(one_thread) -> None:
    torch.manual_seed(0)
    model = _Interrupting().eval()
    with pytest.raises(KeyboardInterrupt):
        camscope.explain(model, torch.randn(1, 3, 8, 8), method="guided-gradcam", layer="net.features.2")
    x = torch.tensor([1.0, -1.0], requires_grad=True)
    assert torch.autograd.grad((torch.relu(x) * -2).sum(), x)[0].tolist() == [-2.0, 0.0]
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_the_rule_stays_in_its_thread(one_thread) -> None:
    """Another thread's backward through ReLUs, while the rule is on here, is the plain one."""
    results: list[list[float]] = []

    def other() -> None:
        y = torch.tensor([1.0, 2.0], requires_grad=True)
        results.append(torch.autograd.grad((torch.relu(y) * -1).sum(), y)[0].tolist())

    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with guided_relus():
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        guided = torch.autograd.grad((torch.relu(x) * -1).sum(), x)[0].tolist()
    assert results == [[-1.0, -1.0]] and guided == [0.0, 0.0]
