"""The CLI's exit behaviour: Ctrl-C is one line and status 130; a file that cannot be written is one line and status 2."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch

import camscope.cli.bank
from camscope.accumulators.reference_bank import ReferenceBank
from camscope.cli.app import main
from camscope.viz.figures import save_image


@pytest.fixture
def banks(tmp_path):
    generator = torch.Generator().manual_seed(0)
    paths = []
    for part in range(2):
        bank = ReferenceBank(3, "features", class_names=["a", "b"], scatter="class")
        bank.update(torch.randn(8, 3, generator=generator, dtype=torch.float64), torch.arange(8) % 2)
        paths.append(str(bank.save(tmp_path / f"part{part}.bank")))
    return paths


def _only_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def _files(folder):
    return sorted(path.name for path in folder.iterdir())


def _raise(error):
    def raiser(*args, **kwargs):
        raise error

    return raiser


def test_ctrl_c_in_a_command_is_one_line_and_status_130(banks, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ReferenceBank, "merge", _raise(KeyboardInterrupt()))
    assert main(["bank", "merge", *banks, "--out", str(tmp_path / "merged.bank")]) == 130
    assert _only_line(capsys) == "camscope: interrupted"
    assert _files(tmp_path) == ["part0.bank", "part1.bank"]


def test_ctrl_c_while_writing_leaves_no_partial_file(banks, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "fsync", _raise(KeyboardInterrupt()))
    assert main(["bank", "merge", *banks, "--out", str(tmp_path / "merged.bank")]) == 130
    assert _only_line(capsys) == "camscope: interrupted"
    assert _files(tmp_path) == ["part0.bank", "part1.bank"]


def test_ctrl_c_while_building_a_bank(tmp_path, monkeypatch, capsys):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    save_image(tmp_path / "data" / "cat" / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    monkeypatch.setattr(camscope.cli.bank, "load_cli_model", lambda *args: torch.nn.Identity())
    monkeypatch.setattr(ReferenceBank, "build", _raise(KeyboardInterrupt()))
    code = main(["bank", "build", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out.bank")])
    assert code == 130 and _only_line(capsys) == "camscope: interrupted"
    assert _files(tmp_path) == ["data"]


@pytest.mark.parametrize("where", ["folder", "under a file"])
def test_an_unwritable_out_is_one_line_and_status_2(banks, tmp_path, capsys, where):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_bytes(b"keep")
    out = tmp_path / "folder" if where == "folder" else tmp_path / "file" / "merged.bank"
    assert main(["bank", "merge", *banks, "--out", str(out)]) == 2
    line = _only_line(capsys)
    # the command's output check (or, behind it, the file layer) names the problem on one line
    assert line.startswith("camscope: error: ") and ("is a folder" in line or "is a file" in line)
    assert _files(tmp_path) == ["file", "folder", "part0.bank", "part1.bank"] and _files(tmp_path / "folder") == []
    assert (tmp_path / "file").read_bytes() == b"keep"


def test_a_read_only_folder_is_one_line_and_status_2(banks, tmp_path, monkeypatch, capsys):
    # tests run as root, where chmod does not stop a write: the refusal is simulated
    monkeypatch.setattr(os, "open", _raise(PermissionError(errno.EACCES, "Permission denied")))
    assert main(["bank", "merge", *banks, "--out", str(tmp_path / "merged.bank")]) == 2
    assert "Permission denied" in _only_line(capsys)
    assert _files(tmp_path) == ["part0.bank", "part1.bank"]


def test_any_os_error_is_one_line_and_status_2(banks, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ReferenceBank, "merge", _raise(OSError(errno.EIO, "Input/output error", "part1.bank")))
    assert main(["bank", "merge", *banks, "--out", str(tmp_path / "merged.bank")]) == 2
    assert _only_line(capsys) == (
        "camscope: error: Input/output error: part1.bank (check that the path exists and can be read or written)"
    )


def test_a_corrupt_bank_is_one_line_and_status_2(banks, tmp_path, capsys):
    path = tmp_path / "part0.bank"
    path.write_bytes(path.read_bytes()[:-7])
    assert main(["bank", "info", str(path)]) == 2
    assert _only_line(capsys).startswith(f"camscope: error: {path} is not a camscope safetensors file")


def test_an_explain_out_that_is_a_file_is_one_line_and_status_2(tmp_path, capsys, monkeypatch):
    import camscope.cli.explain

    monkeypatch.setattr(camscope.cli.explain, "load_cli_model", _raise(OSError(errno.ENOTDIR, "Not a directory")))
    assert main(["explain", str(tmp_path / "x.png"), "--out", str(tmp_path)]) == 2
    _only_line(capsys)


@pytest.mark.parametrize("command", [["bank", "build"], ["analyze"], ["evaluate"]])
def test_an_empty_data_folder_is_one_line_and_status_2(tmp_path, capsys, command):
    (tmp_path / "empty").mkdir()
    code = main([*command, "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--weights", "none"])
    assert code == 2
    assert _only_line(capsys).startswith("camscope: error: ")
    assert _files(tmp_path) == ["empty"]


@pytest.mark.slow
def test_a_real_sigint_exits_130_and_writes_nothing(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "data" / "cat").mkdir(parents=True)
    for i in range(300):
        save_image(tmp_path / "data" / "cat" / f"{i}.png", np.full((48, 48, 3), i % 256, dtype=np.uint8))
    checkpoint = tmp_path / "pass.ckpt"
    command = [
        *(sys.executable, "-m", "camscope", "bank", "build", "--data", str(tmp_path / "data")),
        *("--model", "torchvision:resnet18", "--weights", "none", "--batch-size", "1"),
        *("--checkpoint", str(checkpoint), "--checkpoint-every", "1", "--out", str(tmp_path / "b.bank")),
    ]
    # A shell that started the tests in the background may ignore SIGINT: give the child the default handler.
    child = subprocess.Popen(
        command, stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first checkpoint says the pass is under way
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err.decode()
    assert err.decode().strip().splitlines()[-1] == "camscope: interrupted"
    assert not (tmp_path / "b.bank").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "pass.ckpt"]  # no temporary file left
