"""The shipped small models: safetensors weights, stated accuracy, data, and CAM layer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import camscope
from camscope.data import small_models
from camscope.errors import CamscopeError
from camscope.models import zoo
from conftest import load_script

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", zoo.SMALL_MODELS)
def test_weights_are_small_safetensors_with_metadata(name: str) -> None:
    path = zoo.model_path(name)
    assert path.suffix == ".safetensors" and path.stat().st_size < 1_000_000
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:  # a plain safetensors file, no pickle
        assert "fc.weight" in set(file.keys())
    info = zoo.model_info(name)
    assert info["kind"] == zoo.MODEL_KIND and info["format_version"] == 1
    assert info["test_accuracy"] >= (0.95 if name in ("digits", "species") else 0.8)  # the harder levels: lower
    assert info["cam_layer"] == "features"
    assert len(info["class_names"]) == info["architecture"]["num_classes"]
    assert info["training"]["script"] == "scripts/train_small_models.py"


def test_total_size_of_shipped_weights() -> None:
    names = zoo.SMALL_MODELS + zoo.IMAGE_TEXT_MODELS
    assert sum(zoo.model_path(name).stat().st_size for name in names) < 3_000_000


def test_digits_reaches_its_stated_accuracy() -> None:
    model = zoo.load_small_model("digits")
    assert not model.training
    test = small_models.dataset("digits", split="test")
    assert test.images.shape == (450, 1, 32, 32)
    accuracy = zoo.evaluate(model, test.images, test.labels)
    assert accuracy >= 0.95
    assert accuracy == pytest.approx(zoo.model_info("digits")["test_accuracy"], abs=1 / 450)


def test_species_reaches_its_stated_accuracy() -> None:
    model = zoo.load_small_model("species")
    test = small_models.dataset("species", split="test", limit=384)
    assert test.images.shape == (384, 3, 64, 64) and test.part_masks is not None
    accuracy = zoo.evaluate(model, test.images, test.labels)
    assert accuracy >= 0.95
    assert zoo.model_info("species")["test_accuracy"] >= 0.95
    # The data are those of the training script: the first images of the full split.
    info = zoo.model_info("species")
    assert len(test.class_names) == 16
    assert test.generator.config() == {**test.generator.config(), **info["data"]["generator"]}


def test_species_model_looks_at_the_differing_part() -> None:
    """Render the same poses as the most similar class (only one part changes): the prediction follows."""
    model = zoo.load_small_model("species")
    test = small_models.dataset("species", split="test", limit=192)
    species = test.generator
    siblings = species.most_similar_classes()[test.labels]
    counterfactual = species.counterfactual(test.batch, siblings)
    accuracy = zoo.evaluate(model, counterfactual.images, siblings)
    assert accuracy >= 0.9


def test_train_split_differs_from_test_split() -> None:
    train = small_models.dataset("species", split="train", limit=8)
    test = small_models.dataset("species", split="test", limit=8)
    assert not torch.equal(train.images, test.images)
    digits_train = small_models.dataset("digits", split="train", limit=10)
    assert digits_train.images.shape == (10, 1, 32, 32)


@pytest.mark.parametrize(
    "name,shape,grid", [("digits", (2, 1, 32, 32), (16, 16)), ("species", (2, 3, 64, 64), (16, 16))]
)
def test_cam_layer(name: str, shape: tuple[int, ...], grid: tuple[int, int]) -> None:
    model = zoo.load_small_model(name)
    x = small_models.dataset(name, split="test", limit=2).images
    assert x.shape == shape
    explanation = camscope.explain(model, x, method="gradcam", layer=model.cam_layer)
    assert explanation.activations.shape[-2:] == grid
    assert explanation.maps.shape == (2, *shape[-2:])
    # Global average pooling + linear head: the CAM of class c is sum_k w_ck A_k, and its mean is the logit minus the bias.
    with torch.no_grad():
        features = model.features(x)
        logits = model(x)
    cam = torch.einsum("k,bkhw->bhw", model.fc.weight[0], features)
    assert torch.allclose(cam.mean(dim=(1, 2)) + model.fc.bias[0], logits[:, 0], atol=1e-4)
    assert camscope.engine.capture.default_layer(model, x) == "features"


def test_user_mistakes() -> None:
    with pytest.raises(CamscopeError, match="unknown small model"):
        zoo.load_small_model("mnist")
    with pytest.raises(CamscopeError, match="split"):
        small_models.dataset("digits", split="val")
    with pytest.raises(CamscopeError, match="stages"):
        zoo.SmallCNN(3, 2, [])


def test_training_script_smoke(tmp_path: Path) -> None:
    """The script trains, evaluates and writes a file that loads back (a tiny recipe)."""
    module = load_script("train_small_models")
    recipe = {
        **module.RECIPES["species"],
        "architecture": {"in_channels": 3, "num_classes": 4, "stages": [[8], [8]], "stem_stride": 2},
        "data": {
            "generator": {"num_classes": 4, "size": 32, "seed": 0},
            "train_seed": 1,
            "train_size": 32,
            "test_seed": 2,
            "test_size": 16,
        },
        "epochs": 1,
        "batch_size": 16,
    }
    model, metadata = module.train("species", recipe, log=lambda _message: None)
    assert 0.0 <= metadata["test_accuracy"] <= 1.0 and metadata["test_images"] == 16
    from camscope.io import load_tensors, save_tensors

    save_tensors(tmp_path / "tiny.safetensors", model.state_dict(), metadata, kind=zoo.MODEL_KIND)
    tensors, header = load_tensors(tmp_path / "tiny.safetensors", kind=zoo.MODEL_KIND)
    again = zoo.SmallCNN(**header["architecture"])
    again.load_state_dict(tensors)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(again.eval()(x), model.eval()(x), atol=1e-6)
