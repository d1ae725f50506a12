"""Output files: names that say what they hold, unique within a run, never replaced without --overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from camscope.cli.app import main
from camscope.cli.explain import explain_output_stems
from camscope.cli.outputs import claim_outputs, input_labels, output_name
from camscope.errors import CamscopeError
from camscope.viz.figures import save_image

# A small random model keeps the runs fast.
FAST = ["--model", "torchvision:resnet18", "--weights", "none", "--size", "32"]


def _picture(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(path, np.random.default_rng(seed).random((40, 40, 3)))
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_input_labels_tell_same_named_inputs_apart_and_keep_the_suffix():
    assert input_labels([Path("test/tabby/0.jpg"), Path("test/espresso/0.jpg")]) == ["tabby__0.jpg", "espresso__0.jpg"]
    assert input_labels([Path("x/gray.png"), Path("x/gray.jpg")]) == ["gray.png", "gray.jpg"]
    assert input_labels([Path("a/b/c.png"), Path("d/b/c.png")]) == ["a__b__c.png", "d__b__c.png"]
    with pytest.raises(CamscopeError, match="given twice"):
        input_labels([Path("x/gray.png"), Path("x/../x/gray.png")])


def test_every_option_that_changes_the_maps_changes_the_name():
    image = [Path("img.jpg")]
    variants = [
        dict(methods=["gradcam"]),
        dict(methods=["gradcam"], target="tabby"),
        dict(methods=["gradcam"], layer=["layer3"]),
        dict(methods=["gradcam"], weights="none"),
        dict(methods=["gradcam"], model="torchvision:resnet18"),
        dict(methods=["gradcam"], size=320),
        dict(methods=["gradcam"], scale=Path("ifa/analysis.safetensors")),
        dict(methods=["gradcam"], scale=Path("ifa/analysis.safetensors"), principal=0.05),
        dict(methods=["gradcam", "layercam"]),
        dict(methods=["finer-gradcam"]),
        dict(methods=["finer-gradcam"], versus=["tabby"]),
        dict(methods=["finer-gradcam"], versus=["tabby"], gamma=1.0),
        dict(methods=["finer-gradcam"], references=2),
        *(
            dict(methods=["diffcam"], bank=Path("bank.safetensors"), reference=spec)
            for spec in ("others", "class:tabby", "knn:2", "intra", "all", "folder:photos/things")
        ),
        dict(methods=["diffcam"], bank=Path("bank.safetensors"), regularization="0.1"),
    ]
    stems = [explain_output_stems(image, options.pop("methods"), **options)[0] for options in variants]
    assert len(set(stems)) == len(stems), stems
    assert stems[0] == "img.jpg__gradcam"
    assert "img.jpg__finer-gradcam__vs-tabby__gamma-1" in stems
    assert "img.jpg__gradcam__scaled-analysis__principal-0.05" in stems
    assert "img.jpg__diffcam__bank-bank__ref-class-tabby" in stems


def test_long_values_are_shortened_with_a_hash_so_they_stay_distinct():
    first = output_name("a.png", "prompts", [("prompts", "x" * 80 + "1")])
    second = output_name("a.png", "prompts", [("prompts", "x" * 80 + "2")])
    assert first != second and len(first) < 120


def test_claim_outputs_refuses_duplicates_and_existing_files(tmp_path):
    (tmp_path / "old.png").write_bytes(b"old")
    with pytest.raises(CamscopeError, match="both be written"):
        claim_outputs([tmp_path / "a.png", tmp_path / "." / "a.png"], overwrite=True)
    with pytest.raises(CamscopeError, match="--overwrite"):
        claim_outputs([tmp_path / "new.png", tmp_path / "old.png"], overwrite=False)
    assert claim_outputs([tmp_path / "old.png"], overwrite=True) == [tmp_path / "old.png"]
    with pytest.raises(CamscopeError, match="is a file, not a folder"):
        claim_outputs([tmp_path / "old.png" / "new.png"], overwrite=True)
    with pytest.raises(CamscopeError, match="is a folder"):
        claim_outputs([tmp_path], overwrite=True)


def test_explain_same_named_inputs_write_two_files_and_a_rerun_needs_overwrite(tmp_path, capsys):
    tabby = _picture(tmp_path / "test" / "tabby" / "0.jpg", 0)
    espresso = _picture(tmp_path / "test" / "espresso" / "0.jpg", 1)
    out = tmp_path / "ex"
    argv = ["explain", str(tabby), str(espresso), *FAST, "--out", str(out), "--json"]
    assert main(argv) == 0
    files = [f for entry in json.loads(capsys.readouterr().out) for f in entry["files"]]
    names = sorted(Path(f).name for f in files)
    suffix = "__gradcam__model-torchvision-resnet18__random-weights__size-32.png"
    assert names == sorted([f"espresso__0.jpg{suffix}", f"tabby__0.jpg{suffix}"])
    before = _snapshot(out)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert _snapshot(out) == before
    assert main([*argv, "--overwrite"]) == 0


def test_explain_checks_every_output_before_writing_any(tmp_path, capsys):
    gray_png = _picture(tmp_path / "gray.png", 0)
    gray_jpg = _picture(tmp_path / "gray.jpg", 1)
    out = tmp_path / "ex"
    stems = explain_output_stems([gray_png, gray_jpg], ["gradcam"], model=FAST[1], weights="none", size=32)
    assert stems[0] != stems[1]
    out.mkdir()
    (out / f"{stems[1]}.png").write_bytes(b"keep")
    argv = ["explain", str(gray_png), str(gray_jpg), *FAST, "--out", str(out)]
    assert main(argv) == 2
    assert sorted(p.name for p in out.iterdir()) == [f"{stems[1]}.png"]
    assert (out / f"{stems[1]}.png").read_bytes() == b"keep"
    assert main([*argv, "--save", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}{x}" for s in stems for x in (".png", ".safetensors"))
    capsys.readouterr()


def test_explain_rejects_the_same_image_twice(tmp_path, capsys):
    image = _picture(tmp_path / "a.png", 0)
    assert main(["explain", str(image), str(image), *FAST, "--out", str(tmp_path / "ex")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert not (tmp_path / "ex").exists()


@pytest.mark.parametrize(
    "command, existing",
    [
        (["analyze", "--data", "{data}", "--out", "{out}", *FAST], "report.md"),
        (["evaluate", "--data", "{data}", "--out", "{out}", *FAST], "summary.csv"),
        (["bank", "build", "--data", "{data}", "--out", "{out}/bank.safetensors"], "bank.safetensors"),
        (
            ["similarity", "--model", "torchvision:resnet18", "--weights", "none", "--out", "{out}/curve.png"],
            "curve.png",
        ),
        (["reproduce", "--quick", "--out", "{out}", "--section", "finer"], "REPRODUCTION.md"),
        (["demo", "--out", "{out}"], "overview__cam+gradcam+gradcampp+xgradcam+layercam+hirescam+smoothgradcampp.png"),
    ],
)
def test_every_writing_command_refuses_to_replace_a_file(command, existing, tmp_path, capsys):
    data = tmp_path / "data"
    _picture(data / "0" / "a.png", 0)
    out = tmp_path / "out"
    out.mkdir()
    (out / existing).write_bytes(b"keep")
    argv = [a.replace("{data}", str(data)).replace("{out}", str(out)) for a in command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--overwrite" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert _snapshot(out) == {existing: b"keep"}


def test_similarity_default_output_names_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["similarity", "--model", "torchvision:resnet18", "--weights", "none", "--json"]) == 0
    curve = json.loads(capsys.readouterr().out)["curve"]
    assert Path(curve) == Path("camscope-out/similarity/similarity__torchvision-resnet18__random-weights.png")
    assert main(["similarity", "--model", "torchvision:resnet18", "--weights", "none"]) == 2
