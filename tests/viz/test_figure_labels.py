"""Figures say what they show: method as people write it, model, class, layer, a colour bar; text readable in print."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.text import Text

from camscope.cli.demo import overview_figure
from camscope.models.preprocessing import Photo
from camscope.viz.analysis import consistency_scatter, distribution_plot, importance_heatmap, importance_lines
from camscope.viz.compare import mass_shift
from camscope.viz.figures import explanation_figure, headed, map_title, new_figure
from camscope.viz.finer import PromptRow, finer_figure, prompts_figure
from camscope.viz.overview import Comparison, OverviewColumn, comparison_grid, overview_grid
from camscope.viz.style import MIN_FONT


def _texts(figure) -> str:
    return "\n".join(text.get_text() for text in figure.findobj(Text) if text.get_visible())


def _smallest_font(figure) -> float:
    figure.canvas.draw()  # tick labels exist once drawn
    sizes = [text.get_fontsize() for text in figure.findobj(Text) if text.get_visible() and text.get_text().strip()]
    return min(sizes)


def _colour_bars(figure) -> list:
    return [axis for axis in figure.axes if hasattr(axis, "_colorbar")]


def _maps(count: int = 1, size: int = 8) -> torch.Tensor:
    return torch.rand(count, size, size, generator=torch.Generator().manual_seed(count))


def test_explanation_figure_names_method_model_class_layer_and_has_a_colour_bar():
    figure = explanation_figure(
        np.zeros((8, 8, 3)),
        {"gradcampp": _maps()[0]},
        [("tabby", 0.5)],
        title="cat.png",
        explained="tabby 50.0%",
        layer="layer4",
        model="torchvision:resnet18",
        note="random weights",
    )
    text = _texts(figure)
    for piece in ("Grad-CAM++", "tabby 50.0%", "layer layer4", "model torchvision:resnet18", "random weights"):
        assert piece in text, (piece, text)
    assert "gradcampp" not in text
    (bar,) = _colour_bars(figure)
    assert bar.get_ylim() == (0.0, 1.0)


def test_signed_maps_are_titled_s_or_fs_and_get_a_diverging_bar_centred_on_zero():
    signed = {"gradcam": torch.linspace(-1, 1, 64).reshape(8, 8)}
    figure = explanation_figure(np.zeros((8, 8, 3)), signed, signed=True)
    (bar,) = _colour_bars(figure)
    assert bar.get_ylim() == (-1.0, 1.0)
    text = _texts(figure)
    assert "S-Grad-CAM" in text and "against" in text and "for" in text and "0 = no evidence" in text
    assert "FS-Grad-CAM" in _texts(explanation_figure(np.zeros((8, 8, 3)), signed, signed=True, scaled="FS-"))
    assert map_title("FS-S-layercam") == "FS-S-LayerCAM"


def test_differences_are_drawn_under_the_maps_that_compare_with_the_share_that_moved():
    base, finer = _maps(1), _maps(2)[:1]
    shift = mass_shift(base, finer, common_units=True)
    figure = explanation_figure(
        np.zeros((8, 8, 3)),
        {"gradcam": base[0], "finer-gradcam": finer[0]},
        differences={"finer-gradcam": ("gradcam", shift)},
    )
    text = _texts(figure)
    assert "Finer-CAM (Grad-CAM) - Grad-CAM" in text
    assert f"moved {float(shift.moved[0]) * 100:.0f}% of the mass" in text
    assert f"removed {float(shift.removed[0]) * 100:.0f}% of Grad-CAM's evidence" in text
    assert sorted(bar.get_ylim() for bar in _colour_bars(figure)) == [(-1.0, 1.0), (0.0, 1.0)]


def test_demo_classic_overview_has_row_and_column_labels_and_names_the_model():
    images = [np.zeros((8, 8, 3)), np.ones((8, 8, 3))]
    figure = overview_figure(images, {"gradcam": _maps(2), "layercam": _maps(2)}, ["chelsea\ntabby 17%", "coffee"])
    text = _texts(figure)
    for piece in ("input", "Grad-CAM", "LayerCAM", "chelsea", "coffee", "model efficientnet_lite0"):
        assert piece in text, (piece, text)
    assert len(_colour_bars(figure)) == 1


def test_headed_plots_keep_the_heading_clear_of_the_titles():
    figure = new_figure((5, 3))
    axis = figure.subplots()
    axis.set_title("distribution over 6 images (30000 values)")
    headed(
        figure,
        "torchvision:resnet18 (random weights: not a trained model) on /a/long/folder/of/test/images | layer layer4",
        warning=True,
    )
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    heading = figure._suptitle.get_window_extent(renderer)
    title = axis.title.get_window_extent(renderer)
    assert heading.y0 > title.y1, (heading, title)  # no overlap
    assert figure._suptitle.get_color() == "firebrick"


def _tiny_analysis(classes: int, present: list[int]):
    import camscope
    from conftest import TinyCNN

    model = TinyCNN(classes=classes).eval()
    x = torch.randn(2 * len(present), 3, 12, 12, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor(present * 2)
    return camscope.analyze(model, [(x, labels)], layer="features", explain="true", progress=False)


def test_the_importance_matrix_shows_only_the_classes_present():
    analysis = _tiny_analysis(1000, [3, 281])
    names = [f"name {i}" for i in range(1000)]
    figure = importance_heatmap(analysis, class_names=names)
    axis = figure.axes[0]
    assert axis.images[0].get_array().shape[1] == 2
    assert [label.get_text() for label in axis.get_xticklabels()] == ["name 3", "name 281"]
    assert "the 2 with samples" in axis.get_xlabel()


@pytest.fixture(scope="module")
def every_figure():
    """One of each figure camscope draws, on tiny inputs."""
    image = Photo(np.full((8, 12, 3), 0.5, dtype=np.float32), top=0, left=2, size=8)  # a wide photo, a square crop
    base, compared = _maps(1), _maps(2)[:1]
    shift = mass_shift(base, compared, common_units=True)
    analysis = _tiny_analysis(5, [0, 1, 2])
    from camscope.metrics.consistency import consistency
    from conftest import TinyCNN

    torch.manual_seed(0)
    results = consistency(
        TinyCNN(classes=5).eval(),
        [(torch.randn(6, 3, 12, 12), torch.tensor([0, 1, 2] * 2))],
        layer="features",
        scale=[None, analysis],
        progress=False,
    )
    crop = np.full((8, 8, 3), 0.5)
    return {
        "explain": explanation_figure(crop, {"gradcam": base[0], "finer-gradcam": compared[0]}, [("tabby", 0.5)], title="a very long file name of a photo of a cat.png", explained="tabby 50%", layer="layer4", model="m", differences={"finer-gradcam": ("gradcam", shift)}),
        "overview": overview_grid([image], [OverviewColumn("Grad-CAM", torch.rand(1, 8, 8), ["tabby 17%"]), OverviewColumn("what changed", shift.display((8, 8)), ["moved 5%"], kind="difference"), OverviewColumn("S-CAM", torch.rand(1, 8, 8) * 2 - 1, ["tabby"], kind="signed")], ["chelsea"], heading="model m"),
        "comparison": comparison_grid(image, [Comparison("vs d", base[0], "Grad-CAM: c", compared[0], "Finer-CAM: c vs d", shift, "Grad-CAM")], heading="model m"),
        "finer": finer_figure(crop, base[0], compared[0], method="finer-gradcam", explained="tiger cat 39%", references=[("Egyptian cat", 0.36)], shift=shift, predictions=[("tiger cat", 0.39)], model="m", layer="l"),
        "prompts": prompts_figure(crop, [PromptRow("red epaulets", 0.7, base[0], compared[0], ["bird"], shift)], method="gradcam", model="clip", layer="l"),
        "heatmap": headed(importance_heatmap(analysis, class_names=["a", "b", "c", "d", "e"]), "m on data | layer l"),
        "lines": headed(importance_lines(analysis, cls=1), "m on data | layer l"),
        "consistency": headed(consistency_scatter(results), "m on data | layer l"),
        "distribution": headed(distribution_plot(analysis), "m on data | layer l"),
    }  # fmt: skip


def test_no_text_is_smaller_than_the_smallest_readable_size(every_figure):
    for name, figure in every_figure.items():
        assert _smallest_font(figure) >= MIN_FONT, name


def test_every_figure_with_maps_names_the_model_and_writes_methods_as_people_do(every_figure):
    for name in ("explain", "overview", "comparison", "finer", "prompts", "heatmap", "lines", "consistency"):
        text = _texts(every_figure[name])
        assert "model m" in text or "m on data" in text or "model clip" in text, (name, text)
        assert "gradcam" not in text, (name, text)
    assert "Finer-CAM (Grad-CAM): tiger cat 39%" in _texts(every_figure["finer"])  # the explained class
    assert "S-Grad-CAM" in _texts(every_figure["consistency"])
