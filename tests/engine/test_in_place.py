"""Every method sees the layer's output as the layer produced it, whatever runs after it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camscope
from camscope.engine.embedding import embed
from camscope.methods.attention import AttentionMethod

# The attention methods read transformers (tests/methods/test_attention_robustness.py checks them in place).
CNN_METHODS = sorted(name for name, cls in camscope.available_methods().items() if not issubclass(cls, AttentionMethod))


class _Residual(nn.Module):
    """conv -> bn (the explained layer) -> ``out += identity`` -> ReLU, optionally in place."""

    def __init__(self, in_place: bool, classes: int = 4) -> None:
        super().__init__()
        self.in_place = in_place
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.after = nn.ReLU(inplace=in_place)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = torch.relu(self.stem(x))
        out = self.bn(self.conv(identity))
        if self.in_place:
            out += identity
        else:
            out = out + identity
        out = self.after(out)
        return self.fc(out.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def twins() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    in_place = _Residual(in_place=True)
    with torch.no_grad():
        in_place.bn.running_mean.normal_()
        in_place.bn.running_var.uniform_(0.5, 2.0)
    out_of_place = _Residual(in_place=False)
    out_of_place.load_state_dict(in_place.state_dict())
    return in_place.eval(), out_of_place.eval()


def _options(method: str, images: torch.Tensor) -> dict:
    if method == "diffcam":
        return {"reference": torch.rand(6, *images.shape[1:], generator=torch.Generator().manual_seed(1))}
    if method in ("scorecam", "sscam", "iscam", "finer-scorecam"):
        return {"batch_size": 4}
    return {}


@pytest.mark.parametrize("method", CNN_METHODS)
def test_in_place_ops_after_the_layer_do_not_change_the_map(twins, method):
    in_place, out_of_place = twins
    images = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    options = _options(method, images)
    torch.manual_seed(3)
    expected = camscope.explain(out_of_place, images, method=method, layer="bn", **options)
    torch.manual_seed(3)
    got = camscope.explain(in_place, images, method=method, layer="bn", **options)
    torch.testing.assert_close(got.activations, expected.activations)
    torch.testing.assert_close(got.raw, expected.raw, rtol=1e-5, atol=1e-6)
    # bn's output is signed: a capture after the residual ReLU would have no negative values.
    assert (got.activations < 0).any()


def test_reference_bank_stores_the_layer_output(twins):
    in_place, out_of_place = twins
    images = torch.rand(8, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    data = [(images[:4], labels[:4]), (images[4:], labels[4:])]
    expected = camscope.ReferenceBank.build(out_of_place, data, layer="bn", progress=False)
    got = camscope.ReferenceBank.build(in_place, data, layer="bn", progress=False)
    torch.testing.assert_close(got.means, expected.means)


def test_the_full_forward_of_the_embedder_stores_the_layer_output(twins):
    """The first batch of a bank runs the whole model (to refuse shared modules): in-place ops after the layer run."""
    in_place, out_of_place = twins
    images = torch.rand(12, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([0, 1, 2, 3] * 3)
    data = [(images[:4], labels[:4]), (images[4:8], labels[4:8]), (images[8:], labels[8:])]
    heads = []
    handle = in_place.fc.register_forward_hook(lambda *_: heads.append(1))
    try:
        got = camscope.ReferenceBank.build(in_place, data, layer="bn", progress=False)
    finally:
        handle.remove()
    assert len(heads) == 1  # the first batch ran to the end, the others stopped at the layer
    expected = camscope.ReferenceBank.build(out_of_place, data, layer="bn", progress=False)
    torch.testing.assert_close(got.means, expected.means)
    torch.testing.assert_close(got.moments.scatter_of([0, 1]), expected.moments.scatter_of([0, 1]))
    one_batch = embed(in_place, images[:4], "bn")  # one batch: only the full forward
    torch.testing.assert_close(one_batch, embed(out_of_place, images[:4], "bn"))

    examples = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(6))
    for reference in ("others", "all", "class:2"):
        options = {"layer": "bn", "method": "diffcam", "reference": reference, "target": [0, 1, 2]}
        want = camscope.explain(out_of_place, examples, bank=expected, **options)
        have = camscope.explain(in_place, examples, bank=got, **options)
        torch.testing.assert_close(have.raw, want.raw, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(have.maps, want.maps, rtol=1e-5, atol=1e-6)
