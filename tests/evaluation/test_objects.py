"""Objects one by one: each box's and region's map, and box pointing and mask IoU per object, against brute force."""

from __future__ import annotations

import math

import pytest
import torch

import camscope
from camscope.data.small_models import scene_data
from camscope.engine.objects import explain_objects, find_objects, model_task
from camscope.errors import CamscopeError
from camscope.evaluation.objects import evaluate_objects
from camscope.metrics.objects import box_pointing, mask_iou
from camscope.models.scene_zoo import load_scene_model


@pytest.fixture(scope="module")
def detector():
    return load_scene_model("scenes-detector")


@pytest.fixture(scope="module")
def segmenter():
    return load_scene_model("scenes-segmenter")


@pytest.fixture(scope="module")
def scenes():
    return scene_data("scenes-detector", "test", limit=3)


def _pointing(cam: torch.Tensor, box: list[float], mask: torch.Tensor) -> tuple[float, float]:
    """The peak (first in raster order) in the box's pixel centres, and on the mask, by loops."""
    best, where = -math.inf, (0, 0)
    for i, row in enumerate(cam.tolist()):
        for j, value in enumerate(row):
            if value > best:
                best, where = value, (i, j)
    i, j = where
    x0, y0, x1, y1 = box
    return float(x0 <= j + 0.5 <= x1 and y0 <= i + 0.5 <= y1), float(bool(mask[i, j]))


def _iou(cam: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> float:
    scaled = (cam - cam.min()) / (cam.max() - cam.min())
    above = scaled >= threshold
    return float((above & mask).sum()) / float((above | mask).sum())


def test_each_box_gets_the_map_of_its_own_box_target(detector, scenes):
    image = scenes.images[:1]
    found = explain_objects(detector, image, ["layercam"], score_threshold=0.5)
    assert found.task == "detect" and len(found) == int(scenes.counts[0])  # the shipped detector finds each object
    for m in range(len(found)):
        alone = camscope.explain(
            detector,
            image,
            method="layercam",
            layer="features",
            target=camscope.BoxTarget(found.labels[m : m + 1], found.boxes[m : m + 1]),
        )
        torch.testing.assert_close(found.maps["layercam"].maps[m], alone.maps[0], atol=1e-5, rtol=0)
    with torch.no_grad():
        detections = detector(image)[0]
    keep = detections["scores"] >= 0.5
    assert sorted(found.scores.tolist(), reverse=True) == pytest.approx(detections["scores"][keep][:4].tolist())


def test_each_region_is_the_class_prediction_with_its_mean_probability(segmenter, scenes):
    image = scenes.images[2:3]
    found = explain_objects(segmenter, image, ["gradcam"], score_threshold=0.0, max_objects=10)
    with torch.no_grad():
        logits = segmenter(image)["out"][0]
    predicted = logits.argmax(dim=0)
    probabilities = logits.softmax(dim=0)
    for m, label in enumerate(found.labels.tolist()):
        region = predicted == label
        assert torch.equal(found.regions[m], region) and label != 0
        assert float(found.scores[m]) == pytest.approx(float(probabilities[label][region].mean()), abs=1e-5)
        alone = camscope.explain(
            segmenter, image, layer="features", target=camscope.SegmentationTarget(label, mask=region.float())
        )
        torch.testing.assert_close(found.maps["gradcam"].maps[m], alone.maps[0], atol=1e-5, rtol=0)
    present = {int(v) for v in scenes.labels[2] if v > 0}
    assert present <= set(found.labels.tolist())  # every species in the scene has its region


def test_evaluate_objects_matches_brute_force_per_object(detector, scenes):
    report = evaluate_objects(detector, scenes, ["gradcam", "layercam"], batch_size=4)
    objects = int(scenes.counts.sum())
    assert len(report.samples) == objects and report.params["task"] == "detect"
    masks = scenes.object_masks()
    row = 0
    for i in range(len(scenes)):
        for k in range(int(scenes.counts[i])):
            box = scenes.boxes[i, k].float()
            for method in ("gradcam", "layercam"):
                cam = camscope.explain(
                    detector, scenes.images[i : i + 1], method=method, layer="features",
                    target=camscope.BoxTarget(scenes.labels[i, k : k + 1], box[None]),
                ).maps[0]  # fmt: skip
                hit, on_object = _pointing(cam, box.tolist(), masks[i, k])
                values = report.results[method]["box_pointing"].values
                assert float(values["hit"][row]) == hit and float(values["on_object"][row]) == on_object
                assert float(values["detected"][row]) == 1.0
                iou = float(report.results[method]["mask_iou"]["iou"][row])
                assert iou == pytest.approx(_iou(cam, masks[i, k]), abs=1e-4)
            row += 1
    layercam = report.results["layercam"]["box_pointing"].summary()["hit"]
    assert layercam > 0.8, "LayerCAM's peak lies in the box of almost every object"


def test_an_object_the_detector_misses_has_no_map_and_is_counted(detector, scenes):
    """A ground-truth box no detection overlaps (a small box in a corner) is not detected: NaN, and counted."""
    missed = scenes[:1]
    corner = [0, 0, 6, 6] if not bool(missed.instances[0, :6, :6].any()) else [90, 90, 96, 96]
    missed.boxes = missed.boxes.clone()
    missed.boxes[0, 0] = torch.tensor(corner)
    report = evaluate_objects(detector, missed, ["gradcam"])
    values = report.results["gradcam"]["box_pointing"].values
    assert float(values["detected"][0]) == 0.0 and math.isnan(float(values["hit"][0]))
    assert math.isnan(float(report.results["gradcam"]["mask_iou"]["iou"][0]))
    assert bool((values["detected"][1:] == 1).all())


def test_evaluate_objects_on_the_segmenter_writes_a_report(segmenter, scenes, tmp_path):
    report = evaluate_objects(segmenter, scenes[:1], ["gradcam"], out=tmp_path, model_name="camscope:scenes-segmenter")
    assert report.params["task"] == "segment" and "detected" not in report.results["gradcam"]["box_pointing"].values
    assert {p.name for p in tmp_path.iterdir()} >= {
        "summary.csv",
        "per_sample.csv",
        "results.json",
        "curves_mask_iou.png",
    }
    assert "objects" in report.heading() and report.samples[0].startswith("scene 0 object 0 (")


def test_bad_requests_are_one_clear_error(detector, scenes):
    empty = scenes[:1]
    empty.labels = torch.full_like(empty.labels, -1)
    with pytest.raises(CamscopeError, match="no objects"):
        evaluate_objects(detector, empty)
    with pytest.raises(CamscopeError, match="batch_size"):
        evaluate_objects(detector, scenes, batch_size=0)
    with pytest.raises(CamscopeError, match="not evaluated"):
        evaluate_objects(detector, scenes, ["gradcam"], method_options={"scorecam": {"batch_size": 2}})
    with pytest.raises(CamscopeError, match="images"):
        evaluate_objects(detector, scenes.images)
    with pytest.raises(CamscopeError, match="one image"):
        find_objects(detector, scenes.images[:2])
    with pytest.raises(CamscopeError, match="max_objects"):
        find_objects(detector, scenes.images[:1], max_objects=0)


def test_a_classifier_is_neither_a_detector_nor_a_segmenter():
    from torchvision.models import resnet18

    with pytest.raises(CamscopeError, match="detector"):
        model_task(resnet18(num_classes=3).eval(), torch.rand(1, 3, 32, 32))


def test_box_pointing_and_mask_iou_against_brute_force():
    generator = torch.Generator().manual_seed(4)
    maps = torch.rand(5, 12, 10, generator=generator)
    masks = torch.rand(5, 12, 10, generator=generator) > 0.6
    boxes = torch.tensor([[0, 0, 5, 5], [2, 3, 10, 12], [4, 4, 6, 6], [0, 0, 10, 12], [7, 0, 10, 3]])
    pointing = box_pointing(maps, boxes=boxes, masks=masks)
    overlap = mask_iou(maps, masks=masks, threshold=0.4, thresholds=(0.4, 0.8))
    for b in range(5):
        hit, on_object = _pointing(maps[b], boxes[b].float().tolist(), masks[b])
        assert (float(pointing["hit"][b]), float(pointing["on_object"][b])) == (hit, on_object)
        assert float(overlap["iou"][b]) == pytest.approx(_iou(maps[b], masks[b], 0.4), abs=1e-6)
    assert overlap.name == "mask_iou" and overlap.curves["iou"].shape == (5, 2)
    with pytest.raises(CamscopeError, match=r"\[B, 4\]"):
        box_pointing(maps, boxes=torch.zeros(5, 2))
