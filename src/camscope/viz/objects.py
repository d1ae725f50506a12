"""Figures of objects: a detector's boxes or a segmenter's regions, each with its own map.

Example:
    >>> import torch
    >>> from camscope.engine.objects import explain_objects
    >>> from camscope.data.small_models import scene_data
    >>> from camscope.models.scene_zoo import load_scene_model
    >>> scene = scene_data("scenes-detector", limit=1).images
    >>> found = explain_objects(load_scene_model("scenes-detector"), scene, ["gradcam"])
    >>> figure = objects_figure(scene[0].permute(1, 2, 0), found, load_scene_model("scenes-detector").class_names,
    ...                         model="camscope:scenes-detector")
    >>> len(figure.axes) >= 1 + len(found)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from camscope.engine.method import display_name
from camscope.engine.objects import FoundObjects
from camscope.models.preprocessing import Photo
from camscope.viz.figures import Picture, colorbar, framed, new_figure, overlay

__all__ = ["objects_figure"]

# One colour per object, told apart on the jet colormap's blues and reds.
_EDGES = ("white", "magenta", "lime", "yellow", "cyan", "orange", "black", "pink")


def _offset(picture: Picture) -> tuple[int, int]:
    """Where the model's input lies in the picture: ``(left, top)``."""
    return (picture.left, picture.top) if isinstance(picture, Photo) else (0, 0)


def _outline(axis: object, found: FoundObjects, index: int, picture: Picture, number: bool) -> None:
    """Object ``index``'s box (detectors) or region's contour (segmenters), in its colour, numbered."""
    left, top = _offset(picture)
    colour = _EDGES[index % len(_EDGES)]
    x0, y0, x1, y1 = (float(v) for v in found.boxes[index])
    if found.regions is not None:
        shown = framed(picture)
        region = np.zeros(shown.shape[:2], dtype=np.float32)
        mask = found.regions[index].numpy().astype(np.float32)
        region[top : top + mask.shape[0], left : left + mask.shape[1]] = mask
        axis.contour(region, levels=[0.5], colors=[colour], linewidths=1.2)  # type: ignore[attr-defined]
    else:
        axis.add_patch(  # type: ignore[attr-defined]
            Rectangle((x0 + left - 0.5, y0 + top - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5)
        )
    if number:
        axis.text(  # type: ignore[attr-defined]
            x0 + left, y0 + top - 1, str(index + 1), color="black", fontsize=7, va="bottom",
            bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.8},
        )  # fmt: skip


def objects_figure(
    picture: Picture,
    found: FoundObjects,
    class_names: Sequence[str],
    *,
    model: str = "",
    title: str = "",
    layer: str = "",
    note: str = "",
    cmap: str | None = None,
) -> Figure:
    """The image with every object outlined and numbered, then one row per method of each object's map.

    Column ``m + 1`` is object ``m``: its map (over the whole picture) with its box or region
    outlined, headed by its number, class and score (a detection's score; a region's mean
    probability of its class); each row is headed by the method.

    Args:
        picture: ``[H, W, 3]`` RGB in [0, 1] (the model's input) or a :class:`Photo`.
        found: objects with their maps (:func:`camscope.engine.objects.explain_objects`).
        class_names: names of the labels.
        model: the model's name; ``title``: the image's; ``layer``: the explained layer;
            ``note``: a warning (random weights), in red; ``cmap``: the maps' colour map (default jet).
    """
    methods = list(found.maps)
    count = len(found)
    rows, columns = max(1, len(methods)), 1 + count
    figure = new_figure((2.3 * columns + 0.8, 2.4 * rows + 0.7))
    axes = figure.subplots(rows, columns, squeeze=False)
    shown = framed(picture)
    axes[0][0].imshow(shown)
    for index in range(count):
        _outline(axes[0][0], found, index, picture, number=True)
    kind = "boxes" if found.task == "detect" else "regions"
    axes[0][0].set_title(
        f"{title or 'input'}\n{count} {kind}" if count else f"{title or 'input'}\nnothing found", fontsize=8
    )
    for row, method in enumerate(methods):
        maps = found.maps[method].maps
        for index in range(count):
            axis = axes[row][index + 1]
            axis.imshow(overlay(picture, maps[index], cmap=cmap))
            _outline(axis, found, index, picture, number=False)
            if row == 0:
                label = int(found.labels[index])
                name = class_names[label] if 0 <= label < len(class_names) else f"class {label}"
                axis.set_title(f"{index + 1}: {name[:26]}\nscore {float(found.scores[index]):.2f}", fontsize=8)
        axes[row][1 if count else 0].set_ylabel(display_name(method), fontsize=9)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_visible(False)
    for row in range(1, rows):
        axes[row][0].set_visible(False)
    what = "box: its detection's class score" if found.task == "detect" else "region: class logits summed over it"
    heading = " | ".join(part for part in (model, f"layer {layer}" if layer else "", what) if part)
    figure.suptitle(heading + (f"\n{note}" if note else ""), fontsize=8, color="firebrick" if note else "black")
    if count:
        colorbar(figure, [axes[r][c] for r in range(rows) for c in range(1, columns)], cmap=cmap)
    return figure
