"""What a new user hits first: devices, weights files, unreadable images, layer lists, help, DiffCAM's groups,
empty counterfactual maps and metrics without ground truth; each answered in the command line's words."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import camscope
from camscope.cli.app import main
from camscope.viz.figures import save_image

FAST = ["--model", "torchvision:resnet18", "--weights", "none", "--size", "32"]
pytestmark = pytest.mark.usefixtures("one_thread")


def _picture(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(path, np.random.default_rng(seed).random((40, 40, 3)))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three classes of three random pictures (class folders named by ImageNet classes)."""
    root = tmp_path_factory.mktemp("new-user") / "data"
    for c, name in enumerate(["tabby", "lynx", "espresso"]):
        for i in range(3):
            _picture(root / name / f"{i}.png", 10 * c + i)
    return root


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_every_device_string_in_every_command_is_one_line_and_status_2(folder, tmp_path, capsys):
    image = str(folder / "tabby" / "0.png")
    out = tmp_path / "out"
    commands = [
        ["layers", "--model", "torchvision:resnet18"],
        ["explain", image, "--out", str(out)],
        ["bank", "build", "--data", str(folder), "--out", str(out / "b.bank")],
        ["bank", "counterfactual", image, "--bank", str(out / "none.bank"), "--versus", "lynx", "--out", str(out)],
        ["analyze", "--data", str(folder), "--out", str(out)],
        ["evaluate", "--data", str(folder), "--out", str(out)],
        ["prompts", image, "--prompt", "a cat", "--out", str(out)],
        ["serve"],
    ]
    expected = {
        "cuda": "no CUDA GPU is visible here" if torch.version.cuda else "built without CUDA",
        "cuda:7": "no CUDA GPU is visible here" if torch.version.cuda else "built without CUDA",
        "mps": "MPS is not available",
        "tpu": "is not a device",
        "garbage": "is not a device",
    }
    if torch.cuda.is_available():  # a GPU here: only the strings that are wrong on every machine
        expected = {"cuda:99": "choose one of them", "tpu": "is not a device", "garbage": "is not a device"}
    for argv in commands:
        for device, message in expected.items():
            assert main([*argv, "--device", device]) == 2, (argv, device)
            err = _one_line(capsys)
            assert f"--device {device}" in err and message in err, (argv, err)
            assert "device=" not in err  # the CLI's words, not the API's
    assert not out.exists()  # nothing was written


def test_a_weights_file_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys):
    from PIL import Image

    jpeg = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(jpeg)
    (tmp_path / "pop.pt").write_bytes(b"0")  # the unpickler's stack underflows: "pop from empty list"
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("a text file named .jpg\n")
    for name in ("photo.jpg", "pop.pt", "empty.pt", "notes.jpg"):
        reason = "is not a state dict camscope can read safely"
        assert main(["layers", "--model", "torchvision:resnet18", "--weights", str(tmp_path / name)]) == 2
        err = _one_line(capsys)
        assert reason in err and str(tmp_path / name) in err and "IndexError" not in err, err


def _with_a_bad_file(folder: Path, tmp_path: Path) -> Path:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(folder, data)
    (data / "lynx" / "broken.jpg").write_text("not an image\n")
    return data


def test_one_unreadable_image_stops_a_folder_with_its_name_unless_skip_bad(folder, tmp_path, capsys):
    data = _with_a_bad_file(folder, tmp_path)
    bad = str(data / "lynx" / "broken.jpg")
    commands = {
        "explain": ["explain", str(data), *FAST, "--out", str(tmp_path / "ex"), "--json"],
        "bank build": ["bank", "build", "--data", str(data), *FAST, "--workers", "1"]  # read in a loader worker
        + ["--out", str(tmp_path / "b.bank"), "--json"],
        "analyze": ["analyze", "--data", str(data), *FAST, "--no-consistency", "--out", str(tmp_path / "an")]
        + ["--json"],
        "evaluate": ["evaluate", "--data", str(data), *FAST, "--metric", "sparseness", "--no-plots"]
        + ["--out", str(tmp_path / "ev"), "--json"],
    }
    for what, argv in commands.items():
        assert main(argv) == 2, what
        err = _one_line(capsys)
        assert bad in err and "--skip-bad" in err, (what, err)
    for what, argv in commands.items():
        assert main([*argv, "--skip-bad"]) == 0, what
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert any(line.startswith("camscope: skipped") and bad in line for line in lines), (what, lines)
        assert "camscope: skipped 1 of 10 images that cannot be read (--skip-bad)" in lines, (what, lines)
        assert bad not in captured.out, what  # the skipped file is in no result
    assert camscope.ReferenceBank.load(tmp_path / "b.bank").count == 9  # the readable images


def test_layers_hides_no_ops_and_repeated_names_and_all_lists_them(capsys):
    from torchvision.models import resnet18

    from camscope.engine.capture import candidate_layers

    assert main(["layers", "--size", "64"]) == 0  # efficientnet_lite0, random weights: 262 names with --all
    lines = capsys.readouterr().out.splitlines()
    shown = [line.split()[0] for line in lines]
    assert len(shown) < 120 and "bn2" in shown and lines[shown.index("bn2")].endswith("(default)")
    assert not any(name.endswith((".drop", ".act", ".aa", ".se", ".drop_path")) for name in shown)
    assert {"conv_stem", "bn1", "blocks.0", "blocks.5", "conv_head"} <= set(shown) and "blocks.0.0" not in shown
    assert main(["layers", "--all", *FAST]) == 0
    everything = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    # resnet18: layer1.0.bn2's output is changed in place (+= identity, ReLU) before layer1.0 returns it, so it
    # is a map of its own and stays; layer1.0.relu's is layer1.0's, unchanged: the same map, listed with --all only
    names = [name for name, _ in candidate_layers(resnet18(), torch.zeros(1, 3, 64, 64), all_layers=False)]
    assert {"layer1.0.bn2", "layer1.0", "relu", "layer4"} <= set(names) and "layer1.0.relu" not in names
    assert "layer1.0.relu" in everything and set(names) < set(everything)


def test_help_states_defaults_fits_80_columns_and_shows_no_bool(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    for argv in (["explain", "-h"], ["bank", "build", "-h"], ["evaluate", "-h"], ["layers", "-h"]):
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert "<bool>" not in text and "…" not in text, argv
        assert all(len(line) <= 80 for line in text.splitlines()), argv
    assert main(["explain", "-h"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Method (default: gradcam)" in text and "Existing files are never replaced without --overwrite" in text
    assert "--skip-bad" in text


def test_diffcam_folder_reference_leaves_out_the_explained_image_and_its_map_is_that_of_the_others(
    folder, tmp_path, capsys
):
    from camscope.models import data_config, load_image

    image = folder / "tabby" / "0.png"
    argv = ["explain", str(image), *FAST, "--method", "diffcam", "--reference", f"folder:{folder}"]
    assert main([*argv, "--save", "--out", str(tmp_path), "--json"]) == 0
    entry = json.loads(capsys.readouterr().out)[0]
    assert entry["diffcam.group"] == f"folder {folder}: 8 images (the explained image left out)"
    saved = camscope.Explanation.load(next(f for f in entry["files"] if f.endswith(".safetensors")))
    assert "__refs-8" in entry["files"][0]
    config = data_config("torchvision:resnet18")
    others = sorted(p for p in folder.rglob("*.png") if p != image)
    reference = torch.cat([load_image(p, size=32, config=config)[0] for p in others])
    torch.manual_seed(0)
    from torchvision.models import resnet18

    model = resnet18().eval()
    expected = camscope.explain(
        model, load_image(image, size=32, config=config)[0], method="diffcam", reference=reference
    )
    torch.testing.assert_close(saved.raw, expected.raw, rtol=1e-4, atol=1e-5)


def test_diffcam_without_a_group_or_bank_says_how_in_flags(folder, tmp_path, capsys):
    image = str(folder / "tabby" / "0.png")
    argv = ["explain", image, *FAST, "--method", "diffcam", "--out", str(tmp_path)]
    for extra, message in [
        ([], "give --reference folder:PATH"),
        (["--reference", "others"], "--reference others is a group of a reference bank: give --bank FILE"),
        (["--reference", "nearby"], "unknown --reference 'nearby': use folder:PATH"),
        (["--reference", "folder:"], "--reference folder:PATH needs the folder"),
    ]:
        assert main([*argv, *extra]) == 2
        err = _one_line(capsys)
        assert message in err and "bank.group" not in err and "TENSOR" not in err, err


def test_diffcam_with_a_bank_counts_in_words_and_prints_the_top5(folder, tmp_path, capsys):
    two = tmp_path / "two"
    for name in ("tabby", "lynx"):
        for i in range(3):
            _picture(two / name / f"{i}.png", 40 + i + (3 if name == "lynx" else 0))
    bank = tmp_path / "two.bank"
    assert main(["bank", "build", "--data", str(two), *FAST, "--out", str(bank)]) == 0
    capsys.readouterr()
    argv = ["explain", str(two / "tabby" / "0.png"), "--method", "diffcam", "--bank", str(bank)]
    assert main([*argv, "--reference", "others", "--target", "tabby", "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "DiffCAM: bank class tabby vs others than tabby: 3 images of 1 class\n" in text
    assert text.count("%") == 5


def test_counterfactual_says_when_a_map_is_empty_and_draws_its_signed_raw_map(folder, tmp_path, capsys):
    from PIL import Image
    from torchvision.models import resnet18

    from camscope.analyses.counterfactual import counterfactual
    from camscope.models import data_config, load_image

    bank = tmp_path / "b.bank"
    assert main(["bank", "build", "--data", str(folder), *FAST, "--out", str(bank)]) == 0
    capsys.readouterr()
    loaded = camscope.ReferenceBank.load(bank)
    torch.manual_seed(0)  # the model of --weights none --seed 0
    model = resnet18().eval()
    config = data_config("torchvision:resnet18")
    images = sorted((folder / "tabby").glob("*.png"))
    x = torch.cat([load_image(path, size=32, config=config)[0] for path in images])
    pairs = {
        versus: counterfactual(model, x, loaded, versus=versus, explained="tabby") for versus in ("lynx", "espresso")
    }
    versus, pair = next(((d, p) for d, p in pairs.items() if bool(p.why_empty.any())), (None, None))
    assert pair is not None  # the setup has an empty map (else this test would check nothing)
    index = int(pair.why_empty.nonzero()[0])
    argv = ["bank", "counterfactual", str(images[index]), "--bank", str(bank), "--versus", versus]
    assert main([*argv, "--explained", "tabby", "--out", str(tmp_path / "out"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["why_empty"] is True and report["counterpart_empty"] == bool(pair.counterpart_empty[index])
    cells = pair.why.raw[index].numel()
    assert f"the raw map is negative in {cells} of {cells} cells" in report["why_note"]
    figure = np.asarray(Image.open(report["why"]).convert("RGB"), dtype=float)
    assert figure.std() > 10  # the signed raw map over the photo, not a flat tint
    assert main([*argv, "--explained", "tabby", "--out", str(tmp_path / "out"), "--overwrite"]) == 0
    text = capsys.readouterr().out
    assert f"why tabby, not {versus} (reference group: bank class {versus}, 3 images): EMPTY map: the raw map" in text


def test_evaluate_localisation_without_sidecars_says_so_and_draws_no_empty_plot(folder, tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["evaluate", "--data", str(folder), *FAST, "--limit", "3", "--metric", "iou,pointing,sparseness"]
    assert main([*argv, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "iou: ground truth for 0 of 3 images" in captured.err
    assert "pointing_game: ground truth for 0 of 3 images" in captured.err
    assert not (out / "curves_iou.png").exists()
    rows = [line for line in captured.out.splitlines() if "iou" in line]
    assert rows and not any("iou iou" in row for row in rows)
    results = json.loads((out / "results.json").read_text())
    assert results["ground_truth"]["iou"] == {"images": 0, "of": 3}
    # one sidecar: one image with ground truth, and the plot is drawn
    import shutil

    data = tmp_path / "with-gt"
    shutil.copytree(folder, data)
    (data / "espresso" / "0.json").write_text(json.dumps({"boxes": [[0, 0, 20, 20]]}))
    argv = ["evaluate", "--data", str(data), *FAST, "--limit", "3", "--metric", "iou", "--out", str(tmp_path / "ev2")]
    assert main(argv) == 0
    assert "iou: ground truth for 1 of 3 images" in capsys.readouterr().err
    assert (tmp_path / "ev2" / "curves_iou.png").is_file()
    assert os.path.getsize(tmp_path / "ev2" / "curves_iou.png") > 0
