"""Layer embeddings: spatial means and class tokens at a layer, untouched by in-place operations after it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from camscope.engine.embedding import LayerEmbedder, embed
from camscope.errors import CamscopeError


class _Residual(nn.Module):
    """conv -> bn (the embedded layer) -> ``out += identity`` -> ReLU, in place or not; the bn output as a list."""

    def __init__(self, in_place: bool, as_list: bool = False) -> None:
        super().__init__()
        self.in_place, self.as_list = in_place, as_list
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = torch.relu(self.stem(x))
        out = self.bn(identity)
        if self.in_place:
            out += identity
            out.relu_()
        else:
            out = torch.relu(out + identity)
        return self.head(out.mean(dim=(2, 3)))


class _ListLayer(nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x * 2.0, x]


class _ListModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = _ListLayer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x)
        assert isinstance(out, list)  # the hook hands the container type on
        out[0] += 1.0
        return out[0].mean(dim=(1, 2, 3))


def _twins() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    in_place = _Residual(in_place=True)
    with torch.no_grad():
        in_place.bn.running_mean.normal_()
    out_of_place = _Residual(in_place=False)
    out_of_place.load_state_dict(in_place.state_dict())
    return in_place.eval(), out_of_place.eval()


def test_embed_is_the_spatial_mean_of_the_layer_output() -> None:
    in_place, out_of_place = _twins()
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = out_of_place.bn(torch.relu(out_of_place.stem(x))).mean(dim=(2, 3))
    for model in (in_place, out_of_place):
        torch.testing.assert_close(embed(model, x, "bn", batch_size=2), expected)
    with pytest.raises(CamscopeError, match="embedding='cls' needs a token layer"):
        embed(in_place, x, "bn", embedding="cls")
    with pytest.raises(CamscopeError, match="unknown embedding 'max'"):
        embed(in_place, x, "bn", embedding="max")


@pytest.mark.parametrize("model", ["residual", "list"])
def test_a_full_pass_clones_the_layer_output_for_what_runs_after_it(model: str) -> None:
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    if model == "residual":
        net, reference = _twins()
        layer, module = "bn", net.bn
        with torch.no_grad():
            expected = reference.bn(torch.relu(reference.stem(x))).mean(dim=(2, 3))
    else:
        net = _ListModel().eval()
        layer, module = "layer", net.layer
        expected = (x * 2.0).mean(dim=(2, 3))
    with torch.no_grad():
        outputs = net(x)
    with LayerEmbedder(net, layer, module, "mean", {}, stop_early=False) as run:
        got = run(x)
        with torch.no_grad():
            after = net(x)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(after, outputs)  # the model computes what it computes without the hook


class _Shared(nn.Module):
    """One convolution applied twice in one forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.conv(x)).mean(dim=(2, 3)))


def test_a_shared_module_is_refused_as_explain_refuses_it() -> None:
    import camscope

    model = _Shared().eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with pytest.raises(CamscopeError) as explained:
        camscope.explain(model, x, method="gradcam", layer="conv")
    message = str(explained.value)
    assert "ran 2 times in one forward pass (a shared module)" in message
    with pytest.raises(CamscopeError) as embedded:
        embed(model, x, "conv", batch_size=2)
    assert str(embedded.value) == message
    with pytest.raises(CamscopeError) as built:
        camscope.ReferenceBank.build(model, [(x, torch.tensor([0, 1, 0, 1]))], layer="conv", progress=False)
    assert str(built.value) == message
    assert not model.conv._forward_hooks and model.training is False
