"""The analyze command and camscope.cli.analyze (analysis, plots, report; S- and FS-CAMs from the command line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from camscope.analyses.ifa import Analysis


def _image_folder(root: Path, classes: list[str], per_class: int = 3, size: int = 64) -> Path:
    from PIL import Image

    g = np.random.default_rng(13)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(g.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_cli_analyze_writes_the_analysis_plots_and_report(tmp_path, capsys, monkeypatch):
    import camscope.viz.figures as figures
    from camscope.cli.app import main

    headings, colours = [], []
    save_figure = figures.save_figure

    def recording_save(path, figure, **options):
        headings.append(figure._suptitle.get_text() if figure._suptitle is not None else "")
        colours.append(figure._suptitle.get_color() if figure._suptitle is not None else None)
        return save_figure(path, figure, **options)

    monkeypatch.setattr(figures, "save_figure", recording_save)

    data = _image_folder(tmp_path / "data", ["0", "1", "2"])
    out = tmp_path / "out"
    model = ["--model", "timm:resnet10t", "--weights", "none", "--size", "64"]
    code = main(
        ["analyze", "--data", str(data), "--out", str(out), "--batch-size", "4", "--compare", str(data), *model]
    )
    assert code == 0, capsys.readouterr().err
    for name in (
        "analysis.safetensors",
        "compare.safetensors",
        "importance.png",
        "distribution.png",
        "lines.png",
        "consistency.png",
        "report.md",
    ):
        assert (out / name).is_file(), name
    # every plot names the model (with its random weights), the data and the layer
    heading = f"timm:resnet10t (random weights: not a trained model) on {data} | layer layer4"
    assert [text.replace("\n", " ") for text in headings] == [heading] * 4, headings  # wrapped, never cut
    assert colours == ["firebrick"] * 4  # random weights are flagged in red
    analysis = Analysis.load(out / "analysis.safetensors")
    assert analysis.n_samples == 9 and analysis.class_counts[:3].tolist() == [3, 3, 3] and analysis.num_classes == 1000
    assert analysis.profiles.shape == (9, analysis.num_features)
    report = (out / "report.md").read_text()
    for heading in (
        "## Distribution",
        "## Importance matrix",
        "## Consistency",
        "## Overfitting",
        "S-gradcam",
        "tanh(",
    ):
        assert heading in report
    assert "0.000" in report  # the same folder twice: no difference between the matrices
    outliers = report.split("Outliers:")[1].split("\n\n")[1].splitlines()[2:]
    assert len(outliers) == 9 and all(
        line.startswith("| `") and ".png` |" in line for line in outliers
    )  # named by file
    assert "random weights" in report.splitlines()[0]
    # S- and FS-S-CAMs from the command line.
    image = data / "1" / "0.png"
    scale = ["--scale", str(out / "analysis.safetensors")]
    assert main(["explain", str(image), *scale, "--principal", "0.05", *model]) == 2  # predicted class: no column
    assert "no samples" in capsys.readouterr().err
    code = main(
        ["explain", str(image), *scale, "--principal", "0.05", "--target", "1", "--out", str(tmp_path / "maps"), *model]
    )
    assert code == 0, capsys.readouterr().err
    (written,) = (tmp_path / "maps").iterdir()
    assert written.name.startswith("0.png__gradcam__") and "__target-1__scaled-analysis__principal-0.05" in written.name
    capsys.readouterr()
    assert main(["explain", str(image), "--principal", "0.05", *model]) == 2
    assert "--scale" in capsys.readouterr().err


@pytest.mark.parametrize(
    "folders, labels",
    [(["tabby", "lynx"], [281, 287]), (["0", "surely-no-such-class-xyz"], [0, 1])],
)
def test_a_folder_gets_the_same_labels_through_the_cli_and_the_api(folders, labels, tmp_path, capsys):
    import torch

    import camscope
    from camscope.cli.app import main
    from camscope.models import load_model

    data = _image_folder(tmp_path / "data", folders, per_class=1, size=32)
    out = tmp_path / "out"
    fast = ["--model", "torchvision:resnet18", "--weights", "none", "--size", "32", "--no-consistency"]
    assert main(["analyze", "--data", str(data), "--out", str(out), *fast]) == 0, capsys.readouterr().err
    from_cli = Analysis.load(out / "analysis.safetensors")
    torch.manual_seed(0)
    model = load_model("torchvision:resnet18", weights=None)
    from_api = camscope.analyze(model, data, size=32, progress=False)
    for analysis in (from_cli, from_api):
        assert torch.nonzero(analysis.class_counts).flatten().tolist() == sorted(labels)
    assert main(["analyze", "--data", str(tmp_path / "missing"), "--model", "timm:resnet10t", "--weights", "none"]) == 2


def test_run_analysis_with_a_model_object_and_an_unlabelled_folder(tmp_path, tiny_cnn):
    from camscope.cli.analyze import folder_dataset, run_analysis

    flat = tmp_path / "flat"
    flat.mkdir()
    from PIL import Image

    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * i, dtype=np.uint8)).save(flat / f"{i}.png")
    dataset, names = folder_dataset(flat, tiny_cnn, 16)
    assert names == [f"class {i}" for i in range(5)]
    summary = run_analysis(
        tiny_cnn, dataset, tmp_path / "out", layer="features.2", size=16, batch_size=3, all_classes=True
    )
    assert summary["samples"] == 4 and summary["accuracy"] is None
    assert "unlabelled images counted under their predicted class" in (tmp_path / "out" / "report.md").read_text()
