"""Figures say what they show: method, explained class, layer, a colour bar; signed maps are centred on 0."""

from __future__ import annotations

import numpy as np
import torch

from camscope.cli.demo import overview_figure
from camscope.viz.figures import explanation_figure


def _texts(figure) -> str:
    parts = [t.get_text() for t in figure.texts]
    for axis in figure.axes:
        parts += [axis.get_title(), axis.get_ylabel(), *(t.get_text() for t in axis.texts)]
        parts += [label.get_text() for label in axis.get_yticklabels()]
    return "\n".join(parts)


def _colour_bars(figure) -> list:
    return [axis for axis in figure.axes if axis.get_label() == "<colorbar>"]


def test_explanation_figure_names_method_class_layer_and_has_a_colour_bar():
    image = np.zeros((8, 8, 3))
    figure = explanation_figure(
        image,
        {"gradcam": np.random.default_rng(0).random((8, 8))},
        [("tabby", 0.5)],
        title="cat.png",
        explained="tabby 50.0%",
        layer="layer4",
        note="random weights",
    )
    text = _texts(figure)
    for piece in ("gradcam", "tabby 50.0%", "layer layer4", "random weights", "cat.png"):
        assert piece in text, (piece, text)
    (bar,) = _colour_bars(figure)
    assert bar.get_ylim() == (0.0, 1.0)


def test_signed_maps_get_a_diverging_bar_centred_on_zero_with_a_legend():
    figure = explanation_figure(np.zeros((8, 8, 3)), {"S-gradcam": np.linspace(-1, 1, 64).reshape(8, 8)}, signed=True)
    (bar,) = _colour_bars(figure)
    assert bar.get_ylim() == (-1.0, 1.0)
    text = _texts(figure)
    assert "against" in text and "for" in text and "0 = no evidence" in text


def test_demo_overview_has_row_and_column_labels():
    images = [np.zeros((8, 8, 3)), np.ones((8, 8, 3))]
    maps = {"gradcam": torch.rand(2, 8, 8), "layercam": torch.rand(2, 8, 8)}
    figure = overview_figure(images, maps, ["chelsea\ntabby 17%", "coffee\nespresso 95%"])
    text = _texts(figure)
    for piece in ("input", "gradcam", "layercam", "chelsea", "coffee", "espresso 95%"):
        assert piece in text, (piece, text)
    assert len(_colour_bars(figure)) == 1
