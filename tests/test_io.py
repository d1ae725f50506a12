"""The file layer: atomic writes that keep the umask and leave nothing behind, and checked headers."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save as save_safetensors

from camscope.errors import CamscopeError
from camscope.io import FORMAT_VERSION, atomic_write_bytes, checked_tensor, load_tensors, save_tensors


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_writes_keep_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        path = atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_a_folder_or_a_path_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(CamscopeError, match="it is a folder"):
        atomic_write_bytes(tmp_path / "folder", b"x")
    (tmp_path / "file").write_bytes(b"keep")
    with pytest.raises(CamscopeError, match="is a file, not a folder"):
        atomic_write_bytes(tmp_path / "file" / "deeper" / "a.bin", b"x")
    assert (tmp_path / "file").read_bytes() == b"keep" and _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "error, message",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
        (OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
    ],
)
def test_an_os_error_is_a_clear_error_and_leaves_the_old_file(tmp_path, monkeypatch, error, message):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def fail(*args):
        raise error

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(CamscopeError, match=f"cannot write .*a.bin: {message}"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_an_unwritable_folder_is_a_clear_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)  # tests run as root, where chmod does not stop a write
    with pytest.raises(CamscopeError, match="Permission denied"):
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_a_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporaries_carry_the_pid_and_stale_ones_are_removed(tmp_path, monkeypatch):
    target = tmp_path / "bank.safetensors"
    stale = tmp_path / f".bank.safetensors.{_dead_pid()}.0a1b2c3d.tmp"  # a writer killed by SIGKILL
    alive = tmp_path / f".bank.safetensors.{os.getppid()}.0a1b2c3d.tmp"  # a writer still running
    other = tmp_path / f".other.safetensors.{_dead_pid()}.0a1b2c3d.tmp"  # another target's
    for path in (stale, alive, other):
        path.write_bytes(b"partial")
    names = []
    replace = os.replace

    def spy(source, destination):
        names.append(os.path.basename(source))
        replace(source, destination)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_bytes(target, b"data")
    assert names[0].startswith(f".bank.safetensors.{os.getpid()}.") and names[0].endswith(".tmp")
    assert not stale.exists() and alive.exists() and other.exists() and target.read_bytes() == b"data"


def _file(tmp_path, header):
    path = tmp_path / "x.safetensors"
    metadata = None if header is None else {"camscope": header}
    path.write_bytes(save_safetensors({"x": torch.ones(2)}, metadata=metadata))
    return path


@pytest.mark.parametrize(
    "header, message",
    [
        (None, "no camscope metadata"),
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('"text"', "not a JSON object"),
        ('{"kind": "demo"}', "invalid format_version None"),
        ('{"kind": "demo", "format_version": 0}', "invalid format_version 0"),
        ('{"kind": "demo", "format_version": 1.9}', "invalid format_version 1.9"),
        ('{"kind": "demo", "format_version": "1"}', "invalid format_version '1'"),
        ('{"kind": "demo", "format_version": true}', "invalid format_version True"),
        ('{"kind": "demo", "format_version": -3}', "invalid format_version -3"),
        (json.dumps({"kind": "demo", "format_version": FORMAT_VERSION + 1}), "newer than this camscope"),
        ('{"kind": "other", "format_version": 1}', "holds a 'other', not a 'demo'"),
    ],
)
def test_bad_headers_are_clear_errors(tmp_path, header, message):
    with pytest.raises(CamscopeError, match=message):
        load_tensors(_file(tmp_path, header), "demo")


def test_truncated_or_flipped_files_are_clear_errors(tmp_path):
    path = save_tensors(tmp_path / "x.safetensors", {"x": torch.arange(6.0)}, {"note": "hi"}, "demo")
    data = path.read_bytes()
    cases = [data[:n] for n in (0, 3, 8, 20, len(data) - 1)]
    cases += [data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :] for i in (0, 5, 7, 9, 30)]
    for case in cases:
        path.write_bytes(case)
        with pytest.raises(CamscopeError, match=r"not a camscope safetensors file|corrupt camscope metadata"):
            load_tensors(path, "demo")


def test_checked_tensor_refuses_what_no_data_gives():
    assert checked_tensor(torch.tensor([1.0, 2.0]), "c", [2], torch.int64).dtype == torch.int64
    for tensor, shape, message in [
        (torch.tensor([1.0, float("nan")]), [2], "NaN"),
        (torch.tensor([1.0, float("inf")]), [2], "infinite"),
        (torch.tensor([1.5, 2.0]), [2], "whole numbers"),
        (torch.ones(3), [2], r"shape \[3\], expected \[2\]"),
        ("abc", [2], "must be a tensor"),
    ]:
        with pytest.raises(CamscopeError, match=message):
            checked_tensor(tensor, "c", shape, torch.int64)
    with pytest.raises(CamscopeError, match="negative"):
        checked_tensor(torch.tensor([-1]), "c", [1], torch.int64, nonnegative=True)


def test_an_output_folder_that_is_a_file_is_a_clear_error(tmp_path):
    from camscope.io import make_folder

    (tmp_path / "file").write_bytes(b"keep")
    with pytest.raises(CamscopeError, match="it is a file; choose a folder"):
        make_folder(tmp_path / "file")
    with pytest.raises(CamscopeError, match="is a file, not a folder"):
        make_folder(tmp_path / "file" / "sub")
    assert make_folder(tmp_path / "a" / "b").is_dir() and (tmp_path / "file").read_bytes() == b"keep"


def test_a_folder_is_listed_once_for_stale_temporaries(tmp_path, monkeypatch):
    listings = []
    scandir = os.scandir

    def counting(path):
        listings.append(path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", counting)
    for index in range(5):
        atomic_write_bytes(tmp_path / f"{index}.bin", b"x")
    assert len(listings) == 1 and _leftovers(tmp_path) == []
