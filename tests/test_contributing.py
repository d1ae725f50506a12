"""The guide's worked example (a new method and its test against a brute-force loop) runs as written."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

import camscope
from camscope.engine.method import available_methods

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "CONTRIBUTING.md"


def _block(first_line: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    found = [block for block in blocks if block.startswith(first_line)]
    assert len(found) == 1, f"the guide has no single example starting with {first_line!r}"
    return found[0]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_the_guides_method_and_its_test_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    method = tmp_path / "maxgrad.py"
    method.write_text(_block("# src/camscope/methods/maxgrad.py"))
    test = tmp_path / "guide_test_maxgrad.py"
    registration = "import camscope.methods.maxgrad  # noqa: F401  (registers the method)"
    text = _block("# tests/methods/test_maxgrad.py")
    assert registration in text
    test.write_text(text.replace(registration, ""))
    registry = available_methods()
    monkeypatch.setattr("camscope.engine.method._REGISTRY", dict(registry))  # keep the test method out of the others
    _load(method, "guide_maxgrad")
    assert "maxgradcam" in camscope.available_methods()
    _load(test, "guide_test_maxgrad").test_maxgradcam_matches_a_brute_force_loop()
