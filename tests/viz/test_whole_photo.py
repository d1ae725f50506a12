"""Overlays are drawn on the whole photo, with the model's crop mapped back to its place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from camscope.models import DataConfig, data_config, load_image, load_photo
from camscope.models.preprocessing import Photo
from camscope.viz.figures import framed, overlay
from camscope.viz.overview import OverviewColumn, overview_grid


def _photo(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(height * 1000 + width)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(300, 451), (600, 400), (224, 224), (257, 1000)])
@pytest.mark.parametrize("model", ["efficientnet_lite0", "torchvision:resnet18"])
def test_the_photo_is_torchvisions_resize_and_the_crop_its_center_crop(shape: tuple[int, int], model: str) -> None:
    array = _photo(*shape)
    config = data_config(model)
    _, photo = load_photo(array, size=224, config=config)
    interpolation = transforms.InterpolationMode(config.interpolation)
    resized = transforms.Resize(int(224 / config.crop_pct), interpolation=interpolation)(Image.fromarray(array))
    reference = np.asarray(resized, dtype=np.float32) / 255
    np.testing.assert_array_equal(photo.image, reference)
    np.testing.assert_array_equal(photo.crop, np.asarray(transforms.CenterCrop(224)(resized), dtype=np.float32) / 255)
    np.testing.assert_array_equal(photo.crop, load_image(array, size=224, config=config)[1])


def test_a_crop_larger_than_the_resized_photo_is_padded_as_torchvision_pads_it() -> None:
    config = DataConfig((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", crop_pct=1.2, input_size=224)
    array = _photo(300, 451)
    _, photo = load_photo(array, size=224, config=config)
    resized = transforms.Resize(186, interpolation=transforms.InterpolationMode.BICUBIC)(Image.fromarray(array))
    reference = np.asarray(transforms.CenterCrop(224)(resized), dtype=np.float32) / 255
    assert (photo.top, photo.left) == (0, 0)
    np.testing.assert_array_equal(photo.crop, reference)


def test_an_overlay_on_a_photo_is_the_crops_overlay_in_place_and_the_rest_faded() -> None:
    _, photo = load_photo(_photo(300, 451), size=64)
    cam = torch.rand(64, 64, generator=torch.Generator().manual_seed(0))
    shown = overlay(photo, cam)
    assert shown.shape == photo.image.shape
    rows, columns = slice(photo.top, photo.top + 64), slice(photo.left, photo.left + 64)
    np.testing.assert_allclose(shown[rows, columns], overlay(photo.crop, cam))
    outside = np.ones(photo.image.shape[:2], dtype=bool)
    outside[rows, columns] = False
    assert outside.any()
    np.testing.assert_allclose(shown[outside], framed(photo)[outside])
    np.testing.assert_allclose(framed(photo)[outside], 0.45 * photo.image[outside] + 0.55, rtol=1e-6)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(photo, torch.rand(32, 32))


def test_the_overview_grid_draws_whole_photos() -> None:
    _, photo = load_photo(_photo(300, 451), size=32)
    figure = overview_grid([photo], [OverviewColumn("Grad-CAM", torch.rand(1, 32, 32), ["tabby"])], ["cat"])
    shapes = [axis.images[0].get_array().shape for axis in figure.axes if axis.images]
    assert shapes == [photo.image.shape] * 2


def test_cli_figures_show_the_whole_photo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import camscope.viz.figures as figures
    from camscope.cli.app import main

    drawn: list[tuple[int, ...]] = []
    save_figure = figures.save_figure

    def recording_save(path: Any, figure: Any, **options: Any) -> Path:
        drawn.extend(axis.images[0].get_array().shape for axis in figure.axes if axis.images)
        return save_figure(path, figure, **options)

    monkeypatch.setattr(figures, "save_figure", recording_save)
    Image.fromarray(_photo(60, 90)).save(tmp_path / "wide.png")
    model = ["--model", "timm:resnet10t", "--weights", "none", "--size", "32", "--layer", "layer4"]
    code = main(["explain", str(tmp_path / "wide.png"), "--method", "gradcam", "--out", str(tmp_path / "out"), *model])
    assert code == 0
    shorter = int(32 / data_config("timm:resnet10t").crop_pct)  # the resize before the center crop
    assert drawn == [(shorter, int(shorter * 90 / 60), 3)] * 2, drawn  # the input and the overlay
    assert isinstance(load_photo(tmp_path / "wide.png", 32)[1], Photo)
