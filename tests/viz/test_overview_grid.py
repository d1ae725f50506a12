"""The demo's overviews: labelled columns and cells, colour bars beside the maps they describe, and the comparisons
they draw (checked against camscope.explain and camscope.viz.compare)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import camscope
from camscope.cli.demo import compare_photos, comparison_columns, pair_columns, photo_comparisons
from camscope.viz.compare import explanation_shift, mass_shift
from camscope.viz.overview import Comparison, OverviewColumn, comparison_grid, overview_grid
from conftest import TinyStridedCNN


def _bars(figure) -> list:
    return [axis for axis in figure.axes if hasattr(axis, "_colorbar")]


def test_every_column_and_cell_is_labelled_and_each_run_of_one_kind_has_a_bar_under_it():
    images = [np.zeros((8, 8, 3)), np.ones((8, 8, 3))]
    columns = [
        OverviewColumn("Grad-CAM", torch.rand(2, 8, 8), ["tabby 17%", "espresso 95%"]),
        OverviewColumn("Finer-CAM", torch.rand(2, 8, 8), ["vs tiger cat", "vs cup"]),
        OverviewColumn("what changed", torch.rand(2, 8, 8) * 2 - 1, ["moved 5%", "moved 3%"], kind="difference"),
        OverviewColumn("S-CAM", torch.rand(2, 8, 8) * 2 - 1, ["tabby 17%", "espresso 95%"], signed=True),
    ]
    figure = overview_grid(images, columns, ["chelsea", "coffee"], heading="model m | layer l")
    cells = [axis for axis in figure.axes if not hasattr(axis, "_colorbar")]
    assert [axis.get_title() for axis in cells[:5]] == ["input", "Grad-CAM", "Finer-CAM", "what changed", "S-CAM"]
    assert [axis.get_xlabel() for axis in cells[6:10]] == ["espresso 95%", "vs cup", "moved 3%", "espresso 95%"]
    assert [cells[0].get_ylabel(), cells[5].get_ylabel()] == ["chelsea", "coffee"]
    assert figure._suptitle.get_text() == "model m | layer l"
    bars = _bars(figure)
    assert [bar.get_xlim() for bar in bars] == [(0.0, 1.0), (-1.0, 1.0), (-1.0, 1.0)]
    assert [t.get_text() for t in bars[1].get_xticklabels()] == ["lost", "0", "gained"]
    assert "against" in " ".join(t.get_text() for t in bars[2].get_xticklabels())
    for bar, run in zip(bars, ([6, 7], [8], [9])):  # each bar lies under its columns, below the last row
        left, right = cells[run[0]].get_position().x0, cells[run[-1]].get_position().x1
        box = bar.get_position()
        assert left <= box.x0 < box.x1 <= right and box.y1 < cells[run[0]].get_position().y0


def test_a_comparison_grid_shows_base_compared_and_difference_with_bars_beside_them():
    shift = mass_shift(torch.rand(1, 4, 4), torch.rand(1, 4, 4), common_units=True)
    comparison = Comparison(
        "why c, not d?", torch.rand(8, 8), "Grad-CAM: c", torch.rand(8, 8), "Finer-CAM", shift, "Grad-CAM"
    )
    figure = comparison_grid(np.zeros((8, 8, 3)), [comparison, comparison])
    cells = [axis for axis in figure.axes if not hasattr(axis, "_colorbar")]
    assert len(cells) == 6 and cells[0].get_title() == "why c, not d?"
    assert cells[4].get_xlabel() == shift.caption(base="Grad-CAM")
    maps_bar, difference_bar = _bars(figure)
    assert maps_bar.get_ylim() == (0.0, 1.0) and difference_bar.get_ylim() == (-1.0, 1.0)
    assert maps_bar.get_position().x0 > cells[1].get_position().x1  # right of the maps
    assert (
        maps_bar.get_position().y0 >= cells[3].get_position().y0
        and difference_bar.get_position().y1 <= cells[5].get_position().y1
    )


@pytest.fixture(scope="module")
def demo_comparisons():
    torch.manual_seed(0)
    model = TinyStridedCNN(classes=6).eval()
    batch = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    names = [f"class{i}" for i in range(6)]
    return model, batch, names, compare_photos(model, batch, names, ["a", "b", "c", "d"])


def test_the_overview_is_grad_cam_finer_diffcam_what_each_changed_and_two_s_cams(demo_comparisons):
    model, batch, names, found = demo_comparisons
    gradcam, finer, finer_change, diffcam, diffcam_change, scaled, rejected = comparison_columns(found)
    logits = model(batch).detach()
    order = logits.argsort(dim=1, descending=True)
    probabilities = logits.softmax(dim=1)
    reference_gradcam = camscope.explain(model, batch, method="gradcam")
    reference_finer = camscope.explain(model, batch, method="finer-gradcam", references=order[:, 1:4])
    torch.testing.assert_close(gradcam.maps, reference_gradcam.maps)
    torch.testing.assert_close(finer.maps, reference_finer.maps)
    shift = explanation_shift(reference_gradcam, reference_finer)
    torch.testing.assert_close(finer_change.maps, shift.display((32, 32)))
    for i in range(4):
        c = int(order[i, 0])
        assert gradcam.captions[i] == found.named(c, i) and found.named(c, i).startswith(names[c])
        assert finer.captions[i].replace("\n", " ") == "vs " + ", ".join(names[int(d)] for d in order[i, 1:4])
        assert finer_change.captions[i] == f"moved {shift.moved[i] * 100:.0f}%, removed {shift.removed[i] * 100:.0f}%"
        others = torch.cat([batch[:i], batch[i + 1 :]])
        expected = camscope.explain(model, batch[i : i + 1], method="diffcam", reference=others)
        torch.testing.assert_close(diffcam.maps[i], expected.maps[0])
        moved = mass_shift(reference_gradcam.raw[i : i + 1], expected.raw).moved[0]
        assert diffcam_change.captions[i] == f"moved {moved * 100:.0f}%"  # units differ: no removed share
        other_classes = [int(order[j, 0]) for j in range(4) if j != i]
        assert int(found.rejected[i]) == min(other_classes, key=lambda k: float(probabilities[i, k]))
    assert [column.kind for column in (finer_change, diffcam_change, scaled, rejected)] == ["difference"] * 2 + [
        "signed"
    ] * 2
    assert bool((scaled.maps.abs() < 1).all()) and bool((rejected.maps.abs() < 1).all())
    assert diffcam.captions == ["vs the 3 other photos"] * 4


def test_both_directions_of_the_top_pair_where_the_model_hesitates(demo_comparisons):
    model, batch, names, found = demo_comparisons
    probabilities = model(batch).detach().softmax(dim=1)
    top = probabilities.topk(2, dim=1)
    expected = [i for i in range(4) if float(top.values[i, 1]) >= 0.5 * float(top.values[i, 0])]
    assert found.hesitating() == expected
    rows = list(range(4))
    columns = pair_columns(found, rows)
    c, d = top.indices[:, 0], top.indices[:, 1]
    why = camscope.explain(
        model, batch, method="finer-gradcam", target=camscope.Finer(explained=c, references=d[:, None])
    )
    why_not = camscope.explain(
        model, batch, method="finer-gradcam", target=camscope.Finer(explained=d, references=c[:, None])
    )
    torch.testing.assert_close(columns[1].maps, why.maps)
    torch.testing.assert_close(columns[4].maps, why_not.maps)
    runner_up = camscope.explain(model, batch, method="gradcam", target=d)
    torch.testing.assert_close(columns[3].maps, runner_up.maps)
    shift = explanation_shift(runner_up, why_not)
    assert columns[5].captions[0] == f"moved {shift.moved[0] * 100:.0f}%, removed {shift.removed[0] * 100:.0f}%"
    assert columns[4].captions == [f"vs {names[int(c[i])]}" for i in rows]
    comparisons = photo_comparisons(found, 0)
    assert [comparison.title.split("\n")[0] for comparison in comparisons][1:3] == [
        f"why {names[int(c[0])]},",
        f"why {names[int(d[0])]},",
    ]
    numbers = found.numbers()["a"]
    assert numbers["why_not"] == {
        "moved": round(float(shift.moved[0]), 4),
        "removed": round(float(shift.removed[0]), 4),
    }
    assert numbers["diffcam"]["removed"] is None
