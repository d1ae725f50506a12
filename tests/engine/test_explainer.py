"""The capture engine: hooks, model state, output kinds, layouts, volumes, several layers, bad input."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

import camscope
from camscope.engine.capture import default_layer, to_channels_first
from camscope.errors import CamscopeError


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_removed_and_state_restored_on_every_path(strided_cnn, images):
    strided_cnn.train()
    strided_cnn.stem[0].weight.requires_grad_(False)
    running_mean = strided_cnn.stem[1].running_mean.clone()
    camscope.explain(strided_cnn, images, layer="stage")
    assert _hook_count(strided_cnn) == 0
    assert strided_cnn.training and strided_cnn.stem[1].training
    assert not strided_cnn.stem[0].weight.requires_grad and strided_cnn.stage[0].weight.requires_grad
    # Eval mode during the call: BatchNorm statistics untouched.
    torch.testing.assert_close(strided_cnn.stem[1].running_mean, running_mean)
    with pytest.raises(CamscopeError):
        camscope.explain(strided_cnn, images, layer="stage", target=99)
    assert _hook_count(strided_cnn) == 0 and strided_cnn.training
    assert all(p.grad is None for p in strided_cnn.parameters())


def test_works_under_no_grad_with_frozen_parameters(tiny_cnn, images):
    expected = camscope.explain(tiny_cnn, images, layer="features.2").raw
    for parameter in tiny_cnn.parameters():
        parameter.requires_grad_(False)
    with torch.no_grad():
        explanation = camscope.explain(tiny_cnn, images, layer="features.2")
        assert not torch.is_grad_enabled()  # the caller's no_grad holds after the call
    assert torch.is_grad_enabled()
    torch.testing.assert_close(explanation.raw, expected)
    assert not any(p.requires_grad for p in tiny_cnn.parameters())
    with torch.inference_mode():
        explanation = camscope.explain(tiny_cnn, images.clone(), layer="features.2")
    torch.testing.assert_close(explanation.raw, expected)


def test_in_place_relu_after_the_layer_keeps_the_captured_values(tiny_cnn, images):
    # features.2 is followed by ReLU(inplace=True): the captured activations must be pre-ReLU.
    explanation = camscope.explain(tiny_cnn, images, layer="features.2")
    pre_relu = tiny_cnn.features[:3](images)
    torch.testing.assert_close(explanation.activations, pre_relu.detach())
    assert (explanation.activations < 0).any()


class _Wrapped(nn.Module):
    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x):
        logits = self.model(x)
        if self.kind == "tuple":
            return logits, x.mean()
        if self.kind == "dict":
            return {"logits": logits, "aux": x.mean()}
        return type("Output", (), {"logits": logits})()


@pytest.mark.parametrize("kind", ["tuple", "dict", "object"])
def test_models_returning_tuples_dicts_and_objects(tiny_cnn, images, kind):
    expected = camscope.explain(tiny_cnn, images, layer="features.2").raw
    wrapped = _Wrapped(tiny_cnn, kind)
    torch.testing.assert_close(camscope.explain(wrapped, images, layer="model.features.2").raw, expected)


def test_gradients_only_down_to_the_layer(tiny_cnn, images):
    """No parameter gradient is accumulated and nothing below the layer is differentiated."""
    calls = []
    tiny_cnn.features[0].register_full_backward_hook(lambda *a: calls.append(1))
    camscope.explain(tiny_cnn, images, layer="features.2")
    assert calls == []
    assert all(p.grad is None for p in tiny_cnn.parameters())


def test_thousand_calls_do_not_grow_memory(tiny_cnn):
    x = torch.randn(1, 3, 8, 8)
    explainer = camscope.Explainer(tiny_cnn, layer="features.2")
    for _ in range(20):
        explainer(x)
    gc.collect()
    before = sum(type(o) in (torch.Tensor, nn.Parameter) for o in gc.get_objects())
    for _ in range(1000):
        explainer(x)
    gc.collect()
    after = sum(type(o) in (torch.Tensor, nn.Parameter) for o in gc.get_objects())
    assert after - before <= 2
    assert _hook_count(tiny_cnn) == 0


def test_token_model_drops_prefix_tokens_and_infers_the_grid(tiny_vit):
    x = torch.randn(2, 3, 16, 12, generator=torch.Generator().manual_seed(0))
    assert default_layer(tiny_vit, x) == "blocks.1.norm1"
    explanation = camscope.explain(tiny_vit, x)
    assert explanation.raw.shape == (2, 4, 3) and explanation.maps.shape == (2, 16, 12)
    # Independent computation: tokens 3.. are the 4x3 grid in row-major order.
    tokens = {}
    handle = tiny_vit.blocks[1].norm1.register_forward_hook(lambda m, i, o: tokens.setdefault("a", o))
    x_ = x.clone()
    score = tiny_vit(x_)
    handle.remove()
    classes = score.argmax(1)
    (grad,) = torch.autograd.grad(score.gather(1, classes[:, None]).sum(), tokens["a"])
    patch_a, patch_g = tokens["a"][:, 3:], grad[:, 3:]
    weights = patch_g.mean(dim=1, keepdim=True)
    expected = (weights * patch_a).sum(-1).reshape(2, 4, 3)
    torch.testing.assert_close(explanation.raw, expected.detach(), rtol=1e-4, atol=1e-6)


def test_token_grid_error_is_clear():
    with pytest.raises(CamscopeError, match="patch grid"):
        to_channels_first(torch.randn(1, 50, 8), (1, 3, 16, 16), "blocks.0", prefix_tokens=1)
    grid = to_channels_first(torch.randn(1, 50, 8), (1, 3, 16, 16), "blocks.0", grid=(7, 7))
    assert grid.shape == (1, 8, 7, 7)


def test_channels_last_outputs_are_permuted():
    activations = torch.randn(2, 7, 7, 96)
    out = to_channels_first(activations, (2, 3, 224, 224), "stage")
    assert out.shape == (2, 96, 7, 7) and torch.equal(out[:, 5], activations[..., 5])


def test_volumes_use_trilinear_upsampling(tiny_3d):
    x = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    for method in ["gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "cam", "smoothgradcampp"]:
        explanation = camscope.explain(tiny_3d, x, method=method, layer="features.2")
        assert explanation.raw.shape == (2, 4, 4, 4) and explanation.maps.shape == (2, 8, 8, 8)
        assert torch.isfinite(explanation.maps).all()
    feats = tiny_3d.features(x)
    score = tiny_3d.fc(feats.mean(dim=(2, 3, 4)))
    classes = score.argmax(1)
    (grad,) = torch.autograd.grad(score.gather(1, classes[:, None]).sum(), feats)
    expected = (grad.mean(dim=(2, 3, 4), keepdim=True) * feats).sum(1)
    explanation = camscope.explain(tiny_3d, x, layer="features.3")
    torch.testing.assert_close(explanation.raw, expected.detach(), rtol=1e-4, atol=1e-6)


def test_several_layers_give_per_layer_maps_and_a_fused_map(strided_cnn, images):
    explanation = camscope.explain(strided_cnn, images, layer=["stem", "stage"])
    assert set(explanation.layers) == {"stem", "stage"}
    single = camscope.explain(strided_cnn, images, layer="stage")
    torch.testing.assert_close(explanation.layers["stage"].raw, single.raw)
    expected = (explanation.layers["stem"].maps + explanation.layers["stage"].maps) / 2
    torch.testing.assert_close(explanation.maps, camscope.engine.explainer.normalize_maps(expected))
    fused_max = camscope.explain(strided_cnn, images, layer=["stem", "stage"], fuse="max")
    expected = torch.maximum(explanation.layers["stem"].maps, explanation.layers["stage"].maps)
    torch.testing.assert_close(fused_max.maps, camscope.engine.explainer.normalize_maps(expected))


def test_features_mask_selects_channels(tiny_cnn, images):
    full = camscope.explain(tiny_cnn, images, layer="features.2")
    mask = torch.zeros(16)
    mask[:5] = 1
    masked = camscope.explain(tiny_cnn, images, layer="features.2", features=mask)
    expected = (full.weights[:, :5, None, None] * full.activations[:, :5]).sum(1)
    torch.testing.assert_close(masked.raw, expected)


def test_default_layer_of_a_cnn(strided_cnn, images):
    assert default_layer(strided_cnn, images) == "stage"


# --- bad input: each error says what was wrong ---------------------------------------------


def test_unknown_layer_name(tiny_cnn, images):
    with pytest.raises(CamscopeError, match=r"unknown layer 'features.22'.*did you mean"):
        camscope.explain(tiny_cnn, images, layer="features.22")


def test_class_out_of_range(tiny_cnn, images):
    with pytest.raises(CamscopeError, match=r"target class 7 is out of range .* 5 outputs"):
        camscope.explain(tiny_cnn, images, layer="features.2", target=7)


def test_target_list_of_the_wrong_length(tiny_cnn, images):
    with pytest.raises(CamscopeError, match="2 entries for a batch of 3"):
        camscope.explain(tiny_cnn, images, layer="features.2", target=[1, 2])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_infinite_inputs(tiny_cnn, images, value):
    images[0, 0, 0, 0] = value
    with pytest.raises(CamscopeError, match="NaN or infinite"):
        camscope.explain(tiny_cnn, images)


def test_wrong_number_of_channels(tiny_cnn):
    with pytest.raises(CamscopeError, match="takes 3 channels but the inputs have 1"):
        camscope.explain(tiny_cnn, torch.randn(2, 1, 16, 16))


def test_single_image_without_batch_axis(tiny_cnn):
    with pytest.raises(CamscopeError, match="unsqueeze"):
        camscope.explain(tiny_cnn, torch.randn(3, 16, 16))


def test_model_without_parameters(images):
    with pytest.raises(CamscopeError, match="no parameters"):
        camscope.explain(nn.Sequential(nn.Flatten()), images)


def test_token_outputs_without_a_grid(tiny_vit):
    # 16x16 input gives 16 patches + 3 prefix tokens; claiming 5 prefix tokens leaves 14: no grid.
    with pytest.raises(CamscopeError, match="patch grid"):
        camscope.explain(tiny_vit, torch.randn(1, 3, 16, 16), prefix_tokens=5)


def test_unknown_method_and_option(tiny_cnn, images):
    with pytest.raises(CamscopeError, match="did you mean gradcam"):
        camscope.explain(tiny_cnn, images, method="gradcamm")
    with pytest.raises(CamscopeError, match="has no option"):
        camscope.explain(tiny_cnn, images, method="gradcam", samples=3)


def test_shared_module_called_twice_is_refused(images):
    relu = nn.ReLU()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), relu, nn.Conv2d(4, 4, 3), relu, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    with pytest.raises(CamscopeError, match="ran 2 times"):
        camscope.explain(model, images, layer="1")
