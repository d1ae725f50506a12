"""Tests for camscope.models: weight mapping, class names, preprocessing, model loading, photos."""

from __future__ import annotations

import inspect
import json
import urllib.error
from importlib import resources

import numpy as np
import pytest
import torch
from PIL import Image

from camscope.errors import CamscopeError
from camscope.models import (
    class_index,
    convert_efficientnet_lite0_state_dict,
    data_config,
    efficientnet_lite0_weights_path,
    imagenet_classes,
    load_image,
    load_model,
    preprocess,
    sample_image,
    sample_images,
)
from camscope.models.efficientnet_lite0 import build_efficientnet_lite0

CAT_CLASSES = {"Egyptian cat", "tabby", "tiger cat"}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_model()


@pytest.fixture(scope="module")
def source_state_dict() -> dict[str, torch.Tensor]:
    return torch.load(efficientnet_lite0_weights_path(), weights_only=True, map_location="cpu")


@pytest.fixture(scope="module")
def reference(source_state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Independent implementation: the efficientnet-lite-pytorch package, same state dict."""
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_name("efficientnet-lite0")  # static TF 'same' padding for 224x224
    ref.load_state_dict(source_state_dict, strict=True)
    return ref.eval()


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return sample_image("chelsea")


@pytest.fixture(scope="module")
def chelsea_logits(model: torch.nn.Module, chelsea: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(preprocess(chelsea))


# ----------------------------------------------------------------------------- weights


def test_default_model_is_timm_lite0_in_eval_mode(model: torch.nn.Module) -> None:
    assert type(model).__name__ == "EfficientNet"
    assert model.pretrained_cfg["architecture"] == "tf_efficientnet_lite0"
    assert not model.training
    assert all(not m.training for m in model.modules())


def test_weights_file_is_shipped_and_loaded_with_weights_only() -> None:
    path = efficientnet_lite0_weights_path()
    assert path.is_file() and path.suffix == ".pth"
    source = inspect.getsource(build_efficientnet_lite0)
    assert "weights_only=True" in source and "strict=True" in source


def test_key_mapping_is_one_to_one_and_complete(
    model: torch.nn.Module, source_state_dict: dict[str, torch.Tensor]
) -> None:
    converted = convert_efficientnet_lite0_state_dict(source_state_dict, model.state_dict())
    assert len(converted) == len(source_state_dict) == len(model.state_dict()) == 296
    assert set(converted) == set(model.state_dict())
    # The converted tensors are exactly the ones in the model.
    for key, value in model.state_dict().items():
        assert torch.equal(value, converted[key]), key
    # Every source tensor is used exactly once.
    assert {id(t) for t in converted.values()} == {id(t) for t in source_state_dict.values()}


def test_key_mapping_rejects_bad_state_dicts(
    model: torch.nn.Module, source_state_dict: dict[str, torch.Tensor]
) -> None:
    target = model.state_dict()
    extra = dict(source_state_dict, **{"_blocks.16._bn0.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="unmapped"):
        convert_efficientnet_lite0_state_dict(extra, target)
    missing = dict(source_state_dict)
    del missing["_blocks.5._expand_conv.weight"]
    with pytest.raises(RuntimeError, match="not covered"):
        convert_efficientnet_lite0_state_dict(missing, target)
    wrong_shape = dict(source_state_dict)
    wrong_shape["_fc.bias"] = torch.zeros(999)
    with pytest.raises(RuntimeError, match="shape"):
        convert_efficientnet_lite0_state_dict(wrong_shape, target)


def test_logits_match_independent_implementation(
    model: torch.nn.Module, reference: torch.nn.Module, chelsea: np.ndarray, chelsea_logits: torch.Tensor
) -> None:
    torch.manual_seed(0)
    random_input = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        pairs = [
            (model(random_input), reference(random_input)),
            (chelsea_logits, reference(preprocess(chelsea))),
        ]
    for ours, theirs in pairs:
        assert ours.shape == theirs.shape == (1, 1000)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        assert ours.argmax(1).tolist() == theirs.argmax(1).tolist()


def test_chelsea_is_a_cat(chelsea_logits: torch.Tensor) -> None:
    names = imagenet_classes()
    top3 = {names[i] for i in chelsea_logits[0].topk(3).indices.tolist()}
    assert top3 & CAT_CLASSES, top3


def test_random_weights_differ_from_pretrained(model: torch.nn.Module) -> None:
    random_model = load_model(weights=None)
    assert not torch.equal(random_model.classifier.weight, model.classifier.weight)
    assert not random_model.training


# ----------------------------------------------------------------------------- class names


def test_class_names_file() -> None:
    raw = resources.files("camscope").joinpath("assets/imagenet_classes.json").read_text(encoding="utf-8")
    names = json.loads(raw)
    assert names == imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[0] == "tench" and names[281] == "tabby" and names[282] == "tiger cat"
    assert names[285] == "Egyptian cat" and names[999] == "toilet tissue"
    imagenet_classes().append("x")  # the cached list is not exposed
    assert len(imagenet_classes()) == 1000


def test_class_index_resolves_names_and_ids() -> None:
    assert class_index("tabby") == 281
    assert class_index("TABBY") == 281
    assert class_index("  Egyptian Cat ") == 285
    assert class_index("persian") == 283  # unique substring of "Persian cat"
    assert class_index(281) == 281
    assert class_index(np.int64(7)) == 7
    assert class_index("281") == 281
    assert class_index("3", num_classes=10) == 3


def test_class_index_errors_are_helpful() -> None:
    with pytest.raises(CamscopeError, match="ambiguous") as ambiguous:
        class_index("cat")
    assert "281 'tabby'" in str(ambiguous.value) or "tiger cat" in str(ambiguous.value)
    with pytest.raises(CamscopeError, match="Did you mean") as typo:
        class_index("tabbby")
    assert "tabby" in str(typo.value)
    with pytest.raises(CamscopeError, match="Unknown ImageNet class"):
        class_index("qwertyuiop")
    with pytest.raises(CamscopeError, match="out of range"):
        class_index(1000)
    with pytest.raises(CamscopeError, match="out of range"):
        class_index("-1")
    with pytest.raises(CamscopeError, match="integer index"):
        class_index("tabby", num_classes=10)
    with pytest.raises(CamscopeError):
        class_index(True)


# ----------------------------------------------------------------------------- preprocessing


def test_data_config_comes_from_timm() -> None:
    cfg = data_config()
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.std == (0.5, 0.5, 0.5)
    assert cfg.interpolation == "bicubic" and cfg.crop_pct == 0.875 and cfg.input_size == 224
    tv = data_config("torchvision:resnet18")
    assert tv.mean == (0.485, 0.456, 0.406) and tv.interpolation == "bilinear"


def test_preprocess_matches_timm_eval_transform(model: torch.nn.Module, chelsea: np.ndarray) -> None:
    import timm.data

    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    expected = transform(Image.fromarray(chelsea)).unsqueeze(0)
    x, rgb = load_image(chelsea)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    assert torch.equal(x, expected)
    assert torch.equal(preprocess(Image.fromarray(chelsea)), expected)
    assert rgb.shape == (224, 224, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    np.testing.assert_allclose(rgb, (x[0].permute(1, 2, 0).numpy() * 0.5 + 0.5), atol=1e-6)


def test_preprocess_sizes_and_modes(chelsea: np.ndarray, tmp_path) -> None:
    assert preprocess(chelsea, size=160).shape == (1, 3, 160, 160)
    gray = chelsea.mean(axis=2).astype(np.uint8)
    assert preprocess(gray).shape == (1, 3, 224, 224)
    rgba = np.dstack([chelsea, np.full(chelsea.shape[:2], 255, np.uint8)])
    assert torch.equal(preprocess(rgba), preprocess(chelsea))
    assert torch.equal(preprocess(Image.fromarray(chelsea).convert("RGBA")), preprocess(chelsea))
    assert torch.equal(preprocess(chelsea.astype(np.float32) / 255.0), preprocess(chelsea))
    path = tmp_path / "cat.png"
    Image.fromarray(gray).save(path)
    x, rgb = load_image(path)
    assert x.shape == (1, 3, 224, 224) and rgb.shape == (224, 224, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1])
    with pytest.raises(CamscopeError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(CamscopeError, match="Could not read"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(CamscopeError):
        preprocess(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(CamscopeError):
        preprocess(chelsea, size=0)


def test_sample_images_are_offline_rgb() -> None:
    images = sample_images()
    assert set(images) == {"chelsea", "astronaut", "coffee", "rocket", "motorcycle", "grace_hopper"}
    for name, image in images.items():
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, name
    with pytest.raises(CamscopeError, match="available"):
        sample_image("dog")


# ----------------------------------------------------------------------------- hub models


@pytest.mark.parametrize("name", ["torchvision:resnet18", "timm:resnet18"])
def test_hub_models_random_init_offline(name: str) -> None:
    net = load_model(name, weights=None)
    assert not net.training
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
    assert load_model(name, weights="none").training is False


def test_unknown_model_names() -> None:
    for bad in ("resnet18", "foo:resnet18", "torchvision:", ""):
        with pytest.raises(CamscopeError, match=r"[Aa]ccepted forms"):
            load_model(bad, weights=None)
    with pytest.raises(CamscopeError, match="resnet18"):
        load_model("torchvision:resnet81", weights=None)
    with pytest.raises(CamscopeError, match="timm has no model"):
        load_model("timm:not_a_model", weights=None)
    with pytest.raises(CamscopeError, match="Unknown weights"):
        load_model(weights="imagenet21k")


def test_pretrained_hub_weights_without_network_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm
    import torchvision

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    monkeypatch.setattr(timm, "create_model", offline)
    for name in ("torchvision:resnet18", "timm:resnet18"):
        with pytest.raises(CamscopeError, match="network") as info:
            load_model(name)
        assert "weights=None" in str(info.value) and "--weights none" in str(info.value)


def test_weights_from_local_file(model: torch.nn.Module, source_state_dict, tmp_path) -> None:
    path = tmp_path / "lite0.pth"
    torch.save(source_state_dict, path)  # EfficientNet-PyTorch layout: mapped on load
    loaded = load_model(weights=str(path))
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), atol=0, rtol=0)
    with pytest.raises(CamscopeError, match="does not fit"):
        load_model("timm:resnet18", weights=path)
