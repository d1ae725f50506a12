"""A damaged shipped model file is a CamscopeError that says to reinstall, never a raw exception."""

from __future__ import annotations

import pytest
import torch

from camscope.errors import CamscopeError
from camscope.io import load_tensors, save_tensors
from camscope.models import zoo


@pytest.fixture
def damaged(tmp_path, monkeypatch):
    tensors, header = load_tensors(zoo.model_path("digits"), kind=zoo.MODEL_KIND)
    path = tmp_path / "digits.safetensors"
    monkeypatch.setattr(zoo, "model_path", lambda name: path)
    zoo._load.cache_clear()
    yield path, tensors, {k: v for k, v in header.items() if k not in ("kind", "format_version")}
    zoo._load.cache_clear()


def _write(path, tensors, header):
    save_tensors(path, tensors, header, kind=zoo.MODEL_KIND)


def test_nan_weights(damaged):
    path, tensors, header = damaged
    name = next(k for k, t in tensors.items() if t.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    _write(path, tensors, header)
    with pytest.raises(CamscopeError, match="NaN or infinite weights"):
        zoo.load_small_model("digits")


@pytest.mark.parametrize("architecture", [None, "abc", {"nope": 1}, {"stages": "x"}])
def test_a_bad_architecture(damaged, architecture):
    path, tensors, header = damaged
    _write(path, tensors, {**header, "architecture": architecture})
    with pytest.raises(CamscopeError, match="architecture"):
        zoo.load_small_model("digits")


def test_a_truncated_file(damaged):
    path, tensors, header = damaged
    _write(path, tensors, header)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CamscopeError, match="not a camscope safetensors file"):
        zoo.load_small_model("digits")
