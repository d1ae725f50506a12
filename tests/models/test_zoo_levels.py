"""The species classifiers of the three difficulty levels and the species image-text model: their metadata, their
regime (the hard level confuses similar classes), their loading as a CLIP, and their training scripts (tiny runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import camscope
from camscope.cli.app import main
from camscope.data import small_models
from camscope.data.synthetic import LEVELS, SyntheticSpecies
from camscope.errors import CamscopeError
from camscope.models import zoo
from camscope.models.clip import CLIPClassifier, load_clip
from camscope.models.small_clip import CaptionTokenizer, Phrase, caption_text, caption_truth, siglip_loss
from conftest import load_script

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("level", list(zoo.SPECIES_LEVELS))
def test_each_level_ships_a_model_with_accuracy_command_seed_and_log(level: str) -> None:
    name = zoo.SPECIES_LEVELS[level]
    info = zoo.model_info(name)
    assert info["training"]["seed"] == 0 and info["training"]["command"].startswith(
        "python scripts/train_small_models.py"
    )
    assert f"--only {name}" in info["training"]["command"]
    assert info["data"]["generator"] == {"num_classes": 16, "size": 64, "seed": 0, **_json(LEVELS[level])}
    assert info["architecture"] == zoo.model_info("species")["architecture"]  # the same model at every level
    assert info["level"] == level and 0 <= info["error_rate_into_most_similar"] <= 1 - info["test_accuracy"] + 1e-9
    assert info["errors_into_most_similar"] == round(info["error_rate_into_most_similar"] * info["test_images"])
    if level != "easy":
        assert info["training"]["log"]


def _json(knobs: dict[str, object]) -> dict[str, object]:
    return json.loads(json.dumps(knobs))  # tuples as lists, as the metadata stores them


def test_the_hard_level_is_in_the_papers_regime() -> None:
    """80-92% accuracy, most errors into the most similar class; easier levels are more accurate."""
    accuracy = {level: zoo.model_info(name)["test_accuracy"] for level, name in zoo.SPECIES_LEVELS.items()}
    assert 0.80 <= accuracy["hard"] <= 0.92
    assert accuracy["hard"] < accuracy["medium"] < accuracy["easy"]
    assert zoo.model_info("species-hard")["share_of_errors_into_most_similar"] > 0.5


def test_hard_model_reaches_its_accuracy_on_the_first_test_images() -> None:
    model = zoo.load_small_model("species-hard")
    test = small_models.dataset("species-hard", split="test", limit=128)
    assert test.generator.config() == SyntheticSpecies.at_level("hard").config()
    accuracy = zoo.evaluate(model, test.images, test.labels)
    assert accuracy == pytest.approx(zoo.model_info("species-hard")["test_accuracy"], abs=0.1)


def test_image_text_model_loads_as_a_clip_and_names_colours() -> None:
    info = zoo.model_info("species-clip")
    assert (
        info["training"]["command"].startswith("python scripts/train_species_clip.py") and info["training"]["seed"] == 0
    )
    assert info["test_accuracy"] > 0.1 and info["test_scores"]["colour_accuracy"] > 0.5
    loaded = load_clip("camscope:species-clip")
    assert loaded.config.input_size == 64 and loaded.config.mean == (0.0, 0.0, 0.0)
    test = small_models.dataset("species-clip", split="test", limit=32)
    species = test.generator
    prompts = [f"{colour} tail" for colour in ("red", "orange", "yellow", "green", "teal", "blue", "purple", "brown")]
    prompts += ["white tail", "black tail"]
    classifier = loaded.classifier(prompts)
    assert isinstance(classifier, CLIPClassifier) and classifier.backend == "open_clip"
    with torch.no_grad():
        predicted = classifier(test.images).argmax(dim=1)
    truth = torch.tensor([prompts.index(f"{species.describe(int(c))['tail']['colour']} tail") for c in test.labels])
    assert float((predicted == truth).float().mean()) > 0.3  # chance: 0.1
    explanation = camscope.explain(
        classifier, test.images[:2], method="gradcam", target=camscope.Finer(explained=0, references=[1])
    )
    assert explanation.layer == "model.visual.features" and explanation.maps.shape == (2, 64, 64)


def test_image_text_user_mistakes() -> None:
    tokenizer = CaptionTokenizer()
    with pytest.raises(CamscopeError, match="'crimson'"):
        tokenizer(["crimson tail"])
    with pytest.raises(CamscopeError, match="no words"):
        tokenizer(["  "])
    with pytest.raises(CamscopeError, match="image-text model"):
        zoo.load_small_model("species-clip")
    with pytest.raises(CamscopeError, match="classifier"):
        zoo.load_image_text_model("species-hard")
    with pytest.raises(CamscopeError, match="camscope:species-clip"):
        load_clip("camscope:species-vit")


def test_caption_truth_and_siglip_loss_match_their_definitions() -> None:
    species = SyntheticSpecies(8, 64, 0)
    style = species.describe(0)
    true = [Phrase("tail", colour=style["tail"]["colour"]), Phrase("beak", shape=style["beak"]["shape"])]
    other_colour = next(c for c in ("red", "blue") if c != style["tail"]["colour"])
    false = [Phrase("tail", colour=other_colour)]
    truth = caption_truth(species, [true, false, []], torch.tensor([0]))
    assert truth.tolist() == [[True, False, True]]  # the empty caption ("bird") is true of every image
    assert (
        caption_text(true, bird=True) == f"a bird with {style['tail']['colour']} tail and {style['beak']['shape']} beak"
    )
    logits, signs = torch.tensor([[2.0, -1.0]]), torch.tensor([[True, False]])
    expected = (
        -(torch.nn.functional.logsigmoid(torch.tensor(2.0)) + torch.nn.functional.logsigmoid(torch.tensor(1.0))) / 2
    )
    assert float(siglip_loss(logits, signs)) == pytest.approx(float(expected))


def test_prompts_cli_runs_offline_on_the_image_text_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from camscope.viz.figures import save_image

    test = small_models.dataset("species-clip", split="test", limit=1)
    colour = test.generator.describe(int(test.labels[0]))["tail"]["colour"]
    save_image(tmp_path / "species.png", test.images[0].permute(1, 2, 0).numpy())
    argv = ["prompts", str(tmp_path / "species.png"), "--model", "camscope:species-clip", "--prompt", f"{colour} tail"]
    assert main([*argv, "--versus", "bird", "--out", str(tmp_path / "out"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[0]["layer"] == "model.visual.features" and Path(report[0]["files"][0]).is_file()
    assert main([*argv[:-1], "a purple unicorn", "--out", str(tmp_path / "out")]) == 2
    assert "unicorn" in capsys.readouterr().err


@pytest.mark.parametrize("level", list(LEVELS))
def test_the_training_script_learns_each_level_tiny(level: str) -> None:
    """A tiny recipe of each level (4 classes, 32 px, 128 images, 8 epochs) fits its training images above chance."""
    module = load_script("train_small_models")
    name = zoo.SPECIES_LEVELS[level]
    recipe = {
        **module.RECIPES[name],
        "architecture": {"in_channels": 3, "num_classes": 4, "stages": [[8], [16]], "stem_stride": 2},
        "data": {
            "generator": {"num_classes": 4, "size": 32, "seed": 0, **LEVELS[level]},
            "train_seed": 1,
            "train_size": 128,
            "test_seed": 2,
            "test_size": 16,
        },
        "epochs": 8,
        "batch_size": 16,
        "lr": 1e-2,
    }
    train = SyntheticSpecies(**recipe["data"]["generator"]).sample_split(128, 1)

    def loss(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(model.eval()(train.images), train.labels))

    torch.manual_seed(recipe["seed"])
    untrained = zoo.SmallCNN(**recipe["architecture"])
    model, metadata = module.train(name, recipe, log=lambda _message: None)
    assert loss(model) < 0.9 * loss(untrained) and zoo.evaluate(model, train.images, train.labels) > 0.35  # chance 0.25
    assert metadata["training"]["command"] == f"python scripts/train_small_models.py --only {name}"
    assert metadata["level"] == level and 0 <= metadata["share_of_errors_into_most_similar"] <= 1


def test_the_image_text_script_learns_tiny() -> None:
    """A tiny recipe (16 species, 32 px, 256 images, 3 epochs) lowers SigLIP's loss on its own training captions."""
    module = load_script("train_species_clip")
    recipe = {
        **module.RECIPE,
        "architecture": {"dim": 16, "stages": [[8], [16]], "stem_stride": 2, "text_width": 16},
        "data": {
            **module.RECIPE["data"],
            "generator": {"num_classes": 16, "size": 32, "seed": 0},
            "train_size": 256,
            "test_size": 32,
        },
        "epochs": 3,
        "batch_size": 64,
        "lr": 1e-2,
    }
    species = SyntheticSpecies(**recipe["data"]["generator"])
    train = species.sample_split(256, 1)
    captions = module.random_captions(species, train.labels, torch.Generator().manual_seed(5))
    truth = caption_truth(species, captions, train.labels)

    def loss(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(
                siglip_loss(model.eval()(train.images, model.tokenizer([caption_text(c) for c in captions])), truth)
            )

    torch.manual_seed(recipe["seed"])
    untrained = module.SpeciesCLIP(**recipe["architecture"])
    model, metadata = module.train(recipe, log=lambda _message: None)
    assert loss(model) < 0.8 * loss(untrained)
    assert (
        metadata["training"]["command"] == "python scripts/train_species_clip.py" and metadata["training"]["seed"] == 0
    )
