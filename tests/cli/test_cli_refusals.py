"""Flags a command cannot honour are refused with one line in the flags' words, before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import camscope.cli.analyze
import camscope.cli.bank
import camscope.cli.common
import camscope.cli.explain
import camscope.evaluation.runner
from camscope.cli.app import main
from camscope.viz.figures import save_image

RANDOM = ["--model", "timm:resnet10t", "--weights", "none", "--size", "32"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("refusals") / "data"
    for c in range(2):
        (root / str(c)).mkdir(parents=True)
        save_image(root / str(c) / "a.png", np.random.default_rng(c).random((16, 16, 3)))
    return root


@pytest.fixture
def no_model(monkeypatch):
    """Any model loading fails the test: the refusals come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the flags were checked")

    for module in (camscope.cli.analyze, camscope.cli.bank, camscope.cli.common, camscope.cli.explain):
        monkeypatch.setattr(module, "load_cli_model", refuse)
    monkeypatch.setattr(camscope.evaluation.runner, "evaluate", refuse)


def _refused(argv: list[str], capsys, *words: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("camscope: error: "), err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--method", "rollout"], ["--method rollout cannot be analysed", "attention", "gradcam, gradcam-elementwise"]),
        (["--method", "GradRollout"], ["--method gradrollout cannot be analysed", "shapleycam"]),
        (["--method", "legrad"], ["--method legrad cannot be analysed"]),
        (["--method", "eigencam"], ["--method eigencam cannot be analysed", "no channel weights"]),
        (["--method", "fullgrad"], ["--method fullgrad cannot be analysed"]),
        (["--method", "finer-gradcam"], ["--method finer-gradcam cannot be analysed", "comparison"]),
        (["--method", "diffcam"], ["--method diffcam cannot be analysed", "comparison"]),
        (["--explain", "label"], ["--explain must be predicted or true"]),
        (["--percentiles", "90,10"], ["--percentiles must be LOW,HIGH"]),
        (["--fraction", "0"], ["--fraction must be in (0, 1]"]),
        (["--batch-size", "0"], ["--batch-size must be a positive integer"]),
        (["--size", "0"], ["--size must be a positive integer"]),
        (["--cmap", "viridis"], ["--cmap viridis would change nothing"]),
        (["--weights", "default", "--seed", "3"], ["--seed seeds the random weights of --weights none"]),
        (["--precision", "fp64"], ["--precision must be one of fp32, bf16, fp16"]),
        (["--workers", "-1"], ["--workers must be 0"]),
        (["--checkpoint-every", "2"], ["--checkpoint-every needs a checkpoint file: add --checkpoint PATH"]),
        (["--resume"], ["--resume needs a checkpoint file"]),
        (["--compare", "missing-folder"], ["--compare missing-folder: no such folder"]),
    ],
)
def test_analyze_refuses_what_it_cannot_honour(folder, tmp_path, capsys, no_model, extra, words):
    out = tmp_path / "out"
    _refused(["analyze", "--data", str(folder), "--out", str(out), *RANDOM, *extra], capsys, *words)
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--embedding", "token"], ["--embedding must be mean (spatial mean) or cls"]),
        (["--scatter", "full"], ["--scatter must be auto, class or shared"]),
        (["--size", "0"], ["--size must be a positive integer"]),  # was blamed on the first image, with --skip-bad
        (["--weights", "default", "--seed", "4"], ["--seed seeds the random weights"]),
        (["--precision", "half"], ["--precision must be one of"]),
    ],
)
def test_bank_build_refuses_what_it_cannot_honour(folder, tmp_path, capsys, no_model, extra, words):
    out = tmp_path / "refs.bank"
    _refused(["bank", "build", "--data", str(folder), "--out", str(out), *RANDOM, *extra], capsys, *words)
    assert not out.exists()


@pytest.mark.parametrize(
    "data, extra, words",
    [
        ("folder", ["--cmap", "viridis"], ["camscope evaluate draws no [0, 1] maps", "drop --cmap"]),
        (
            "folder",
            ["--no-plots", "--dpi", "300"],
            ["--format and --dpi style the curves, which --no-plots leaves out"],
        ),
        ("folder", ["--limit", "0"], ["--limit must be a positive integer, got 0"]),
        ("folder", ["--metric-option", "deletion.stpe=8"], ["metric 'deletion' has no option 'stpe'", "step"]),
        ("folder", ["--weights", "default", "--seed", "2"], ["--seed seeds the random weights"]),
        ("scenes", ["--size", "50"], ["--data camscope:scenes", "drop --size"]),
        ("scenes", ["--target", "3", "--skip-bad"], ["drop --target, --skip-bad"]),
        ("scenes", ["--metric-option", "box_pointing.x=1"], ["drop --metric-option"]),
        ("scenes", ["--checkpoint-every", "3"], ["drop --checkpoint-every"]),
    ],
)
def test_evaluate_refuses_what_it_cannot_honour(folder, tmp_path, capsys, no_model, data, extra, words):
    given = str(folder) if data == "folder" else "camscope:scenes"
    model = RANDOM if data == "folder" else ["--model", "camscope:scenes-detector"]
    out = tmp_path / "out"
    _refused(["evaluate", "--data", given, "--out", str(out), *model, *extra], capsys, *words)
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--score-threshold", "1.5"], ["--score-threshold must be in [0, 1]"]),  # found nothing, without a word
        (["--score-threshold", "-1"], ["--score-threshold must be in [0, 1]"]),
        (["--objects", "0"], ["--objects must be 1 or more"]),
        (["--seed", "3"], ["--seed seeds the random weights of --weights none; with --weights default"]),
    ],
)
def test_explain_objects_refuses_what_it_cannot_honour(folder, tmp_path, capsys, no_model, extra, words):
    image = folder / "0" / "a.png"
    argv = ["explain", str(image), "--model", "camscope:scenes-detector", "--task", "detect", "--out", str(tmp_path)]
    _refused([*argv, *extra], capsys, *words)
