"""One set of conventions across commands, errors in the CLI's words, and what DiffCAM output says it explains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import camscope
from camscope.cli.app import main
from camscope.cli.common import cli_message, load_cli_model, method_list
from camscope.engine.method import canonical_method_name
from camscope.viz.figures import save_image

FAST = ["--model", "torchvision:resnet18", "--weights", "none", "--size", "32"]


def _picture(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(path, np.random.default_rng(seed).random((40, 40, 3)))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for c, name in enumerate(["tabby", "lynx", "cheetah"]):
        for i in range(3):
            _picture(tmp_path / "data" / name / f"{i}.png", 10 * c + i)
    return tmp_path / "data"


def test_method_names_are_canonical_in_the_registry_api_and_cli(tmp_path, capsys):
    assert canonical_method_name("GradCAM") == "gradcam"
    assert canonical_method_name("Finer-Grad-CAM") == "finer-gradcam"
    assert method_list(["GradCAM,Layer-CAM", "gradcam"]) == ["gradcam", "layercam"]
    e = camscope.explain(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Flatten(1)), torch.zeros(1, 3, 4, 4))
    assert e.method == "gradcam"
    image = _picture(tmp_path / "a.png", 0)
    assert main(["explain", str(image), *FAST, "--method", "GradCAM", "--out", str(tmp_path), "--json"]) == 0
    entry = json.loads(capsys.readouterr().out)[0]
    assert entry["methods"] == ["gradcam"] and Path(entry["files"][0]).name.startswith("a.png__gradcam__")


def test_methods_prints_plain_text(capsys):
    assert main(["methods", "--details"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":class:" not in out and "src/" not in out and "G * A" in out


def test_model_is_an_option_and_out_replaces_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["layers", "--model", "torchvision:resnet18", "--size", "64"]) == 0
    assert "(default)" in capsys.readouterr().out
    assert main(["similarity", "--model", "torchvision:resnet18", "--weights", "none", "--out", "curve.png"]) == 0
    assert (tmp_path / "curve.png").is_file()
    # the old spellings still work
    assert main(["similarity", "torchvision:resnet18", "--weights", "none", "--output", "old.png"]) == 0
    assert (tmp_path / "old.png").is_file()
    capsys.readouterr()


def test_explain_takes_folders_a_device_and_writes_under_its_own_default_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _picture(tmp_path / "pics" / "a" / "x.png", 0)
    _picture(tmp_path / "pics" / "y.jpg", 1)
    assert main(["explain", "pics", *FAST, "--device", "cpu", "--json"]) == 0
    files = [Path(f) for entry in json.loads(capsys.readouterr().out) for f in entry["files"]]
    assert len(files) == 2 and all(f.parent == Path("camscope-out/explain") for f in files)
    (tmp_path / "empty").mkdir()
    assert main(["explain", "empty", *FAST]) == 2
    err = capsys.readouterr().err
    assert "is a folder with no images" in err and "no such image file" not in err


def test_random_weights_are_reproducible_with_a_seed_recorded_in_the_saved_explanation(tmp_path, capsys):
    image = _picture(tmp_path / "a.png", 0)
    maps = []
    for run in ("one", "two"):
        argv = ["explain", str(image), *FAST, "--seed", "7", "--save", "--out", str(tmp_path / run), "--json"]
        assert main(argv) == 0
        (saved,) = [f for f in json.loads(capsys.readouterr().out)[0]["files"] if f.endswith(".safetensors")]
        assert "__seed-7" in saved
        loaded = camscope.Explanation.load(saved)
        assert loaded.options["seed"] == 7 and loaded.options["weights"] == "none"
        maps.append(loaded.maps)
    # The same model computes the same maps up to float rounding: CPU kernels split their reductions by the
    # threads that actually join, which can change under load (about 1e-6 here), so maps are compared to
    # rounding and the random weights themselves exactly (next test).
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-5, atol=1e-5)


def test_seeded_random_weights_are_the_same_model_in_any_process_state():
    def state(seed: int = 7) -> dict[str, torch.Tensor]:
        return load_cli_model("torchvision:resnet18", "none", seed=seed).state_dict()

    first = state()
    torch.rand(1000)  # the process drew random numbers since
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator_before = torch.get_rng_state()
        second = state()
        assert torch.equal(torch.get_rng_state(), generator_before), "building the model changed the caller's RNG"
    finally:
        torch.set_num_threads(threads)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(state(seed=8)["fc.weight"], first["fc.weight"])


def test_api_keywords_become_flags_in_cli_errors(tmp_path, capsys):
    assert (
        cli_message("run analyze(..., all_classes=True)", {"--all-classes"}) == "run camscope analyze ... --all-classes"
    )
    assert cli_message("pass explained= (c), or choose another versus=", {"--explained", "--versus"}) == (
        "pass --explained (c), or choose another --versus"
    )
    assert cli_message("features= cannot apply", {"--principal"}) == "--principal cannot apply"
    assert cli_message("reverse=True is an API option", {"--versus"}) == "reverse=True is an API option"


def test_bank_commands_use_the_banks_model_weights_and_seed_and_say_what_they_explain(folder, tmp_path, capsys):
    bank = tmp_path / "b.safetensors"
    assert main(["bank", "build", "--data", str(folder), "--out", str(bank), *FAST, "--seed", "3"]) == 0
    capsys.readouterr()
    image = folder / "tabby" / "0.png"
    out = tmp_path / "out"
    # no --model, --weights, --seed or --size: the bank's
    assert main(["explain", str(image), "--method", "diffcam", "--bank", str(bank), "--out", str(out), "--json"]) == 0
    entry = json.loads(capsys.readouterr().out)[0]
    assert entry["diffcam.group"].startswith("bank class tabby vs others than tabby: 6 images of 2 classes")
    # the bank's label 2 is named from the bank, never as the model's class 2 (great white shark)
    assert entry["diffcam.bank_class"] == {"label": 2, "name": "tabby"} and entry["explained_name"] == "tabby"
    argv = ["explain", str(image), "--method", "diffcam", "--bank", str(bank), "--out", str(out)]
    assert main([*argv, "--overwrite"]) == 0
    text = capsys.readouterr().out
    # the model's top-5, as every explain prints it, and the bank class DiffCAM explains
    assert "DiffCAM: bank class tabby" in text and text.count("%") == 5
    assert main([*argv, "--reference", "class:lynx,cheetah", "--json"]) == 0
    entry = json.loads(capsys.readouterr().out)[0]
    assert (
        "__ref-class-lynx-cheetah__refs-6" in entry["files"][0]
        and "class lynx, cheetah: 6 images" in entry["diffcam.group"]
    )
    counter = ["bank", "counterfactual", str(image), "--bank", str(bank), "--out", str(out), "--json"]
    assert main([*counter, "--versus", "lynx"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"] == "none" and report["seed"] == 3 and report["versus"]["count"] == 3
    assert "no --counter-image" in report["counterpart_on"] and "__refs-3" in report["why"]
    assert main([*counter, "--versus", "tabby", "--explained", "tabby"]) == 2
    assert "same class 'tabby'" in capsys.readouterr().err
    assert main([*counter, "--versus", "tabby"]) == 2  # the image is a tabby: not "why tabby, not tabby"
    err = capsys.readouterr().err
    assert "0.png is explained as class 'tabby', the class of --versus itself" in err
    assert "versus=" not in err and len(err.strip().splitlines()) == 1


def test_evaluate_takes_method_and_metric_like_every_command(folder, tmp_path, capsys):
    argv = ["evaluate", "--data", str(folder), *FAST, "--limit", "2", "--no-plots", "--json"]
    argv += ["--method", "GradCAM", "--method", "layercam", "--metric", "sparseness", "--out", str(tmp_path / "ev")]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"gradcam", "layercam"} <= set(json.dumps(summary).replace('"', " ").split())


def test_reproduce_and_demo_default_to_their_own_folders():
    import inspect

    from camscope.cli.demo import demo
    from camscope.cli.reproduce import reproduce_command

    assert Path(inspect.signature(reproduce_command).parameters["out"].default) == Path("camscope-out/reproduce")
    assert Path(inspect.signature(demo).parameters["out"].default) == Path("camscope-out/demo")


def test_evaluate_reports_progress_per_image_method_and_metric_off_a_terminal(folder, tmp_path, monkeypatch, capsys):
    import camscope.progress as progress

    clock = iter(range(0, 10_000, 20))  # every reading of the clock is 20 s later: every step is due a line
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    argv = ["evaluate", "--data", str(folder), *FAST, "--limit", "4", "--batch-size", "4", "--no-plots", "--json"]
    argv += ["--method", "gradcam,layercam", "--metric", "sparseness,entropy", "--out", str(tmp_path / "ev")]
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("camscope: evaluating")]
    counts = [line.split(": ")[-1].split(" ")[0] for line in lines]
    # one batch of 4 images, 2 methods x 2 metrics: the count moves inside the batch, to 16 of 16
    assert counts == ["4/16", "8/16", "12/16", "16/16"], lines
    assert not progress._LOG_OFF_TERMINAL  # the CLI's setting does not leak into library calls


def test_weights_takes_a_checkpoint_file_read_without_unpickling(tmp_path, capsys):
    from torchvision.models import resnet18

    torch.manual_seed(1)
    model = resnet18().eval()
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    image = _picture(tmp_path / "a.png", 0)
    argv = ["explain", str(image), "--model", "torchvision:resnet18", "--size", "32", "--out", str(tmp_path), "--json"]
    assert main([*argv, "--weights", str(tmp_path / "ckpt.pt")]) == 0
    entry = json.loads(capsys.readouterr().out)[0]
    assert "__weights-ckpt__" in entry["files"][0]
    with torch.no_grad():
        from camscope.models import data_config, load_image

        x = load_image(image, size=32, config=data_config("torchvision:resnet18"))[0]
        expected = int(model(x).argmax())
    assert entry["predictions"][0]["class"] == expected
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main([*argv, "--weights", str(tmp_path / "bad.pt"), "--overwrite"]) == 2
    assert "Traceback" not in capsys.readouterr().err
