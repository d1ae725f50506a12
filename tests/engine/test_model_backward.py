"""A model whose own backward fails (an in-place op after the explained layer) gets one line that says what to do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import camscope
import camscope.cli.explain
from camscope.cli import main
from camscope.errors import CamscopeError


class _InPlaceAfterTheLayer(nn.Module):
    """``conv`` (the explained layer), then ``x.relu_(); x.mul_(2.0)``: ReLU's backward needs the output ``mul_`` changed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x.relu_()
        x.mul_(2.0)
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return _InPlaceAfterTheLayer().eval()


def _images() -> torch.Tensor:
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", ["gradcam", "layercam", "finer-gradcam"])
def test_the_api_says_what_happened_and_what_to_do(model, method):
    with pytest.raises(CamscopeError) as raised:
        camscope.explain(model, _images(), method=method, layer="conv")
    message = str(raised.value)
    assert "\n" not in message
    assert "layer 'conv'" in message and "in-place operation after the layer" in message
    assert "the output of Relu" in message and "method='scorecam'" in message and "out of place" in message
    assert not model.conv._forward_hooks and not model.conv._backward_hooks  # hooks removed on the error path


def test_analyze_says_the_same(model):
    with pytest.raises(CamscopeError, match=r"in-place operation after the layer .* method='scorecam'"):
        camscope.analyze(model, [(_images(), torch.tensor([0, 1]))], layer="conv", progress=False)


def test_the_advice_works(model):
    """The gradient-free method explains the same model; so does the model with the operation out of place."""
    scorecam = camscope.explain(model, _images(), method="scorecam", layer="conv", target=[0, 1])
    assert scorecam.maps.shape == (2, 8, 8) and bool(scorecam.maps.isfinite().all())

    class OutOfPlace(_InPlaceAfterTheLayer):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc((self.conv(x).relu() * 2.0).mean(dim=(2, 3)))

    fixed = OutOfPlace()
    fixed.load_state_dict(model.state_dict())
    gradcam = camscope.explain(fixed.eval(), _images(), method="gradcam", layer="conv", target=[0, 1])
    assert bool(gradcam.maps.isfinite().all())


def test_the_cli_says_it_in_flags(model, tmp_path, monkeypatch, capsys):
    from camscope.viz.figures import save_image

    save_image(tmp_path / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    monkeypatch.setattr(camscope.cli.explain, "load_cli_model", lambda *args: model)
    code = main(["explain", str(tmp_path / "a.png"), "--model", "torchvision:resnet18", "--layer", "conv"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("camscope: error: the model cannot be differentiated")
    assert "--method scorecam" in lines[0]


def test_other_runtime_errors_pass_through():
    from camscope.engine.explainer import model_backward

    with pytest.raises(RuntimeError, match="out of memory"), model_backward(["layer4"]):
        raise RuntimeError("CUDA out of memory")
