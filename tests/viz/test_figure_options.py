"""--format, --dpi and --cmap on every command that draws, threaded to the files it writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer

from camscope.cli.app import app, main
from camscope.viz.figures import save_image
from camscope.viz.style import FigureStyle
from conftest import TinyCNN

FAST = ["--model", "timm:resnet10t", "--weights", "none", "--size", "32", "--layer", "layer4"]
DRAWING = ["explain", "prompts", "similarity", "bank counterfactual", "demo", "analyze", "evaluate"]


def _command(path: str) -> Any:
    command = typer.main.get_command(app)
    for part in path.split():
        command = command.commands[part]  # type: ignore[attr-defined]
    return command


@pytest.mark.parametrize("path", DRAWING)
def test_every_command_that_draws_takes_format_dpi_and_cmap(path):
    flags = {option for param in _command(path).params for option in param.opts}
    assert {"--format", "--dpi", "--cmap"} <= flags, path


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "cat.png"
    save_image(path, np.random.default_rng(0).random((40, 52, 3)))
    return path


def _recorded(monkeypatch) -> list[Any]:
    import camscope.viz.figures as figures

    figures_seen: list[Any] = []
    save_figure = figures.save_figure

    def recording_save(path: Any, figure: Any, *args: Any, **options: Any) -> Path:
        figures_seen.append((Path(path), figure, options.get("style")))
        return save_figure(path, figure, *args, **options)

    monkeypatch.setattr(figures, "save_figure", recording_save)
    return figures_seen


def test_explain_writes_the_chosen_format_and_draws_what_each_comparison_changed(picture, tmp_path, monkeypatch):
    seen = _recorded(monkeypatch)
    argv = ["explain", str(picture), "--method", "gradcam,finer-gradcam", *FAST, "--out", str(tmp_path)]
    assert main([*argv, "--format", "pdf", "--dpi", "50", "--cmap", "viridis"]) == 0
    (written,) = tmp_path.iterdir()
    assert written.name.startswith("cat.png__gradcam+finer-gradcam__") and written.suffix == ".pdf"
    assert written.read_bytes().startswith(b"%PDF")
    ((path, figure, style),) = seen
    assert path == written and style == FigureStyle("pdf", 50, "viridis")
    text = "\n".join(axis.get_title() for axis in figure.axes)
    assert "Finer-CAM (Grad-CAM) - Grad-CAM" in text and "moved" in text and "removed" in text
    assert figure._suptitle.get_text().startswith("model timm:resnet10t | layer layer4")


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--format", "jpg"], "--format jpg is not a figure format"),
        (["--dpi", "5"], "--dpi 5 is out of range"),
        (["--cmap", "nope"], "--cmap nope is not a matplotlib colour map"),
    ],
)
def test_bad_figure_options_stop_the_command_with_one_line_in_its_own_terms(picture, tmp_path, capsys, flags, words):
    assert main(["explain", str(picture), *FAST, "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "out").exists()


def test_analyze_plots_in_the_chosen_format_and_its_report_links_them(tmp_path):
    from camscope.cli.analyze import run_analysis

    torch.manual_seed(0)
    data = [(torch.randn(6, 3, 12, 12), torch.tensor([0, 1, 2] * 2))]
    summary = run_analysis(
        TinyCNN(classes=4).eval(), data, tmp_path, layer="features", explain="true", check_consistency=False,
        show_progress=False, style=FigureStyle("svg"),
    )  # fmt: skip
    files = {Path(path).name for path in summary["files"].values()}
    assert {"importance.svg", "distribution.svg", "lines.svg"} <= files and not any(f.endswith(".png") for f in files)
    report = (tmp_path / "report.md").read_text()
    assert "](distribution.svg)" in report and "(distribution.png)" not in report


def test_evaluate_curves_in_the_chosen_format_name_the_methods_as_people_write_them(tmp_path, monkeypatch):
    from camscope.evaluation.runner import evaluate

    seen = _recorded(monkeypatch)
    torch.manual_seed(0)
    data = [(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]))]
    report = evaluate(
        TinyCNN(classes=3).eval(), data, methods=["gradcampp"], metrics=["deletion"], layer="features", progress=False
    )
    written = report.plot_curves(tmp_path, style=FigureStyle("svg", 60))
    assert written["curves_deletion"] == tmp_path / "curves_deletion.svg"
    ((_, figure, _),) = seen
    assert [text.get_text() for text in figure.axes[0].get_legend().get_texts()] == ["Grad-CAM++"]
