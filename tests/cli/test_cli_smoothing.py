"""``camscope explain --eigen-smooth / --aug-smooth``: the library's options, named in the output and the figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import camscope
from camscope.cli.app import main

MODEL = ["--model", "timm:resnet10t", "--weights", "none", "--size", "32", "--layer", "layer4"]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_the_flags_give_the_librarys_smoothed_maps(
    image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import camscope.viz.figures as figures
    from camscope.cli.common import load_cli_model
    from camscope.models import data_config, load_photo

    headings: list[str] = []
    save_figure = figures.save_figure

    def recording_save(path: Any, figure: Any, **options: Any) -> Path:
        headings.append(figure._suptitle.get_text() if figure._suptitle is not None else "")
        return save_figure(path, figure, **options)

    monkeypatch.setattr(figures, "save_figure", recording_save)
    argv = ["explain", str(image), "--method", "gradcam", *MODEL, "--save", "--out", str(tmp_path)]
    assert main([*argv, "--eigen-smooth", "--aug-smooth"]) == 0
    stem = "x.png__gradcam__model-timm-resnet10t__random-weights__layer-layer4__size-32__eigen-smooth__aug-smooth"
    saved = camscope.Explanation.load(tmp_path / f"{stem}.safetensors")
    assert (tmp_path / f"{stem}.png").is_file()
    assert "eigen-smoothed" in headings[0] and "aug-smoothed" in headings[0]

    network = load_cli_model("timm:resnet10t", "none", 0)
    x = load_photo(image, size=32, config=data_config("timm:resnet10t"))[0]
    expected = camscope.explain(network, x, method="gradcam", layer="layer4", eigen_smooth=True, aug_smooth=True)
    torch.testing.assert_close(saved.raw, expected.raw)
    plain = camscope.explain(network, x, method="gradcam", layer="layer4")
    assert (expected.raw - plain.raw).abs().max() > 1e-3 * plain.raw.abs().max()
    capsys.readouterr()


def test_eigen_smooth_on_a_method_without_channel_weights_is_one_line(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["explain", str(image), "--method", "eigencam", *MODEL, "--eigen-smooth", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "has no channel weights, so --eigen-smooth cannot apply" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())
