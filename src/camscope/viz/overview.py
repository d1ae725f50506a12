"""A labelled grid of maps: rows are images, columns are methods, every cell says what it shows.

``camscope demo`` draws its overview with it: Grad-CAM, Finer-CAM against the model's next
classes, DiffCAM against the other photos and an S-CAM on a scale fitted over the photos.

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

import numpy as np
import torch
from matplotlib.figure import Figure

from camscope.viz.figures import Picture, colorbar, framed, new_figure, overlay

__all__ = ["OverviewColumn", "overview_grid"]


@dataclass
class OverviewColumn:
    """One column of :func:`overview_grid`: a title, one map per image ``[N, H, W]`` and one caption per image.

    ``signed`` maps (S-CAMs) are in [-1, 1] and drawn with the diverging colormap.
    """

    title: str
    maps: torch.Tensor | np.ndarray
    captions: Sequence[str]
    signed: bool = False


def overview_grid(
    images: Sequence[Picture], columns: Sequence[OverviewColumn], row_labels: Sequence[str], cell: float = 1.9
) -> Figure:
    """Rows: the images (labelled); columns: the input and one overlay per column, each cell captioned.

    Images may be whole :class:`~camscope.models.Photo` objects: maps are drawn in their crop's place.

    One colour bar for the [0, 1] maps and, when a column is signed, one diverging bar for it
    (to the right of the grid, so that every cell keeps the same size).
    """
    count, rows = 1 + len(columns), len(images)
    bars = [signed for signed in (False, True) if any(c.signed == signed for c in columns)]
    width, height = cell * count + 0.3 + 0.9 * len(bars), (cell * 0.93 + 0.22) * rows + 0.45
    figure = new_figure((width, height))
    right = (cell * count + 0.3) / width
    figure.subplots_adjust(
        left=0.2 / width, right=right, top=1 - 0.42 / height, bottom=0.3 / height, wspace=0.06, hspace=0.22
    )
    axes = figure.subplots(rows, count, squeeze=False)
    for row, (image, label) in enumerate(zip(images, row_labels)):
        axes[row][0].imshow(framed(image))
        axes[row][0].set_ylabel(label, fontsize=8)
        for index, column in enumerate(columns, start=1):
            axis = axes[row][index]
            axis.imshow(overlay(image, column.maps[row], signed=column.signed))
            axis.set_xlabel(column.captions[row], fontsize=6.5, labelpad=2)
    for index, title in enumerate(["input", *(column.title for column in columns)]):
        axes[0][index].set_title(title, fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    for position, signed in enumerate(bars):
        left = right + (0.12 + 0.9 * position) / width
        bar_axis = figure.add_axes((left, 0.25, 0.12 / width, 0.5))
        label = "S-CAM: common scale (0 = no evidence)" if signed else "map value (min-max per image)"
        colorbar(figure, None, signed=signed, label=label, cax=bar_axis)
    return figure
