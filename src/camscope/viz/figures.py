"""Overlays and figures.

Figures are built with matplotlib's object-oriented API (:class:`matplotlib.figure.Figure`
drawn by the Agg canvas), so importing camscope never selects a matplotlib backend and
no window is ever opened.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from camscope.io import atomic_write_bytes
from camscope.models.preprocessing import Photo

__all__ = [
    "Picture",
    "colorbar",
    "explanation_figure",
    "framed",
    "map_colormap",
    "new_figure",
    "overlay",
    "save_figure",
    "save_image",
]

#: What figures draw on: the model's crop (``[H, W, 3]`` RGB in [0, 1]) or a whole :class:`Photo`.
Picture = np.ndarray | torch.Tensor | Photo

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

    Args:
        image: ``[H, W, 3]`` RGB in [0, 1] (the model's crop, the size of the map), or a
            :class:`Photo`: the map is then blended over its crop's place in the whole photo,
            and the rest of the photo, which the model did not see, is faded.
        cam: ``[H, W]``: in [0, 1], or in [-1, 1] when ``signed`` (S-CAMs).
        alpha: weight of the map's colours.
        cmap: colormap; default ``jet`` for [0, 1] maps and the diverging
            ``RdBu_r`` (zero is white) for signed maps.
        signed: the map keeps negative evidence in [-1, 1].

    Returns:
        ``[H, W, 3]`` RGB in [0, 1] (the whole photo's size for a :class:`Photo`).
    """
    if isinstance(image, Photo):
        shown = framed(image)
        rows, columns = slice(image.top, image.top + image.size), slice(image.left, image.left + image.size)
        shown[rows, columns] = overlay(image.crop, cam, alpha, cmap, signed)
        return shown
    image, cam = _to_numpy(image), _to_numpy(cam)
    if image.shape[:2] != cam.shape:
        raise ValueError(f"image {image.shape[:2]} and map {cam.shape} differ in size")
    colours = map_colormap(signed, cmap)[0]
    values = (np.clip(cam, -1, 1) + 1) / 2 if signed else np.clip(cam, 0, 1)
    heat = colours(values)[..., :3]
    return np.clip((1 - alpha) * image + alpha * heat, 0, 1)


def map_colormap(signed: bool = False, cmap: str | None = None) -> tuple[Any, float, float]:
    """The colormap and value range of maps: ``jet`` over [0, 1], or the diverging ``RdBu_r`` over [-1, 1] centred on 0."""
    return matplotlib.colormaps[cmap or ("RdBu_r" if signed else "jet")], (-1.0 if signed else 0.0), 1.0


def colorbar(figure: Figure, axes: Any, signed: bool = False, label: str | None = None, cax: Any = None) -> Any:
    """A colour bar of the overlays' colormap next to ``axes`` (one axis or a list), or in the axis ``cax``.

    Signed maps (S-CAMs, raw maps) get the diverging colormap centred on 0, with its ends
    labelled as negative and positive evidence.

    Example:
        >>> figure = new_figure((2, 2))
        >>> bar = colorbar(figure, figure.add_subplot(), signed=True)
        >>> [float(v) for v in bar.ax.get_ylim()]
        [-1.0, 1.0]
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    colours, low, high = map_colormap(signed)
    mappable = ScalarMappable(norm=Normalize(low, high), cmap=colours)
    if cax is not None:
        bar = figure.colorbar(mappable, cax=cax)
    else:
        bar = figure.colorbar(mappable, ax=axes, fraction=0.03, pad=0.02)
    if signed:
        bar.set_ticks([-1.0, 0.0, 1.0])
        bar.set_ticklabels(["-1 against", "0", "+1 for"])
    bar.set_label(label or ("signed map (0 = no evidence)" if signed else "map value"), fontsize=7)
    bar.ax.tick_params(labelsize=6)
    return bar


def save_image(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Save an ``[H, W, 3]`` RGB image (float in [0, 1] or ``uint8``) as PNG, atomically."""
    from PIL import Image

    if rgb.dtype != np.uint8:
        rgb = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def save_figure(path: str | os.PathLike[str], figure: Figure, dpi: int = 100) -> Path:
    """Save a figure as PNG, atomically, and release it (pyplot figures are closed).

    Example:
        >>> import tempfile, pathlib
        >>> figure = new_figure((1, 1))
        >>> path = save_figure(pathlib.Path(tempfile.mkdtemp()) / "empty.png", figure)
        >>> path.read_bytes()[:4]
        b'\\x89PNG'
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        # Only a figure made by pyplot is registered there; closing any other is a no-op.
        pyplot.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())


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
) -> Figure:
    """The image, its top predictions, one overlay per map side by side, and a colour bar.

    Args:
        image: ``[H, W, 3]`` RGB in [0, 1], or a :class:`Photo` (the maps are drawn in its crop's place).
        maps: method name -> ``[H, W]`` map.
        predictions: the top classes, ``(name, probability)``.
        title: the input's name.
        signed: the maps are signed (S-CAMs): diverging colormap centred on 0.
        explained: the explained class with its probability (e.g. ``"tabby 17.0%"``).
        layer: the explained layer.
        note: a warning shown under the title (e.g. random weights).
        explained_by: per map, what it explains (replaces ``explained`` for that map).
    """
    columns = 1 + len(maps)
    titles = {name: (explained_by or {}).get(name, explained) for name in maps}
    lines = max([1 + title.count("\n") + bool(title) for title in titles.values()] or [1])
    extra = 0.16 * max(0, lines - 2)
    shown = framed(image)
    aspect = min(max(shown.shape[1] / shown.shape[0], 0.5), 2.5)  # a wide photo gets wider columns
    figure = new_figure((2.6 * aspect * columns + 0.6, 3.4 + extra))
    axes = figure.subplots(1, columns, squeeze=False)[0]
    axes[0].imshow(shown)
    axes[0].set_title(title or "input", fontsize=9)
    if predictions:
        text = "\n".join(f"{p * 100:5.1f}%  {name[:22]}" for name, p in predictions)
        axes[0].text(
            0.02, -0.04, text, transform=axes[0].transAxes, va="top", ha="left", fontsize=7, family="monospace"
        )
    for axis, (name, cam) in zip(axes[1:], maps.items()):
        axis.imshow(overlay(image, cam, signed=signed))
        axis.set_title(f"{name}\n{titles[name]}" if titles[name] else name, fontsize=8)
    for axis in axes:
        axis.axis("off")
    heading = " | ".join(part for part in (f"layer {layer}" if layer else "", note) if part)
    if heading:
        figure.suptitle(heading, fontsize=8, color="firebrick" if note else "black")
        figure.subplots_adjust(top=0.93 - 0.03 * lines * 3.4 / (3.4 + extra))
    colorbar(figure, list(axes[1:]) or axes[0], signed=signed)
    return figure


def __getattr__(name: str) -> Any:
    # Old import path: evaluation.runner imports ``plt`` from here until it builds its figures with new_figure.
    if name == "plt":
        import matplotlib.pyplot

        return matplotlib.pyplot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
