"""The demo's overview: labelled columns and cells, and the comparisons it draws (checked against camscope.explain)."""

from __future__ import annotations

import numpy as np
import torch

import camscope
from camscope.cli.demo import comparison_columns
from camscope.viz.overview import OverviewColumn, overview_grid
from conftest import TinyStridedCNN


def test_every_column_and_cell_is_labelled_and_signed_maps_get_their_own_bar():
    images = [np.zeros((8, 8, 3)), np.ones((8, 8, 3))]
    columns = [
        OverviewColumn("Grad-CAM", torch.rand(2, 8, 8), ["tabby 17%", "espresso 95%"]),
        OverviewColumn("S-CAM", torch.rand(2, 8, 8) * 2 - 1, ["tabby 17%", "espresso 95%"], signed=True),
    ]
    figure = overview_grid(images, columns, ["chelsea", "coffee"])
    cells = figure.axes[:6]
    assert [axis.get_title() for axis in cells[:3]] == ["input", "Grad-CAM", "S-CAM"]
    assert [axis.get_xlabel() for axis in cells[1:3] + cells[4:6]] == ["tabby 17%"] * 2 + ["espresso 95%"] * 2
    assert [cells[0].get_ylabel(), cells[3].get_ylabel()] == ["chelsea", "coffee"]
    bars = figure.axes[6:]
    assert [axis.get_ylim() for axis in bars] == [(0.0, 1.0), (-1.0, 1.0)]
    assert "against" in " ".join(label.get_text() for label in bars[1].get_yticklabels())


def test_the_comparisons_are_grad_cam_finer_against_the_next_classes_diffcam_against_the_others_and_an_s_cam():
    torch.manual_seed(0)
    model = TinyStridedCNN(classes=6).eval()
    batch = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    names = [f"class{i}" for i in range(6)]
    gradcam, finer, diffcam, scaled = comparison_columns(model, batch, names)
    logits = model(batch).detach()
    order = logits.argsort(dim=1, descending=True)
    probabilities = logits.softmax(dim=1)
    for i in range(4):
        c = int(order[i, 0])
        assert gradcam.captions[i] == f"{names[c]} {float(probabilities[i, c]) * 100:.0f}%"
        assert finer.captions[i] == "vs " + ", ".join(names[int(d)] for d in order[i, 1:4])
        others = torch.cat([batch[:i], batch[i + 1 :]])
        expected = camscope.explain(model, batch[i : i + 1], method="diffcam", reference=others).maps[0]
        torch.testing.assert_close(diffcam.maps[i], expected)
    torch.testing.assert_close(gradcam.maps, camscope.explain(model, batch, method="gradcam").maps)
    torch.testing.assert_close(
        finer.maps, camscope.explain(model, batch, method="finer-gradcam", references=order[:, 1:4]).maps
    )
    assert scaled.signed and not gradcam.signed and bool((scaled.maps.abs() < 1).all())
    assert diffcam.captions == ["vs the 3 other photos"] * 4
