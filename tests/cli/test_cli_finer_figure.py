"""A Finer figure stays readable with hundreds of compared classes: the list is capped and summarised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from camscope.viz.finer import SHOWN_REFERENCES, reference_list


def test_the_reference_list_is_capped_and_summarises_the_rest() -> None:
    rows = [(f"class {i}", 0.001 * (i + 1)) for i in range(300)]
    lines = reference_list(rows).splitlines()
    assert lines[0] == "versus" and len(lines) == 2 + SHOWN_REFERENCES
    assert lines[-1] == f"+ 292 more classes (total {sum(p for _, p in rows[8:]) * 100:.1f}%)"
    assert reference_list(rows[:3]).splitlines()[1:] == ["  0.1%  class 0", "  0.2%  class 1", "  0.3%  class 2"]


def test_explain_with_many_references_draws_a_capped_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import camscope.viz.figures as figures
    from camscope.cli.app import main

    texts: list[str] = []
    save_figure = figures.save_figure

    def recording_save(path: Any, figure: Any, **options: Any) -> Path:
        texts.extend(text.get_text() for axis in figure.axes for text in axis.texts)
        return save_figure(path, figure, **options)

    monkeypatch.setattr(figures, "save_figure", recording_save)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    model = ["--model", "timm:resnet10t", "--weights", "none", "--size", "32", "--layer", "layer4"]
    argv = ["explain", str(tmp_path / "x.png"), "--method", "finer-gradcam", "--references", "200", *model]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    (versus,) = [text for text in texts if text.startswith("versus")]
    assert len(versus.splitlines()) == 2 + SHOWN_REFERENCES and "+ 192 more classes" in versus
