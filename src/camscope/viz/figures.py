"""Overlays and figures.

Figures are built with matplotlib's object-oriented API (:class:`matplotlib.figure.Figure`
drawn by the Agg canvas), so importing camscope never selects a matplotlib backend and
no window is ever opened.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from camscope.io import atomic_write_bytes
from camscope.models.preprocessing import Photo
from camscope.viz.compare import MassShift
from camscope.viz.style import MIN_FONT, SIGNED_CMAP, FigureStyle, shorten, wrap

__all__ = [
    "DIFFERENCE_LABEL",
    "Picture",
    "colorbar",
    "explanation_figure",
    "framed",
    "headed",
    "map_colormap",
    "map_title",
    "new_figure",
    "overlay",
    "save_figure",
    "save_image",
    "signed_blend",
]

#: What figures draw on: the model's crop (``[H, W, 3]`` RGB in [0, 1]) or a whole :class:`Photo`.
Picture = np.ndarray | torch.Tensor | Photo

_SVG_LOCK = threading.Lock()

# Outside the model's crop the photo is faded this much towards white.
_FADE = 0.55


def new_figure(figsize: tuple[float, float] = (6.4, 4.8)) -> Figure:
    """A figure drawn by the Agg canvas, independent of pyplot and of the user's backend.

    Example:
        >>> figure = new_figure((2, 2))
        >>> axis = figure.add_subplot()
        >>> type(figure.canvas).__name__
        'FigureCanvasAgg'
    """
    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure


def _to_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().float().cpu().numpy()
    return np.asarray(array, dtype=np.float32)


def framed(image: Picture) -> np.ndarray:
    """The picture to show: a :class:`Photo` whole, faded outside the model's crop; a crop as it is.

    Example:
        >>> import numpy as np
        >>> from camscope.models.preprocessing import Photo
        >>> photo = Photo(np.zeros((4, 6, 3), dtype=np.float32), top=0, left=1, size=4)
        >>> [round(float(v), 2) for v in framed(photo)[0, :, 0]]  # columns 0 and 5 lie outside the crop
        [0.55, 0.0, 0.0, 0.0, 0.0, 0.55]
    """
    if not isinstance(image, Photo):
        return _to_numpy(image)
    shown = image.image * (1 - _FADE) + _FADE
    rows, columns = slice(image.top, image.top + image.size), slice(image.left, image.left + image.size)
    shown[rows, columns] = image.crop
    return shown


def overlay(
    image: Picture,
    cam: np.ndarray | torch.Tensor,
    alpha: float = 0.5,
    cmap: str | None = None,
    signed: bool = False,
) -> np.ndarray:
    """Blend a map over an RGB image.

    A [0, 1] map is blended with the weight ``alpha`` everywhere, in the colour map ``cmap``
    (default ``jet``, :data:`camscope.viz.style.DEFAULT_CMAP`). A signed map (S-CAMs,
    differences) is drawn over the photo in grey, in the diverging ``RdBu_r`` (red for, blue
    against), with an opacity that grows with ``|value|``: zero shows the photo, and weak
    negative evidence stays visible (:func:`signed_blend`).

    Args:
        image: ``[H, W, 3]`` RGB in [0, 1] (the model's crop, the size of the map), or a
            :class:`Photo`: the map is then blended over its crop's place in the whole photo,
            and the rest of the photo, which the model did not see, is faded.
        cam: ``[H, W]``: in [0, 1], or in [-1, 1] when ``signed``.
        alpha: weight of the map's colours ([0, 1] maps).
        cmap: colour map of [0, 1] maps (signed maps always use the diverging one).
        signed: the map keeps negative evidence in [-1, 1].

    Returns:
        ``[H, W, 3]`` RGB in [0, 1] (the whole photo's size for a :class:`Photo`).

    Example:
        >>> import numpy as np
        >>> grey = np.full((1, 2, 3), 0.5)
        >>> overlay(grey, np.array([[0.0, -1.0]]), signed=True).round(2).tolist()  # 0: the photo in grey
        [[[0.58, 0.58, 0.58], [0.05, 0.21, 0.39]]]
    """
    if isinstance(image, Photo):
        shown = framed(image)
        rows, columns = slice(image.top, image.top + image.size), slice(image.left, image.left + image.size)
        shown[rows, columns] = overlay(image.crop, cam, alpha, cmap, signed)
        return shown
    image, cam = _to_numpy(image), _to_numpy(cam)
    if image.shape[:2] != cam.shape:
        raise ValueError(f"image {image.shape[:2]} and map {cam.shape} differ in size")
    if signed:
        return signed_blend(image.mean(axis=-1, keepdims=True) * (1 - _GREY_LIFT) + _GREY_LIFT, cam)
    heat = map_colormap(False, cmap)[0](np.clip(cam, 0, 1))[..., :3]
    return np.clip((1 - alpha) * image + alpha * heat, 0, 1)


# A signed map's colour starts this far from the diverging map's white centre (so that weak
# evidence has a hue), and its opacity is 0.95 |v| ** 0.6 (weak values stay visible).
_SIGNED_OFFSET, _SIGNED_OPACITY, _SIGNED_GAMMA = 0.25, 0.95, 0.6
# The photo under a signed map is grey, lifted this much towards white (red and blue read on it).
_GREY_LIFT = 0.15


def signed_blend(background: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A signed map in [-1, 1] over ``background`` (``[..., 3]`` or ``[..., 1]``): hue = sign, opacity and depth = magnitude.

    The colour of ``v`` is ``RdBu_r`` at ``0.5 + sign(v) (0.25 + 0.25 |v|)`` and its opacity ``0.95 |v| ** 0.6``.
    """
    values = np.clip(np.nan_to_num(values), -1, 1)
    magnitude = np.abs(values)
    colours = matplotlib.colormaps[SIGNED_CMAP](
        0.5 + np.sign(values) * (_SIGNED_OFFSET + (0.5 - _SIGNED_OFFSET) * magnitude)
    )[..., :3]
    weight = (_SIGNED_OPACITY * magnitude**_SIGNED_GAMMA)[..., None]
    return np.clip((1 - weight) * background + weight * colours, 0, 1)


def map_colormap(signed: bool = False, cmap: str | None = None) -> tuple[Any, float, float]:
    """The colour map of the colour bars and their value range.

    [0, 1] maps: ``cmap`` (default ``jet``) over [0, 1]. Signed maps: the colours :func:`signed_blend`
    gives a mid-grey pixel, over [-1, 1] centred on 0.
    """
    if signed:
        values = np.linspace(-1, 1, 256)
        colours = signed_blend(np.full((256, 3), 0.6), values)
        return ListedColormap(colours, name="signed overlay"), -1.0, 1.0
    return FigureStyle(cmap=cmap).colormap(), 0.0, 1.0


def colorbar(
    figure: Figure,
    axes: Any,
    signed: bool = False,
    label: str | None = None,
    cax: Any = None,
    *,
    cmap: str | None = None,
    ends: tuple[str, str] = ("against", "for"),
    numbered: bool = True,
    orientation: str = "vertical",
) -> Any:
    """A colour bar of the overlays' colours next to ``axes`` (one axis or a list), or in the axis ``cax``.

    Signed maps (S-CAMs, raw maps, differences) get the diverging colours centred on 0, their ends
    labelled ``ends`` (negative, positive), after -1 and +1 when ``numbered``.

    Example:
        >>> figure = new_figure((2, 2))
        >>> bar = colorbar(figure, figure.add_subplot(), signed=True)
        >>> [float(v) for v in bar.ax.get_ylim()], [t.get_text() for t in bar.ax.get_yticklabels()]
        ([-1.0, 1.0], ['-1 against', '0', '+1 for'])
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    colours, low, high = map_colormap(signed, cmap)
    mappable = ScalarMappable(norm=Normalize(low, high), cmap=colours)
    if cax is not None:
        bar = figure.colorbar(mappable, cax=cax, orientation=orientation)
    else:
        bar = figure.colorbar(mappable, ax=axes, fraction=0.03, pad=0.02, orientation=orientation)
    if signed:
        bar.set_ticks([-1.0, 0.0, 1.0])
        bar.set_ticklabels([f"-1 {ends[0]}", "0", f"+1 {ends[1]}"] if numbered else [ends[0], "0", ends[1]])
    else:
        bar.set_ticks([0.0, 0.5, 1.0])
    if orientation == "vertical":
        bar.ax.yaxis.set_label_position("right")  # beside its ticks, away from the maps
    bar.set_label(label or ("signed map (0 = no evidence)" if signed else "map value"), fontsize=MIN_FONT)
    bar.ax.tick_params(labelsize=MIN_FONT)
    return bar


def save_image(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Save an ``[H, W, 3]`` RGB image (float in [0, 1] or ``uint8``) as PNG, atomically."""
    from PIL import Image

    if rgb.dtype != np.uint8:
        rgb = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def save_figure(
    path: str | os.PathLike[str], figure: Figure, dpi: int | None = None, *, style: FigureStyle | None = None
) -> Path:
    """Save a figure atomically and release it (pyplot figures are closed).

    The format and resolution are the ``style``'s; without one, the format follows the path's suffix
    (``.pdf``, ``.svg``, else PNG) at ``dpi`` (default 100). Vector files carry no creation date and
    fixed element ids, so that the same figure gives the same bytes.

    Example:
        >>> import tempfile, pathlib
        >>> figure = new_figure((1, 1))
        >>> path = save_figure(pathlib.Path(tempfile.mkdtemp()) / "empty.png", figure)
        >>> path.read_bytes()[:4]
        b'\\x89PNG'
    """
    if style is None:
        suffix = Path(path).suffix.lower().lstrip(".")
        style = FigureStyle(format=suffix if suffix in ("pdf", "svg") else "png", dpi=dpi or 100)
    buffer = io.BytesIO()
    metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(style.format)  # no date inside
    if style.format == "svg":
        # SVG element ids are random unless salted: a fixed salt gives the same file for the same figure. The salt
        # is a global setting, so one SVG is saved at a time and the setting is restored after it.
        with _SVG_LOCK, matplotlib.rc_context({"svg.hashsalt": "camscope"}):
            figure.savefig(buffer, format="svg", dpi=style.dpi, bbox_inches="tight", metadata=metadata)
    else:
        figure.savefig(buffer, format=style.format, dpi=style.dpi, bbox_inches="tight", metadata=metadata)
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        # Only a figure made by pyplot is registered there; closing any other is a no-op.
        pyplot.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())


def map_title(method: str, scaled: str = "") -> str:
    """A map's title: the method as people write it, after the prefix of a common scale (``S-``, ``FS-``).

    Prefixes already in ``method`` (``S-gradcam``, ``FS-S-gradcam``, as the consistency metric names its
    variants) are kept.

    Example:
        >>> map_title("gradcampp"), map_title("gradcam", "S-"), map_title("FS-S-gradcam"), map_title("my map")
        ('Grad-CAM++', 'S-Grad-CAM', 'FS-S-Grad-CAM', 'my map')
    """
    from camscope.engine.method import display_name

    prefix = ""
    while method.startswith(("S-", "FS-")):
        head, method = method.split("-", 1)
        prefix += head + "-"
    return f"{scaled}{prefix}{display_name(method)}"


def headed(figure: Figure, heading: str, warning: bool = False) -> Figure:
    """Write ``heading`` (the model, the data, the layer) above a figure's plots, in red for a ``warning``.

    The heading is wrapped at word boundaries to the figure's width, and the plots are laid out again
    below it, so that it never overlaps their titles.

    Example:
        >>> figure = new_figure((4, 3))
        >>> _ = figure.subplots().set_title("distribution")
        >>> headed(figure, "resnet18 on test/ | layer layer4")._suptitle.get_text()
        'resnet18 on test/ | layer layer4'
    """
    if not heading:
        return figure
    width, height = figure.get_size_inches()
    text = wrap(heading, int(width * 13), lines=3)
    figure.suptitle(
        text, fontsize=MIN_FONT + 1, color="firebrick" if warning else "black", y=1 - 0.05 / height, va="top"
    )
    figure.tight_layout(rect=(0, 0, 1, 1 - (0.18 * (text.count("\n") + 1) + 0.08) / height))
    return figure


def explanation_figure(
    image: Picture,
    maps: dict[str, np.ndarray | torch.Tensor],
    predictions: Sequence[tuple[str, float]] = (),
    title: str = "",
    signed: bool = False,
    *,
    explained: str = "",
    layer: str = "",
    note: str = "",
    explained_by: dict[str, str] | None = None,
    model: str = "",
    scaled: str | None = None,
    differences: Mapping[str, tuple[str, MassShift]] | None = None,
    style: FigureStyle | None = None,
) -> Figure:
    """The image, its top predictions, one overlay per map side by side, and a colour bar.

    With ``differences``, a second row shows under each map that compares what it changed
    against its base map (:mod:`camscope.viz.compare`): red where it put more of the map's mass,
    blue where it took mass away, captioned with the share of the mass that moved.

    Args:
        image: ``[H, W, 3]`` RGB in [0, 1], or a :class:`Photo` (the maps are drawn in its crop's place).
        maps: method name -> ``[H, W]`` map; titled as people write the method (``Grad-CAM++``).
        predictions: the top classes, ``(name, probability)``.
        title: the input's name.
        signed: the maps are signed (S-CAMs): diverging colours centred on 0.
        explained: the explained class with its probability (e.g. ``"tabby 17.0%"``).
        layer: the explained layer.
        note: a warning shown under the title (e.g. random weights).
        explained_by: per map, what it explains (replaces ``explained`` for that map).
        model: the model, named in the heading.
        scaled: the prefix of signed maps' titles (default ``"S-"``; ``"FS-"`` for feature-selected maps).
        differences: per compared map, its base map's name and the :class:`MassShift` of this image (one sample).
        style: the colour map of [0, 1] maps.
    """
    differences = {name: pair for name, pair in (differences or {}).items() if name in maps}
    prefix = ("S-" if scaled is None else scaled) if signed else ""
    shown = framed(image)
    aspect = min(max(shown.shape[1] / shown.shape[0], 0.5), 2.5)  # a wide photo gets wider columns
    width = max(2.6 * aspect, 2.4)
    fits = int(width * 12)  # characters of a title line at 9 pt that fit the column
    captions = {
        name: "\n".join(wrap(line, fits, lines=3) for line in (explained_by or {}).get(name, explained).splitlines())
        for name in maps
    }
    lines = max([1 + caption.count("\n") + bool(caption) for caption in captions.values()] or [1])
    rows = 2 if differences else 1
    cell = width * 0.92 / aspect  # the height of a picture at the column's width
    top = 0.3 + 0.17 * lines + 0.25  # the maps' titles and the heading (inches)
    between = 0.25 + 0.17 * 3  # the differences' titles
    bottom = 0.15 if differences or not predictions else 0.95  # room for the top classes under the input
    height = top + rows * cell + (rows - 1) * between + bottom
    figure = new_figure((width * (1 + len(maps)) + 1.0, height))
    figure.subplots_adjust(top=1 - top / height, bottom=bottom / height, hspace=between / cell, left=0.02, right=0.9)
    grid = figure.subplots(rows, 1 + len(maps), squeeze=False)
    axes = grid[0]
    axes[0].imshow(shown)
    axes[0].set_title(wrap(title or "input", 30), fontsize=MIN_FONT + 1)
    if predictions:
        text = "\n".join(f"{p * 100:5.1f}%  {shorten(name, 22)}" for name, p in predictions)
        where, y = (grid[1][0], 0.98) if differences else (axes[0], -0.04)
        where.text(0.02, y, text, transform=where.transAxes, va="top", ha="left", fontsize=MIN_FONT, family="monospace")
    cmap = style.cmap if style is not None else None
    for axis, (name, cam) in zip(axes[1:], maps.items()):
        axis.imshow(overlay(image, cam, signed=signed, cmap=cmap))
        heading = map_title(name, prefix)
        axis.set_title(f"{heading}\n{captions[name]}" if captions[name] else heading, fontsize=MIN_FONT + 1)
    if differences:
        _difference_row(figure, list(grid[1][1:]), image, list(maps), differences)
    for axis in grid.flat:
        axis.axis("off")
    heading = " | ".join(part for part in (model and f"model {model}", layer and f"layer {layer}", note) if part)
    if heading:
        figure.suptitle(heading, fontsize=MIN_FONT + 1, color="firebrick" if note else "black", y=1 - 0.08 / height)
    colorbar(figure, list(axes[1:]) or axes[0], signed=signed, cmap=cmap)
    return figure


def _difference_row(
    figure: Figure, axes: list[Any], image: Picture, names: list[str], differences: Mapping[str, tuple[str, MassShift]]
) -> None:
    """Under each map that compares, what it changed against its base map, captioned; and their colour bar."""
    for axis, name in zip(axes, names):
        if name not in differences:
            continue
        base, shift = differences[name]
        size = (image.size, image.size) if isinstance(image, Photo) else framed(image).shape[:2]
        axis.imshow(overlay(image, shift.display(size)[0], signed=True))
        caption = shift.caption(base=map_title(base))
        axis.set_title(f"{map_title(name)} - {map_title(base)}\n{caption}", fontsize=MIN_FONT + 1)
    label = wrap(DIFFERENCE_LABEL, 30)
    colorbar(figure, axes, signed=True, ends=("lost", "gained"), numbered=False, label=label)


#: The colour bar of difference panels.
DIFFERENCE_LABEL = "share of the map's mass (scaled to the largest change)"


def __getattr__(name: str) -> Any:
    # Old import path: evaluation.runner imports ``plt`` from here until it builds its figures with new_figure.
    if name == "plt":
        import matplotlib.pyplot

        return matplotlib.pyplot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
