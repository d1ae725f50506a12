"""--workers, --checkpoint, --checkpoint-every and --resume on the commands that pass over a data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from camscope.accumulators.reference_bank import ReferenceBank
from camscope.passes.checkpoint import Checkpoint


def _image_folder(root: Path, per_class: int = 3, size: int = 32, classes: tuple[str, ...] = ("a", "b")) -> Path:
    from PIL import Image

    g = np.random.default_rng(7)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(g.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


MODEL = ["--model", "timm:resnet10t", "--weights", "none", "--size", "32"]


def test_bank_build_checkpoints_resumes_and_refuses_another_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from camscope.cli.app import main

    data = _image_folder(tmp_path / "data")
    checkpoint = tmp_path / "bank.ckpt"
    common = ["bank", "build", "--data", str(data), *MODEL, "--batch-size", "2"]
    assert main([*common, "--out", str(tmp_path / "plain.bank")]) == 0
    options = ["--checkpoint", str(checkpoint), "--checkpoint-every", "1", "--workers", "1"]
    assert main([*common, "--out", str(tmp_path / "first.bank"), *options]) == 0
    assert Checkpoint.load(checkpoint).batches == 3
    assert main([*common, "--out", str(tmp_path / "again.bank"), *options, "--resume"]) == 0
    plain, again = ReferenceBank.load(tmp_path / "plain.bank"), ReferenceBank.load(tmp_path / "again.bank")
    assert torch.equal(plain.counts, again.counts)  # --weights none: the same seeded weights every run
    torch.testing.assert_close(plain.moments.means, again.moments.means, rtol=1e-12, atol=1e-12)
    capsys.readouterr()
    code = main(
        [
            "bank",
            "build",
            "--data",
            str(data),
            *MODEL,
            "--batch-size",
            "3",
            "--out",
            str(tmp_path / "x.bank"),
            *options,
            "--resume",
        ]
    )
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "belongs to another pass" in error and "batch_size" in error
    assert main([*common, "--out", str(tmp_path / "y.bank"), "--workers", "-1"]) == 2
    assert "workers must be" in capsys.readouterr().err


def test_evaluate_and_analyze_take_the_pass_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from camscope.cli.app import main

    data = _image_folder(tmp_path / "data", classes=("0", "1"))
    checkpoint = tmp_path / "evaluate.ckpt"
    evaluate = ["evaluate", "--data", str(data), *MODEL, "--metrics", "sparseness", "--batch-size", "4", "--no-plots"]
    assert main([*evaluate, "--out", str(tmp_path / "eval"), "--workers", "1", "--checkpoint", str(checkpoint)]) == 0
    assert checkpoint.is_file() and (tmp_path / "eval" / "per_sample.csv").is_file()
    assert main([*evaluate, "--out", str(tmp_path / "eval2"), "--checkpoint", str(checkpoint), "--resume"]) == 0
    first = (tmp_path / "eval" / "per_sample.csv").read_text()
    assert first == (tmp_path / "eval2" / "per_sample.csv").read_text()
    analysis = tmp_path / "analysis.ckpt"
    code = main(
        ["analyze", "--data", str(data), *MODEL, "--out", str(tmp_path / "ifa"), "--no-consistency", "--workers", "1"]
        + ["--checkpoint", str(analysis), "--checkpoint-every", "1", "--batch-size", "4"]
    )
    assert code == 0, capsys.readouterr().err
    assert Checkpoint.load(analysis).batches == 2 and (tmp_path / "ifa" / "analysis.safetensors").is_file()


def test_bank_build_at_bf16_is_close_to_fp32_and_a_bad_precision_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from camscope.cli.app import main

    data = _image_folder(tmp_path / "data")
    common = ["bank", "build", "--data", str(data), *MODEL, "--batch-size", "3"]
    assert main([*common, "--out", str(tmp_path / "fp32.bank")]) == 0
    assert main([*common, "--out", str(tmp_path / "bf16.bank"), "--precision", "bf16"]) == 0
    fp32, bf16 = ReferenceBank.load(tmp_path / "fp32.bank"), ReferenceBank.load(tmp_path / "bf16.bank")
    assert not torch.equal(fp32.means, bf16.means)
    torch.testing.assert_close(bf16.means, fp32.means, rtol=0.05, atol=0.05 * fp32.means.abs().max().item())
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "x.bank"), "--precision", "fp8"]) == 2
    error = capsys.readouterr().err.strip()
    assert "precision must be one of fp32, bf16, fp16" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "x.bank").exists()


def test_reproduce_under_torchrun_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from camscope.cli.app import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["reproduce", "--quick", "--out", str(tmp_path / "report")]) == 2
    error = capsys.readouterr().err.strip()
    assert "runs in one process" in error and "without torchrun" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "report").exists()
