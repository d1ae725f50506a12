"""Hostile inputs of explain --task detect|segment and evaluate --data camscope:scenes: one line, status 2, or right."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import camscope.cli.common
import camscope.cli.objects
from camscope.cli.app import main
from camscope.data.small_models import scene_data
from camscope.viz.figures import save_image

DETECTOR = ["--model", "camscope:scenes-detector", "--task", "detect"]
SEGMENTER = ["--model", "camscope:scenes-segmenter", "--task", "segment"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A test scene as RGB PNG, as 16-bit (I;16) and 8-bit grey PNGs of the same values, truncated; a plain file."""
    folder = tmp_path_factory.mktemp("hostile")
    image = scene_data("scenes-detector", "test", limit=1).images[0]
    rgb = save_image(folder / "scene.png", image.permute(1, 2, 0).numpy())
    grey = image.mean(dim=0).numpy()
    Image.fromarray(np.rint(grey * 65535).astype(np.uint16)).save(folder / "grey16.png")
    Image.fromarray(np.rint(grey * 255).astype(np.uint8)).save(folder / "grey8.png")
    data = Path(rgb).read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "plain-file").write_text("not a folder")
    (folder / "empty").mkdir()
    return {path.name: path for path in folder.iterdir()}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("camscope: error: "), err
    return err


def _refuse(*args, **kwargs):
    raise AssertionError("work began before --out was checked")


@pytest.mark.parametrize("command", ["detect", "segment", "evaluate"])
@pytest.mark.parametrize("where", ["a file", "under a file", "unwritable"])
def test_an_out_that_cannot_be_written_is_one_line_before_any_map(files, capsys, monkeypatch, command, where):
    if where == "unwritable" and not (sys.platform.startswith("linux") and Path("/proc/self").is_dir()):
        pytest.skip("/proc, which refuses new files even to root, is Linux's")
    out = {
        "a file": files["plain-file"],
        "under a file": files["plain-file"] / "maps",
        "unwritable": Path("/proc/camscope-test-out/maps"),
    }[where]
    monkeypatch.setattr(camscope.cli.objects, "explain_objects", _refuse)  # no map is drawn
    monkeypatch.setattr(camscope.cli.common, "load_cli_model", _refuse)  # evaluate checks before loading the model
    if command == "evaluate":
        argv = ["evaluate", "--data", "camscope:scenes", "--model", "camscope:scenes-detector", "--limit", "1"]
    else:
        argv = ["explain", str(files["scene.png"]), *(DETECTOR if command == "detect" else SEGMENTER)]
    assert main([*argv, "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert "--out" in err and (str(files["plain-file"]) in err or "cannot write into /proc" in err), err
    assert files["plain-file"].read_text() == "not a folder"


@pytest.mark.parametrize("task", [DETECTOR, SEGMENTER])
def test_a_16_bit_png_gives_the_objects_of_its_8_bit_copy(files, tmp_path, capsys, task):
    assert Image.open(files["grey16.png"]).mode == "I;16"
    found = []
    for name in ("grey16.png", "grey8.png"):
        assert main(["explain", str(files[name]), *task, "--out", str(tmp_path), "--json"]) == 0
        found.append(json.loads(capsys.readouterr().out)[0]["objects"])
    assert found[0] and found[0] == found[1]  # scaled to 0..255, not clipped to a white image that holds nothing


def test_an_empty_folder_is_one_line(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(camscope.cli.common, "load_cli_model", _refuse)
    assert main(["explain", str(files["empty"]), *DETECTOR, "--out", str(tmp_path)]) == 2
    assert f"{files['empty']} is a folder with no images" in _one_line(capsys)


def test_a_truncated_image_is_named_and_skip_bad_leaves_it_out(files, tmp_path, capsys):
    truncated, good = str(files["truncated.png"]), str(files["scene.png"])
    assert main(["explain", truncated, *DETECTOR, "--out", str(tmp_path)]) == 2
    assert f"Could not read '{truncated}'" in _one_line(capsys)
    assert main(["explain", truncated, good, *SEGMENTER, "--out", str(tmp_path)]) == 2
    assert truncated in (err := _one_line(capsys)) and "--skip-bad" in err
    assert main(["explain", truncated, good, *SEGMENTER, "--out", str(tmp_path), "--skip-bad", "--json"]) == 0
    captured = capsys.readouterr()
    assert [entry["image"] for entry in json.loads(captured.out)] == [good]
    assert "skipped 1 of 2 images" in captured.err and truncated in captured.err
    assert [path.name for path in tmp_path.iterdir()] == [Path(json.loads(captured.out)[0]["file"]).name]


@pytest.mark.parametrize("task", [DETECTOR, SEGMENTER])
def test_a_size_the_scene_models_cannot_take_names_the_flag_before_loading(files, capsys, monkeypatch, tmp_path, task):
    import camscope.cli.explain

    monkeypatch.setattr(camscope.cli.explain, "load_cli_model", _refuse)
    code = main(["explain", str(files["scene.png"]), *task, "--size", "100", "--out", str(tmp_path)])
    assert code == 2
    err = _one_line(capsys)
    assert "--size 100" in err and "multiples of 16" in err and "--size 96 or 112" in err
    assert not any(tmp_path.iterdir())
