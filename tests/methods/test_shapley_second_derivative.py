"""ShapleyCAM through a custom autograd Function whose backward torch cannot differentiate: one clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd.function import once_differentiable

import camscope
from camscope.engine.backward import once_differentiable_functions
from camscope.errors import CamscopeError


class OnceSquare(torch.autograd.Function):
    """``x**2`` with a backward torch runs without autograd (no second derivative)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def _square(x: torch.Tensor) -> torch.Tensor:
    return x * x


class SquareNet(nn.Module):
    """conv -> square (the custom Function or torch's) -> conv -> mean -> linear: the square is curved."""

    def __init__(self, square, before: bool = False) -> None:
        super().__init__()
        self.square, self.before = square, before
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.mix = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(self.square(x) if self.before else x)
        return self.fc(self.mix(a if self.before else self.square(a)).mean(dim=(2, 3)))


def _pair(before: bool) -> tuple[nn.Module, nn.Module]:
    once = SquareNet(OnceSquare.apply, before).eval()
    plain = SquareNet(_square, before).eval()
    plain.load_state_dict(once.state_dict())
    return once, plain


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(3))


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def test_a_once_differentiable_function_after_the_layer_is_one_error(batch):
    once, plain = _pair(before=False)
    # torch's own square has a second derivative: ShapleyCAM is not Grad-CAM there (the case that went silent)
    shapley = camscope.explain(plain, batch, method="shapleycam", layer="conv").weights
    assert not torch.allclose(shapley, camscope.explain(plain, batch, method="gradcam", layer="conv").weights)
    with pytest.raises(CamscopeError, match=r"OnceSquare .*@once_differentiable.* layer 'conv'.*method='gradcam'"):
        camscope.explain(once, batch, method="shapleycam", layer="conv")
    assert _no_hooks(once) and not once.training
    # a dataset analysis differentiates through its own pass: the same error
    data = [(batch, torch.tensor([0, 1]))]
    with pytest.raises(CamscopeError, match="OnceSquare"):
        camscope.analyze(once, data, method="shapleycam", layer="conv", progress=False)
    # first-order methods need no second derivative
    assert torch.allclose(
        camscope.explain(once, batch, method="gradcam", layer="conv").weights,
        camscope.explain(plain, batch, method="gradcam", layer="conv").weights,
    )


def test_a_once_differentiable_function_before_the_layer_or_off_the_path_changes_nothing(batch):
    once, plain = _pair(before=True)  # below the layer: the second derivative never goes through it
    assert torch.allclose(
        camscope.explain(once, batch, method="shapleycam", layer="conv").weights,
        camscope.explain(plain, batch, method="shapleycam", layer="conv").weights,
    )
    a = torch.ones(3, requires_grad=True)
    side = OnceSquare.apply(torch.ones(3, requires_grad=True))  # a branch that does not reach `a`
    assert once_differentiable_functions((a**3).sum() + side.sum(), [a]) == []
    assert once_differentiable_functions((OnceSquare.apply(a) * a).sum(), [a]) == ["OnceSquare"]
