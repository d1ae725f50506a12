"""``camscope serve`` on the command line: the missing extra is one line, and the server prints its URL and answers."""

from __future__ import annotations

import importlib.util

import pytest

from camscope.cli.app import main
from camscope.cli.serve import parse_model_specs


def test_serve_without_the_app_extra_says_how_to_install_it(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    assert main(["serve"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "camscope[app] is needed for the explorer (camscope serve): pip install 'camscope[app]'" in error
    assert "fastapi is not installed" in error


def test_model_specs_name_their_weights(tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")
    models, weights = parse_model_specs(["timm:resnet18=none", f"torchvision:resnet18={checkpoint}"], "default")
    assert list(models) == ["timm:resnet18", "torchvision:resnet18"]
    assert weights == {"timm:resnet18": None, "torchvision:resnet18": str(checkpoint)}
    assert main(["serve", "--model", f"torchvision:resnet18={tmp_path / 'missing.pt'}"]) == 2
    assert main(["serve", "--data", str(tmp_path / "missing")]) == 2


@pytest.mark.slow
def test_serve_prints_its_url_and_answers(tmp_path, start_serve):
    pytest.importorskip("fastapi", reason="the app extra is not installed: pip install 'camscope[app]'")
    httpx = pytest.importorskip("httpx", reason="httpx is not installed")
    line = start_serve("--data", str(tmp_path))
    assert line.startswith("camscope explorer: http://127.0.0.1:"), line
    url = line.split()[2]
    listing = httpx.get(url + "api/photos", timeout=30).json()
    assert "chelsea" in listing["photos"] and listing["data"] == []
    assert httpx.get(url, timeout=30).text.startswith("<!doctype html>")
