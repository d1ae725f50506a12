"""Figure options (format, resolution, colour map), captions cut at word boundaries, signed overlays that show the sign."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

from camscope.errors import CamscopeError
from camscope.models import imagenet_classes
from camscope.viz.figures import new_figure, overlay, save_figure
from camscope.viz.style import FigureStyle, shorten, wrap


def test_a_style_checks_its_options_with_one_clear_error():
    assert FigureStyle("SVG", 300, "viridis").suffix == ".svg"
    for options, words in (
        ({"format": "jpg"}, "format='jpg' is not a figure format"),
        ({"dpi": 0}, "dpi=0 is out of range"),
        ({"dpi": 72.5}, "dpi=72.5 is out of range"),
        ({"cmap": "nope"}, "cmap='nope' is not a matplotlib colour map"),
    ):
        with pytest.raises(CamscopeError, match=words):
            FigureStyle(**options)


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("pdf", b"%PDF"), ("svg", b"<?xml")])
def test_figures_are_saved_in_the_chosen_format_the_same_bytes_every_time(tmp_path, fmt, magic):
    def draw():
        figure = new_figure((2, 1))
        figure.subplots().imshow(np.eye(4))
        return figure

    style = FigureStyle(fmt, 50)
    first = save_figure(tmp_path / f"a{style.suffix}", draw(), style=style).read_bytes()
    assert first.startswith(magic)
    assert b"CreationDate" not in first and b"<dc:date>" not in first
    assert save_figure(tmp_path / f"b{style.suffix}", draw(), style=style).read_bytes() == first  # no date inside


def test_the_resolution_sets_the_pixel_size(tmp_path):
    sizes = []
    for dpi in (50, 100):
        figure = new_figure((2, 1))
        figure.subplots().imshow(np.eye(4))
        path = save_figure(tmp_path / f"{dpi}.png", figure, style=FigureStyle(dpi=dpi))
        sizes.append(Image.open(io.BytesIO(path.read_bytes())).size[0])
    assert 1.8 < sizes[1] / sizes[0] < 2.2


def test_the_colour_map_of_unsigned_maps_is_chosen_and_jet_by_default():
    image, cam = np.zeros((1, 1, 3)), np.ones((1, 1))
    assert np.allclose(overlay(image, cam, alpha=1.0)[0, 0], matplotlib.colormaps["jet"](1.0)[:3])
    assert np.allclose(overlay(image, cam, alpha=1.0, cmap="viridis")[0, 0], matplotlib.colormaps["viridis"](1.0)[:3])


def test_a_signed_overlay_shows_the_photo_at_zero_red_for_and_blue_against():
    grey = np.full((1, 3, 3), 0.5)
    shown = overlay(grey, np.array([[0.0, 0.3, -0.3]]), signed=True)
    assert np.allclose(shown[0, 0], shown[0, 0].mean())  # zero: the photo (in grey), no tint
    red, blue = shown[0, 1], shown[0, 2]
    assert red[0] > red[2] + 0.1 and blue[2] > blue[0] + 0.1  # weak evidence keeps a visible hue


def test_captions_are_never_cut_inside_a_word():
    names = imagenet_classes()
    for width in (10, 14, 18, 22, 24):
        for name in names:
            short = shorten(name, width)
            assert len(short) <= width or " " not in short, (name, short)
            words = short.removesuffix("…").split(" ")
            original = name.split()
            assert words[:-1] == original[: len(words) - 1] and original[len(words) - 1].startswith(words[-1]), name
            assert original[len(words) - 1].rstrip(",;:") == words[-1] or words[-1] == original[len(words) - 1]
    assert shorten("military uniform", 12) == "military…"
    assert wrap("vs mortarboard, military uniform, vestment", 28) == "vs mortarboard, military\nuniform, vestment"
    assert all(len(line) <= 28 for line in wrap("vs " + ", ".join(names[:40]), 28, lines=3).splitlines())


def test_svg_files_from_two_threads_are_the_same_and_the_global_settings_are_restored(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    salt = matplotlib.rcParams["svg.hashsalt"]

    def save(index: int) -> bytes:
        figure = new_figure((2, 1))
        figure.subplots().imshow(np.eye(4))
        return save_figure(tmp_path / f"{index}.svg", figure, style=FigureStyle("svg", 40)).read_bytes()

    with ThreadPoolExecutor(2) as pool:
        files = list(pool.map(save, range(4)))
    assert all(data == files[0] for data in files)
    assert matplotlib.rcParams["svg.hashsalt"] == salt
