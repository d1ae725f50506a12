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

import textwrap
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
