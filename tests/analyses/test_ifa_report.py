"""The IFA report as a library function: what ``camscope analyze`` writes as report.md, from an Analysis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from camscope.analyses.ifa import Analysis, analyze, markdown_report, write_report
from camscope.analyses.ifa.report import sample_names
from camscope.errors import CamscopeError


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, Analysis]:
    """A labelled folder of 6 tiny images (classes 0 and 3), the dataset and its analysis with a tiny CNN."""
    from PIL import Image

    from camscope.cli.analyze import folder_dataset
    from conftest import TinyCNN

    root = tmp_path_factory.mktemp("ifa-report") / "data"
    g = np.random.default_rng(3)
    for label in ("0", "3"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(g.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    model = TinyCNN().eval()
    dataset, _ = folder_dataset(root, model, 16)
    analysis = analyze(
        model, dataset, layer="features.2", explain="true", profiles=True, size=16, batch_size=4, progress=False
    )
    return root, dataset, analysis


def test_the_report_lists_the_analysis_numbers(analysed) -> None:
    _, dataset, analysis = analysed
    names = [f"n{i}" for i in range(analysis.num_classes)]
    samples = sample_names(dataset)
    assert samples is not None and sorted(samples) == [f"{c}/{i}.png" for c in "03" for i in range(3)]
    text = markdown_report(analysis, class_names=names, fraction=0.25, title="tiny", samples=samples)
    assert text.startswith("# Integrated feature analysis: tiny\n")
    assert f"- {analysis.n_samples} images, 6 labelled" in text
    keep = analysis.principal_features(0.25)
    for c in (0, 3):  # each present class lists its top features of the importance matrix, most important first
        top = torch.sort(-analysis.importance[:, c], stable=True).indices[: int(keep[c].sum())].tolist()
        assert f"| {c} n{c} | 3 | {', '.join(map(str, top))} |" in text
    outliers = text.split("Outliers:")[1].split("\n\n")[1].splitlines()[2:]
    assert len(outliers) == 6 and all(line.split(" | ")[0].strip("| `") in samples for line in outliers)
    scale = analysis.scale()
    assert f"tanh({scale.a:.6g} x + {scale.b:.6g})" in text
    assert "## Consistency" not in text and "## Overfitting" not in text  # not given: not reported


def test_the_report_compares_links_files_in_their_format_and_checks_its_arguments(analysed, tmp_path) -> None:
    _, _, analysis = analysed
    text = markdown_report(analysis, compared=analysis, files=["distribution.svg", "lines.svg", "compare.safetensors"])
    assert "**0.000**" in text  # the same data twice: identical matrices
    assert "![distribution](distribution.svg)" in text and "![column](lines.svg)" in text
    assert "![importance matrix](importance.png)" in text  # not written in another format: the default name
    assert text.rstrip().endswith("- `distribution.svg`, `lines.svg`")
    written = write_report(tmp_path / "report.md", analysis, compared=analysis)
    assert written.read_text() == markdown_report(analysis, compared=analysis)
    with pytest.raises(CamscopeError, match="fraction"):
        markdown_report(analysis, fraction=0)
    with pytest.raises(CamscopeError, match="class_names"):
        markdown_report(analysis, class_names=["only one"])


def test_the_cli_report_is_the_library_report(analysed, tmp_path) -> None:
    from camscope.cli.analyze import run_analysis
    from conftest import TinyCNN

    _, dataset, _ = analysed
    model = TinyCNN().eval()
    out = tmp_path / "out"
    summary = run_analysis(
        model, dataset, out, layer="features.2", explain="true", size=16, batch_size=4, check_consistency=False
    )
    files = [Path(path).name for key, path in summary["files"].items() if key != "report"]
    expected = markdown_report(Analysis.load(out / "analysis.safetensors"), samples=sample_names(dataset), files=files)
    assert (out / "report.md").read_text() == expected
