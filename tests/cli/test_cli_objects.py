"""The command line on detectors and segmenters: explain draws each box or region with its map; evaluate per object."""

from __future__ import annotations

import json

import pytest
import torch

from camscope.cli.app import main
from camscope.data.small_models import scene_data
from camscope.models.scene_zoo import scene_model_info
from camscope.viz.figures import save_image


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    """The first two test scenes as PNG files, and their ground truth."""
    folder = tmp_path_factory.mktemp("scenes")
    scenes = scene_data("scenes-detector", "test", limit=2)
    paths = []
    for i in range(2):
        paths.append(save_image(folder / f"scene{i}.png", scenes.images[i].permute(1, 2, 0).numpy()))
    return paths, scenes


def _iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def test_explain_finds_the_boxes_of_a_detector_and_draws_one_map_each(scene_files, tmp_path, capsys):
    paths, scenes = scene_files
    code = main(["explain", str(paths[0]), "--model", "camscope:scenes-detector", "--method", "layercam",
                 "--out", str(tmp_path), "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    entry = report[0]
    assert entry["task"] == "detect" and entry["methods"] == ["layercam"]
    labels, boxes = scenes.objects(0)
    assert len(entry["objects"]) == len(labels)  # every object, none more (scores of at least 0.5)
    for item in entry["objects"]:
        best = max(range(len(labels)), key=lambda k: _iou(item["box"], boxes[k].tolist()))
        assert _iou(item["box"], boxes[best].tolist()) > 0.7 and item["class"] == int(labels[best])
        assert item["name"] != f"class {item['class']}" and item["score"] >= 0.5
    assert entry["file"].endswith("scene0.png__layercam__model-camscope-scenes-detector.png")
    assert (tmp_path / "scene0.png__layercam__model-camscope-scenes-detector.png").is_file()


def test_explain_a_segmenter_region_of_one_named_class(scene_files, tmp_path, capsys):
    paths, scenes = scene_files
    name = scene_model_info("scenes-segmenter")["class_names"][int(scenes.labels[1, 0])]
    code = main(["explain", str(paths[1]), "--model", "camscope:scenes-segmenter", "--task", "segment",
                 "--target", name, "--objects", "2", "--out", str(tmp_path), "--json"])  # fmt: skip
    assert code == 0
    entry = json.loads(capsys.readouterr().out)[0]
    assert entry["task"] == "segment" and [item["name"] for item in entry["objects"]] == [name]
    assert (tmp_path / "scene1.png__gradcam__model-camscope-scenes-segmenter__target-{}__objects-2.png".format(
        name.replace(" ", "-"))).is_file()  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "segment"], "needs logits per pixel"),
        (["--task", "guess"], "--task must be one of"),
        (["--method", "finer-gradcam"], "camscope.OnBox"),
        (["--save"], "does not take --save"),
        (["--target", "penguin"], "--target 'penguin' names no class"),
    ],
)
def test_explain_object_mistakes_are_one_line(scene_files, tmp_path, capsys, extra, message):
    paths, _ = scene_files
    code = main(["explain", str(paths[0]), "--model", "camscope:scenes-detector", "--out", str(tmp_path), *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_evaluate_the_shipped_scenes_per_object(tmp_path, capsys):
    code = main(["evaluate", "--model", "camscope:scenes-detector", "--data", "camscope:scenes", "--limit", "1",
                 "--method", "layercam", "--out", str(tmp_path), "--json", "--no-plots"])  # fmt: skip
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    found = {(row["metric"], row["value"]): row for row in rows}
    objects = int(scene_data("scenes-detector", "test", limit=1).counts[0])
    assert found[("box_pointing", "detected")]["mean"] == 1.0 and found[("box_pointing", "hit")]["n"] == objects
    assert 0.0 < found[("mask_iou", "iou")]["mean"] <= 1.0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["params"]["objects"] == objects and saved["model"] == "camscope:scenes-detector"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "camscope:scenes", "--metric", "deletion"], "deletion work on image folders"),
        (["--data", "camscope:imagenet"], "--data takes an image folder or camscope:scenes"),
        (["--data", "camscope:scenes", "--workers", "2"], "drop --workers"),
    ],
)
def test_evaluate_scene_mistakes_are_one_line(tmp_path, capsys, extra, message):
    code = main(["evaluate", "--model", "camscope:scenes-detector", "--out", str(tmp_path), *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_a_classifier_without_task_options_is_unchanged(tmp_path, capsys):
    """--score-threshold means nothing to a classifier: refused, before any map is drawn."""
    image = tmp_path / "noise.png"
    save_image(image, torch.rand(40, 40, 3).numpy())
    code = main(["explain", str(image), "--model", "camscope:scenes-detector", "--task", "classify",
                 "--score-threshold", "0.2", "--out", str(tmp_path)])  # fmt: skip
    assert code == 2 and "--task detect|segment" in capsys.readouterr().err
