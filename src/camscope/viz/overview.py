"""Labelled grids of maps, every cell captioned with what it shows.

* :func:`overview_grid`: rows are images, columns are maps (``camscope demo``'s overviews);
* :func:`comparison_grid`: one image, one column per comparison, and three rows: the base map, the
  map that compares, and what the comparison changed (``camscope demo``'s ``NAME.png__compare.png``,
  the README's first figure).

Maps are of three kinds: [0, 1] maps (``"map"``), signed maps on a common scale (``"signed"``, S-CAMs:
red for, blue against) and differences of two maps (``"difference"``, :mod:`camscope.viz.compare`: red
where a comparison put more of the map's mass, blue where it took mass away). Neighbouring maps of one
kind share a colour bar, drawn beside them.

Example:
    >>> import numpy as np, torch
    >>> column = OverviewColumn("Grad-CAM", torch.rand(2, 8, 8), ["tabby 17%", "espresso 95%"])
    >>> figure = overview_grid([np.zeros((8, 8, 3)), np.ones((8, 8, 3))], [column], ["chelsea", "coffee"])
    >>> len(figure.axes)  # 2 x 2 cells and one colour bar
    5
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from camscope.errors import CamscopeError
from camscope.viz.compare import MassShift
from camscope.viz.figures import DIFFERENCE_LABEL, Picture, colorbar, framed, new_figure, overlay
from camscope.viz.style import MIN_FONT, FigureStyle, wrap

__all__ = ["KINDS", "Comparison", "OverviewColumn", "comparison_grid", "overview_grid"]

#: The kinds of maps, and the label of their colour bar.
KINDS = {
    "map": "map value (min-max per image)",
    "signed": "S-CAM value on the common scale",
    "difference": DIFFERENCE_LABEL,
}

# Inches: the gap between cells, a caption line, and the space for the heading and the column titles.
_GAP, _LINE, _HEAD = 0.08, 0.17, 0.72


@dataclass
class OverviewColumn:
    """One column of :func:`overview_grid`: a title, one map per image ``[N, H, W]`` and one caption per image.

    ``kind``: ``"map"`` ([0, 1]), ``"signed"`` (S-CAMs in [-1, 1]) or ``"difference"`` (in [-1, 1]);
    ``signed=True`` alone means ``"signed"``.
    """

    title: str
    maps: torch.Tensor | np.ndarray
    captions: Sequence[str]
    signed: bool = False
    kind: str = ""

    def __post_init__(self) -> None:
        self.kind = self.kind or ("signed" if self.signed else "map")
        if self.kind not in KINDS:
            raise CamscopeError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        self.signed = self.kind != "map"


@dataclass
class Comparison:
    """One column of :func:`comparison_grid`: a map that compares, read against its base map.

    ``shift`` is :func:`camscope.viz.compare.mass_shift` of the two (one sample); the third cell shows
    its difference and is captioned with the share of the mass that moved (and the share of ``base_name``'s
    evidence removed, when the maps share units).
    """

    title: str
    base: torch.Tensor | np.ndarray
    base_caption: str
    compared: torch.Tensor | np.ndarray
    compared_caption: str
    shift: MassShift
    base_name: str = ""


def _ratio(image: Picture) -> float:
    """Height over width of the picture as drawn, kept within [0.45, 1.5] (cells stay usable)."""
    shown = framed(image)
    return float(min(max(shown.shape[0] / shown.shape[1], 0.45), 1.5))


def _lines(texts: Sequence[str]) -> int:
    return max((text.count("\n") + 1 for text in texts if text), default=1)


def _cells(figure: Figure, heights: Sequence[float], columns: int, cell: float, left: float, caption: float) -> Any:
    """Axes in rows of the given image heights (inches), each row followed by a caption band."""
    width, height = figure.get_size_inches()
    axes = np.empty((len(heights), columns), dtype=object)
    top = height - _HEAD
    for row, rows_height in enumerate(heights):
        top -= rows_height
        for column in range(columns):
            x = left + column * (cell + _GAP)
            axis = figure.add_axes((x / width, top / height, cell / width, rows_height / height))
            axis.set_xticks([])
            axis.set_yticks([])
            axes[row, column] = axis
        top -= caption
    return axes


def overview_grid(
    images: Sequence[Picture],
    columns: Sequence[OverviewColumn],
    row_labels: Sequence[str],
    cell: float = 1.9,
    *,
    heading: str = "",
    inputs: bool = True,
    style: FigureStyle | None = None,
) -> Figure:
    """Rows: the images (labelled); columns: the input (with ``inputs``) and one overlay per column, each cell captioned.

    Images may be whole :class:`~camscope.models.Photo` objects: maps are drawn in their crop's place.
    Each row is as tall as its picture at the cell's width. ``heading`` (the model, the layer) is written
    above the grid; ``style`` gives the colour map of [0, 1] maps. Under each run of neighbouring
    columns of one kind, a colour bar.
    """
    count = int(inputs) + len(columns)
    caption = _LINE * _lines([text for column in columns for text in column.captions]) + 0.12
    heights = [cell * _ratio(image) for image in images]
    left = 0.2 + 0.16 * _lines(row_labels)
    figure = new_figure((left + count * (cell + _GAP) + 0.1, _HEAD + sum(heights) + caption * len(images) + 0.85))
    axes = _cells(figure, heights, count, cell, left, caption)
    cmap = style.cmap if style is not None else None
    for row, (image, label) in enumerate(zip(images, row_labels)):
        axes[row, 0].set_ylabel(label, fontsize=MIN_FONT + 1)
        if inputs:
            axes[row, 0].imshow(framed(image))
        for index, column in enumerate(columns, start=int(inputs)):
            axes[row, index].imshow(overlay(image, column.maps[row], signed=column.signed, cmap=cmap))
            axes[row, index].set_xlabel(column.captions[row], fontsize=MIN_FONT, labelpad=2)
    for index, title in enumerate((["input"] if inputs else []) + [column.title for column in columns]):
        axes[0, index].set_title(title, fontsize=MIN_FONT + 1)
    if heading:
        figure.suptitle(heading, fontsize=MIN_FONT + 1, y=1 - 0.1 / figure.get_size_inches()[1], va="top")
    runs = [(kind, len(list(run))) for kind, run in groupby(column.kind for column in columns)]
    _bars_under(figure, list(axes[-1, int(inputs) :]), runs, cmap)
    return figure


def _bars_under(figure: Figure, bottom: Sequence[Any], runs: Sequence[tuple[str, int]], cmap: str | None) -> None:
    """One horizontal colour bar under each run of neighbouring columns of one kind, as wide as the run."""
    height = figure.get_size_inches()[1]
    position = 0
    for kind, span in runs:
        first, last = bottom[position].get_position(), bottom[position + span - 1].get_position()
        position += span
        inset = 0.2 * (first.x1 - first.x0)  # room between neighbouring bars for their end labels
        rect = (first.x0 + inset, 0.58 / height, last.x1 - first.x0 - 2 * inset, 0.09 / height)
        _bar(figure, figure.add_axes(rect), kind, cmap, "horizontal", 16 * span + 10)


def _bar(figure: Figure, axis: Any, kind: str, cmap: str | None, orientation: str, width: int) -> Any:
    ends = ("lost", "gained") if kind == "difference" else ("against", "for")
    label = wrap(KINDS[kind], width, lines=3)
    signed, numbered = kind != "map", kind != "difference"
    return colorbar(figure, None, signed, label, axis, cmap=cmap, ends=ends, numbered=numbered, orientation=orientation)


def comparison_grid(
    image: Picture,
    comparisons: Sequence[Comparison],
    *,
    heading: str = "",
    cell: float = 2.2,
    style: FigureStyle | None = None,
) -> Figure:
    """One image and several comparisons: per column the base map, the map that compares and what it changed.

    Rows (labelled on the left): the base maps, the maps that compare, the differences (red: more of
    the map's mass, blue: less; each scaled to its largest change), each captioned; a colour bar right
    of the maps and one right of the differences.
    """
    if not comparisons:
        raise CamscopeError("comparison_grid needs at least one comparison")
    count = len(comparisons)
    ratio = _ratio(image)
    captions = [c.base_caption for c in comparisons] + [c.compared_caption for c in comparisons]
    caption = _LINE * max(_lines(captions), 2) + 0.12
    heights = [cell * ratio] * 3
    figure = new_figure((0.75 + count * (cell + _GAP) + 1.2, _HEAD + sum(heights) + 3 * caption + 0.15))
    axes = _cells(figure, heights, count, cell, 0.75, caption)
    cmap = style.cmap if style is not None else None
    size = None
    for column, comparison in enumerate(comparisons):
        size = tuple(np.shape(comparison.base)[-2:])
        axes[0, column].imshow(overlay(image, comparison.base, cmap=cmap))
        axes[0, column].set_xlabel(comparison.base_caption, fontsize=MIN_FONT, labelpad=2)
        axes[0, column].set_title(comparison.title, fontsize=MIN_FONT + 1)
        axes[1, column].imshow(overlay(image, comparison.compared, cmap=cmap))
        axes[1, column].set_xlabel(comparison.compared_caption, fontsize=MIN_FONT, labelpad=2)
        axes[2, column].imshow(overlay(image, comparison.shift.display(size)[0], signed=True))
        axes[2, column].set_xlabel(comparison.shift.caption(base=comparison.base_name), fontsize=MIN_FONT, labelpad=2)
    for row, label in enumerate(("base map", "the map that\ncompares", "what the\ncomparison changed")):
        axes[row, 0].set_ylabel(label, fontsize=MIN_FONT + 1)
    if heading:
        figure.suptitle(heading, fontsize=MIN_FONT + 1, y=1 - 0.1 / figure.get_size_inches()[1], va="top")
    _bars_beside(figure, axes, cmap)
    return figure


def _bars_beside(figure: Figure, axes: Any, cmap: str | None) -> None:
    """A vertical colour bar right of the two rows of maps, and one right of the row of differences."""
    width = figure.get_size_inches()[0]
    right = axes[0, -1].get_position().x1 + 0.12 / width
    for kind, top, bottom in (("map", axes[0, -1], axes[1, -1]), ("difference", axes[2, -1], axes[2, -1])):
        low, high = bottom.get_position().y0, top.get_position().y1
        inset = 0.08 * (high - low)
        rect = (right, low + inset, 0.11 / width, high - low - 2 * inset)
        _bar(figure, figure.add_axes(rect), kind, cmap, "vertical", 22)
