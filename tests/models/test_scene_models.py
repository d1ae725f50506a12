"""The shipped scene detector and segmenter: their scores, their outputs, their losses and their training script."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from pytorch_grad_cam import GradCAM as PeerGradCAM
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

import camscope
from camscope.data.small_models import scene_data
from camscope.errors import CamscopeError
from camscope.models import load_model
from camscope.models.scene_models import (
    SceneDetector,
    SceneSegmenter,
    detection_average_precision,
    segmentation_iou,
)
from camscope.models.scene_zoo import SCENE_MODELS, load_scene_model, scene_model_info
from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "src" / "camscope" / "assets" / "models"


@pytest.fixture(scope="module")
def detector():
    return load_scene_model("scenes-detector")


@pytest.fixture(scope="module")
def segmenter():
    return load_scene_model("scenes-segmenter")


@pytest.fixture(scope="module")
def first_scenes():
    return scene_data("scenes-detector", "test", limit=16)


def test_the_shipped_models_are_small_and_score_as_recorded(detector, segmenter, first_scenes):
    """Every shipped weight file together stays a few MB; the recorded scores hold for the shipped weights."""
    assert sum(path.stat().st_size for path in ASSETS.glob("*.safetensors")) < 4 * 2**20
    script = load_script("train_scene_models")
    for name, model in (("scenes-detector", detector), ("scenes-segmenter", segmenter)):
        info = scene_model_info(name)
        first = info["test_first"]
        measured = script.scores_on(model, first_scenes[: first["scenes"]])
        key = "map50" if name == "scenes-detector" else "miou"
        assert measured[key] == pytest.approx(first[key], abs=1e-6)
        assert info["test"][key] > 0.8, f"{name} learnt too little: {info['test']}"
        assert info["training"]["command"].startswith("python scripts/train_scene_models.py")
        assert len(info["training"]["log"]) == info["training"]["epochs"] + 2
        assert info["class_names"][0] == "background" and len(info["class_names"]) == model.num_classes


def test_load_model_names_the_scene_models_and_their_preprocessing():
    from camscope.models import data_config

    model = load_model("camscope:scenes-detector")
    assert isinstance(model, SceneDetector) and not model.training
    random = load_model("camscope:scenes-segmenter", weights=None)
    shipped = load_scene_model("scenes-segmenter")
    assert not torch.equal(random.classifier[1].weight, shipped.classifier[1].weight)
    config = data_config("camscope:scenes-detector")
    assert (config.mean, config.std, config.crop_pct, config.input_size) == ((0, 0, 0), (1, 1, 1), 1.0, 96)
    with pytest.raises(CamscopeError, match="scenes-detector"):
        load_model("camscope:scenes-detectr")
    assert set(SCENE_MODELS) == {"scenes-detector", "scenes-segmenter"}


def test_detections_are_torchvision_style_and_differentiable(detector, first_scenes):
    found = detector(first_scenes.images[:2])
    assert len(found) == 2 and set(found[0]) == {"boxes", "labels", "scores"}
    scores = found[0]["scores"]
    assert bool((scores[:-1] >= scores[1:]).all()) and bool((scores > detector.score_thresh).all())
    assert found[0]["boxes"].requires_grad and scores.requires_grad
    assert camscope.targets.detection.model_num_classes(detector) == 5
    assert camscope.targets.detection.model_detection_cap(detector) == detector.detections_per_img


def test_decoding_against_a_hand_made_head():
    """Peaks of the centre maps become boxes: centre (cell + offset) * 4, size exp(log size) * 4, label class + 1."""
    model = SceneDetector(num_classes=3, detections_per_img=5, score_thresh=0.3).eval()
    logits = torch.full((1, 2, 6, 6), -9.0)
    logits[0, 1, 2, 3] = 2.0  # class 1 (label 2) at row 2, column 3
    logits[0, 0, 4, 1] = 0.0  # class 0 (label 1) at row 4, column 1: p = 0.5
    logits[0, 0, 4, 2] = -0.5  # a neighbour of that peak: not a peak
    size = torch.zeros(1, 2, 6, 6)
    size[0, :, 2, 3] = torch.tensor([math.log(3.0), math.log(2.0)])
    offset = torch.full((1, 2, 6, 6), 0.25)
    model.raw = lambda images: (logits, size, offset)  # type: ignore[method-assign]
    found = model(torch.zeros(1, 3, 96, 96))[0]
    assert found["labels"].tolist() == [2, 1]
    torch.testing.assert_close(found["scores"], torch.tensor([2.0, 0.0]).sigmoid())
    centre = (torch.tensor([3.0, 2.0]) + 0.25) * 4
    torch.testing.assert_close(
        found["boxes"][0], torch.cat([centre - torch.tensor([6.0, 4.0]), centre + torch.tensor([6.0, 4.0])])
    )
    torch.testing.assert_close(
        found["boxes"][1], torch.tensor([1.25 * 4 - 2, 4.25 * 4 - 2, 1.25 * 4 + 2, 4.25 * 4 + 2])
    )


def test_box_target_on_the_shipped_detector_matches_pytorch_grad_cam(detector, first_scenes):
    """Grad-CAM of the shipped detector's boxes: camscope.BoxTarget (any-label rule) equals FasterRCNNBoxScoreTarget."""
    x = first_scenes.images[:1]
    with torch.no_grad():
        found = detector(x)[0]
    labels, boxes = found["labels"][:2], found["boxes"][:2]
    ours = camscope.explain(detector, x, layer="features", target=camscope.BoxTarget(labels, boxes, match="any-label"))
    targets = [FasterRCNNBoxScoreTarget(labels.numpy(), boxes.numpy())]
    with PeerGradCAM(model=detector, target_layers=[detector.features]) as cam:
        cam(input_tensor=x, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = torch.as_tensor(cam.get_cam_image(x, detector.features, targets, activations, grads, False))
    detector.zero_grad(set_to_none=True)
    assert float(raw.abs().max()) > 1e-4
    torch.testing.assert_close(ours.raw, raw, atol=1e-5 * float(raw.abs().max()), rtol=0)


def test_average_precision_against_a_hand_count():
    # Class 1: three objects over two images; detections by score: hit, false (duplicate), hit, false (elsewhere).
    found = [
        {"boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [40, 40, 50, 50]]), "labels": torch.tensor([1, 1, 2]),
         "scores": torch.tensor([0.9, 0.8, 0.6])},
        {"boxes": torch.tensor([[20.0, 20, 30, 30], [60, 60, 70, 70]]), "labels": torch.tensor([1, 1]),
         "scores": torch.tensor([0.7, 0.5])},
    ]  # fmt: skip
    labels = torch.tensor([[1, 2], [1, 1]])
    boxes = torch.tensor([[[0, 0, 10, 10], [40, 40, 50, 50]], [[20, 20, 30, 30], [80, 80, 90, 90]]])
    ap = detection_average_precision(found, labels, boxes)
    # Ranked hits 1, 0, 1, 0 of 3 objects: precision 1, 1/2, 2/3, 1/2 at recall 1/3, 1/3, 2/3, 2/3;
    # interpolated (non-increasing from the right): 1, 2/3, 2/3, 1/2; area = 1/3 * 1 + 1/3 * 2/3.
    assert ap[1] == pytest.approx(1 / 3 + 2 / 9)
    assert ap[2] == pytest.approx(1.0)


def test_segmentation_iou_against_brute_force():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=generator)
    truth = torch.randint(0, 3, (2, 5, 6), generator=generator)
    predicted = logits.argmax(dim=1)
    expected = []
    for c in range(4):
        inter = sum(int(p == c and t == c) for p, t in zip(predicted.flatten().tolist(), truth.flatten().tolist()))
        union = sum(int(p == c or t == c) for p, t in zip(predicted.flatten().tolist(), truth.flatten().tolist()))
        expected.append(inter / union if union else float("nan"))
    torch.testing.assert_close(
        segmentation_iou(logits, truth, 4), torch.tensor(expected, dtype=torch.float64), equal_nan=True
    )


def test_bad_inputs_are_one_clear_error():
    with pytest.raises(CamscopeError, match="multiples of 16"):
        SceneSegmenter(num_classes=3)(torch.rand(1, 3, 40, 40))
    with pytest.raises(CamscopeError, match=r"\[B, 3, H, W\]"):
        SceneDetector(num_classes=3)(torch.rand(1, 1, 32, 32))
    with pytest.raises(CamscopeError, match="background"):
        SceneDetector(num_classes=1)
    with pytest.raises(CamscopeError, match="unknown scene model"):
        scene_data("scenes-classifier")


@pytest.mark.slow
def test_the_training_script_learns_a_tiny_detector_and_segmenter():
    """The script's recipe, shrunk (tiny widths, 32 scenes of 64 px, drawn once for both), scored on its first
    16 training scenes.

    The detector finds the objects it was trained on (AP at IoU 0.5 well above 0); the segmenter's
    pixel loss falls below the entropy of the classes' frequencies, the least loss of a model that
    does not look at the image.
    """
    from camscope.data.scenes import SpeciesScenes

    script = load_script("train_scene_models")
    data = {
        "generator": {"num_classes": 2, "size": 64, "seed": 0, "objects": [1, 2], "tile": 40, "distractors": 2},
        "train_seed": 1,
        "train_size": 32,
        "test_seed": 1,  # the first training scenes
        "test_size": 16,
    }
    train_set = SpeciesScenes(**data["generator"]).sample_split(32, 1)
    splits = (train_set, train_set[:16])
    tiny = {"architecture": {"widths": [8, 16, 16, 16], "channels": 16}, "data": data, "batch_size": 4}
    detector, metadata = script.train(
        "scenes-detector",
        {**script.RECIPES["scenes-detector"], **tiny, "epochs": 8, "lr": 1e-2},
        log=lambda _: None,
        splits=splits,
    )
    assert isinstance(detector, SceneDetector) and metadata["test"]["map50"] > 0.3, metadata["test"]
    assert len(metadata["training"]["log"]) == 8 + 2
    _, metadata = script.train(
        "scenes-segmenter",
        {**script.RECIPES["scenes-segmenter"], **tiny, "epochs": 4, "lr": 2e-2},
        log=lambda _: None,
        splits=splits,
    )
    frequencies = torch.bincount(train_set.semantic().flatten()).double()
    frequencies /= frequencies.sum()
    entropy = float(-(frequencies * frequencies.clamp(min=1e-12).log()).sum())
    assert metadata["training"]["losses"][-1] < 0.8 * entropy, (metadata["training"]["losses"], entropy)
