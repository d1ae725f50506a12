"""Real architectures from timm (random weights): register tokens and channels-last stages."""

from __future__ import annotations

import pytest
import timm
import torch

import camscope
from camscope.engine.capture import default_layer


@pytest.fixture(scope="module")
def dinov2_like():
    torch.manual_seed(0)
    # DINOv2 layout: class token + 4 register tokens + 14 px patches.
    return timm.create_model(
        "vit_small_patch14_reg4_dinov2", pretrained=False, img_size=56, num_classes=7, depth=2
    ).eval()


def test_vit_with_register_tokens(dinov2_like):
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    assert dinov2_like.num_prefix_tokens == 5
    layer = default_layer(dinov2_like, x)
    assert layer == "blocks.1.norm1"
    explanation = camscope.explain(dinov2_like, x, target=[1, 2])
    assert explanation.raw.shape == (2, 4, 4) and explanation.maps.shape == (2, 56, 56)
    # Independent: the patch tokens after the 5 prefix tokens, Grad-CAM over tokens.
    store = {}
    handle = dinov2_like.blocks[1].norm1.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    logits = dinov2_like(x)
    handle.remove()
    (grad,) = torch.autograd.grad(logits[0, 1] + logits[1, 2], store["a"])
    tokens, grads = store["a"][:, 5:], grad[:, 5:]
    expected = (grads.mean(dim=1, keepdim=True) * tokens).sum(-1).reshape(2, 4, 4)
    torch.testing.assert_close(explanation.raw, expected.detach(), rtol=1e-4, atol=1e-6)


def test_swin_channels_last_stage():
    torch.manual_seed(0)
    model = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        num_classes=5,
        depths=(1, 1, 1, 1),
        embed_dim=24,
        num_heads=(1, 1, 1, 1),
    ).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    explanation = camscope.explain(model, x, layer="layers.3")
    assert explanation.raw.shape == (1, 7, 7) and explanation.activations.shape == (1, 192, 7, 7)
    store = {}
    handle = model.layers[3].register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    logits = model(x)
    handle.remove()
    c = int(logits.argmax())
    (grad,) = torch.autograd.grad(logits[0, c], store["a"])  # [1, 7, 7, C]
    expected = (grad.mean(dim=(1, 2), keepdim=True) * store["a"]).sum(-1)
    torch.testing.assert_close(explanation.raw, expected.detach(), rtol=1e-4, atol=1e-6)
