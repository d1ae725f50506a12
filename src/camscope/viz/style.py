"""How figures are written and read: file format, resolution, colour map, and captions cut at word boundaries.

One :class:`FigureStyle` travels from the command line (``--format``, ``--dpi``, ``--cmap``) or the API
to every function that draws or saves a figure, so that every figure camscope writes honours it.

Example:
    >>> style = FigureStyle(format="pdf", dpi=300, cmap="viridis")
    >>> style.suffix, style.colormap().name
    ('.pdf', 'viridis')
    >>> shorten("military uniform", 12)
    'military…'
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

from camscope.errors import CamscopeError

__all__ = [
    "DEFAULT_CMAP",
    "FORMATS",
    "MIN_FONT",
    "SIGNED_CMAP",
    "FigureStyle",
    "layer_label",
    "model_label",
    "shorten",
    "wrap",
]

#: The file formats figures are saved in.
FORMATS = ("png", "pdf", "svg")

#: The colour map of [0, 1] maps when none is chosen: ``jet``, the convention of the CAM literature and the
#: peer libraries; ``--cmap turbo`` (jet's smooth successor) or ``viridis`` / ``inferno`` (perceptually
#: uniform) are drop-in choices.
DEFAULT_CMAP = "jet"

#: The diverging colour map of signed maps (S-CAMs, raw maps, differences): zero is white, red is for, blue against.
SIGNED_CMAP = "RdBu_r"

#: The smallest font size (points) of any text camscope draws: readable when the figure is printed at its saved size.
MIN_FONT = 8.0


@dataclass(frozen=True)
class FigureStyle:
    """How a figure is saved and coloured.

    Attributes:
        format: ``png`` (default), ``pdf`` or ``svg`` (vector: the overlays stay raster images inside).
        dpi: dots per inch of the saved figure (raster formats, and the raster images in a vector file).
        cmap: a matplotlib colour map for [0, 1] maps (default :data:`DEFAULT_CMAP`); signed maps always
            use the diverging :data:`SIGNED_CMAP`, which shows the sign.
    """

    format: str = "png"
    dpi: int = 100
    cmap: str | None = None

    def __post_init__(self) -> None:
        fmt = str(self.format).strip().lower().lstrip(".")
        if fmt not in FORMATS:
            raise CamscopeError(f"format={self.format!r} is not a figure format: choose {', '.join(FORMATS)}")
        object.__setattr__(self, "format", fmt)
        if isinstance(self.dpi, bool) or not isinstance(self.dpi, int) or not 20 <= self.dpi <= 1200:
            raise CamscopeError(f"dpi={self.dpi!r} is out of range: give a whole number from 20 to 1200")
        if self.cmap is not None and self.cmap not in matplotlib.colormaps:
            raise CamscopeError(
                f"cmap={self.cmap!r} is not a matplotlib colour map: choose one such as turbo, viridis, inferno or jet"
            )

    @property
    def suffix(self) -> str:
        """The file suffix of the format (``.png``, ``.pdf``, ``.svg``)."""
        return f".{self.format}"

    def colormap(self, signed: bool = False) -> Any:
        """The colour map of [0, 1] maps, or the diverging one of signed maps."""
        return matplotlib.colormaps[SIGNED_CMAP if signed else (self.cmap or DEFAULT_CMAP)]


def layer_label(layer: str | Sequence[str]) -> str:
    """A layer, or several, as a figure names them: names that differ in one number only are written once.

    The attention methods read every block's attention module, so their explanation's
    ``layer`` is a list as long as the model is deep; a heading that lists them all would be
    wider than the figure.

    Example:
        >>> layer_label("layer4"), layer_label(["layer3", "layer4.1"])
        ('layer4', 'layer3+layer4.1')
        >>> layer_label([f"blocks.{i}.attn" for i in range(12)]), layer_label(["blocks.1.attn", "blocks.5.attn"])
        ('blocks.{0-11}.attn', 'blocks.{1,5}.attn')
    """
    if isinstance(layer, str):
        return layer
    parts = [re.split(r"(\d+)", name) for name in layer]
    if len(parts) > 1 and len({len(p) for p in parts}) == 1:
        differ = [i for i in range(len(parts[0])) if len({p[i] for p in parts}) > 1]
        if len(differ) == 1 and differ[0] % 2 == 1:  # odd pieces of a split on numbers are the numbers
            at = differ[0]
            numbers = [int(p[at]) for p in parts]
            consecutive = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
            run = f"{numbers[0]}-{numbers[-1]}" if consecutive else ",".join(map(str, numbers))
            return "".join(parts[0][:at]) + "{" + run + "}" + "".join(parts[0][at + 1 :])
    return "+".join(layer)


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut at a word boundary and marked with ``…``; never mid-word.

    A first word longer than ``width`` is kept whole (a name is more useful than a stump).

    Example:
        >>> shorten("academic gown", 24), shorten("chocolate sauce, chocolate syrup", 16)
        ('academic gown', 'chocolate sauce…')
        >>> shorten("drilling platform, offshore rig", 10)
        'drilling…'
    """
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    words = text.split(" ")
    kept = words[0].rstrip(",;:")
    for word in words[1:]:
        longer = f"{kept} {word}".rstrip(",;:")
        if len(longer) + 1 > width:
            break
        kept = longer
    return kept + "…"


def wrap(text: str, width: int, lines: int = 2) -> str:
    """``text`` wrapped at word boundaries into at most ``lines`` lines of ``width`` characters (the last shortened).

    Example:
        >>> wrap("vs Egyptian cat, tabby, lynx", 18)
        'vs Egyptian cat,\\ntabby, lynx'
    """
    parts = textwrap.wrap(" ".join(str(text).split()), width, break_long_words=False, break_on_hyphens=False)
    if len(parts) > lines:
        parts = parts[: lines - 1] + [shorten(" ".join(parts[lines - 1 :]), width)]
    return "\n".join(parts)


def model_label(model: str, random: bool = False) -> str:
    """The model as a figure names it: its specification (``efficientnet_lite0``, ``torchvision:resnet50``).

    Example:
        >>> model_label("efficientnet_lite0"), model_label("torchvision:resnet18", random=True)
        ('model efficientnet_lite0', 'model torchvision:resnet18 (random weights)')
    """
    return f"model {model}" + (" (random weights)" if random else "")
