"""The command line: outputs, files, and one clear line for user mistakes."""

from __future__ import annotations

import json

import pytest

import camscope
from camscope.cli.app import main
from camscope.models import sample_images
from camscope.viz.figures import save_image


@pytest.fixture(scope="module")
def chelsea_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "chelsea.png"
    save_image(path, sample_images()["chelsea"] / 255.0)
    return path


@pytest.mark.slow
def test_explain_prints_predictions_and_writes_json_overlays_and_maps(chelsea_file, tmp_path, capsys):
    code = main(
        [
            "explain",
            str(chelsea_file),
            "--method",
            "gradcam",
            "--method",
            "layercam",
            "--out",
            str(tmp_path),
            "--json",
            "--save",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    names = [p["name"] for p in report[0]["predictions"][:3]]
    assert {"tabby", "tiger cat", "Egyptian cat"} & set(names)
    assert report[0]["explained_class"] == report[0]["predictions"][0]["class"]
    assert (tmp_path / "chelsea.png__gradcam+layercam.png").is_file()
    gradcam = camscope.Explanation.load(tmp_path / "chelsea.png__gradcam.safetensors")
    layercam = camscope.Explanation.load(tmp_path / "chelsea.png__layercam.safetensors")
    assert gradcam.raw.shape == (1, 7, 7) and layercam.maps.shape == (1, 224, 224)
    assert gradcam.options["model"] == "efficientnet_lite0" and gradcam.classes.tolist() == [
        report[0]["explained_class"]
    ]


@pytest.mark.slow
def test_explain_with_a_class_name(chelsea_file, tmp_path, capsys):
    assert main(["explain", str(chelsea_file), "--target", "tabby", "--out", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["explained_class"] == 281
    assert (tmp_path / "chelsea.png__gradcam__target-tabby.png").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["explain", "missing.png"], "no such image file"),
        (["explain", "{img}", "--layer", "blocks.99"], "unknown layer 'blocks.99'"),
        (["explain", "{img}", "--method", "nope"], "unknown method 'nope'"),
        (["explain", "{img}", "--target", "1000"], "out of range"),
        (["explain", "{img}", "--model", "resnet"], "Unknown model"),
        (["explain", "{img}", "--bogus"], "No such option"),
    ],
)
def test_user_mistakes_give_one_line_and_status_2(argv, message, chelsea_file, capsys):
    argv = [a.replace("{img}", str(chelsea_file)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_methods_details_read_the_option_declarations(capsys):
    from camscope.engine.method import describe_options

    assert main(["methods", "sscam", "--details"]) == 0
    out = capsys.readouterr().out
    for option in describe_options("sscam"):
        assert f"    {option.name}" in out
        assert f"default {option.default!r}" in out
    assert "one of 'softmax', 'difference', 'probability'" in out
    assert main(["methods", "nope"]) == 2


def test_methods_and_layers(capsys):
    assert main(["methods"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert {"cam", "gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "smoothgradcampp"} <= listed
    assert {"fullgrad", "guided-gradcam", "sess", "dff"} <= listed
    assert main(["layers", "torchvision:resnet18", "--size", "64"]) == 0
    assert "layer4                                   [1, 512, 2, 2]  (default)" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_writes_a_figure_per_photo_and_an_overview(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    files = sorted(p.name for p in tmp_path.glob("*.png"))
    methods = "cam+gradcam+gradcampp+xgradcam+layercam+hirescam+smoothgradcampp"
    photos = ["astronaut", "chelsea", "coffee", "grace_hopper", "motorcycle", "rocket"]
    expected = [f"{name}.png__{methods}.png" for name in photos] + [f"overview__{methods}.png", "overview.png"]
    expected += [f"{name}.png__compare.png" for name in photos] + ["pairs.png"]
    assert files == sorted(expected)
    numbers = json.loads((tmp_path / "comparisons.json").read_text())
    chelsea = numbers["photos"]["chelsea"]
    assert chelsea["predicted"].startswith("tiger cat") and chelsea["runner_up"].startswith("Egyptian cat")
    for key in ("finer", "why", "why_not", "diffcam"):  # every comparison moved some of the map's mass
        assert 0 < chelsea[key]["moved"] < 1, (key, chelsea)
    assert chelsea["diffcam"]["removed"] is None and 0 < chelsea["finer"]["removed"] < 1
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == sorted(
        ["astronaut.png", "chelsea.png", "coffee.png", "grace_hopper.png", "motorcycle.png", "rocket.png"]
    )
    assert str(tmp_path.resolve()) in capsys.readouterr().out


def test_version_and_short_help(capsys):
    assert main(["--version"]) == 0
    from camscope import __version__

    assert capsys.readouterr().out.strip() == f"camscope {__version__}"
    for argv in (["-h"], ["explain", "-h"], ["bank", "build", "-h"]):
        assert main(argv) == 0
        assert "Usage: " in capsys.readouterr().out
