"""Figures of Finer-CAM: a class (or a text prompt) against similar ones, next to its base map and what changed.

* :func:`finer_figure`: the input with its top classes, the base method's map of the explained class,
  the Finer map with the compared classes, and the difference of the two (:mod:`camscope.viz.compare`);
* :func:`prompts_figure`: the same per text prompt of a CLIP model (``camscope prompts``).

Both are drawn from maps, so any caller (``camscope explain``, ``camscope prompts``, a notebook) gives
the same figure.

Example:
    >>> import numpy as np, torch
    >>> from camscope.viz.compare import mass_shift
    >>> base, finer = torch.rand(1, 8, 8), torch.rand(1, 8, 8)
    >>> figure = finer_figure(
    ...     np.zeros((8, 8, 3)), base[0], finer[0], method="finer-gradcam", explained="tiger cat 39.3%",
    ...     references=[("Egyptian cat", 0.356)], shift=mass_shift(base, finer, common_units=True))
    >>> figure.axes[2].get_title().splitlines()[0]  # the input, the base map, the Finer map, ...
    'Finer-CAM (Grad-CAM): tiger cat 39.3%'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from camscope.viz.compare import MassShift
from camscope.viz.figures import DIFFERENCE_LABEL, Picture, colorbar, framed, map_title, new_figure, overlay
from camscope.viz.style import MIN_FONT, FigureStyle, shorten, wrap

__all__ = ["SHOWN_REFERENCES", "PromptRow", "finer_figure", "prompts_figure", "reference_list"]

#: A Finer figure lists at most this many compared classes, then one line for the rest.
SHOWN_REFERENCES = 8


def reference_list(references: Sequence[tuple[str, float]], shown: int = SHOWN_REFERENCES) -> str:
    """The compared classes under a Finer map: the first ``shown`` with their probabilities, then a summary line.

    Example:
        >>> rows = [(f"class {i}", 0.001) for i in range(300)]
        >>> reference_list(rows, shown=2).splitlines()
        ['versus', '  0.1%  class 0', '  0.1%  class 1', '+ 298 more classes (total 29.8%)']
    """
    lines = [f"{p * 100:5.1f}%  {shorten(name, 22)}" for name, p in references[:shown]]
    rest = references[shown:]
    if rest:
        lines.append(f"+ {len(rest)} more classes (total {sum(p for _, p in rest) * 100:.1f}%)")
    return "\n".join(["versus", *lines])


def _text_under(axis: object, text: str) -> None:
    axis.text(0.02, -0.04, text, transform=axis.transAxes, va="top", ha="left", fontsize=MIN_FONT, family="monospace")  # type: ignore[attr-defined]


def finer_figure(
    image: Picture,
    base: np.ndarray | torch.Tensor,
    finer: np.ndarray | torch.Tensor,
    *,
    method: str,
    explained: str,
    references: Sequence[tuple[str, float]],
    shift: MassShift,
    predictions: Sequence[tuple[str, float]] = (),
    gamma: float = 0.6,
    aggregate: str = "mean-before-relu",
    title: str = "",
    layer: str = "",
    model: str = "",
    note: str = "",
    style: FigureStyle | None = None,
) -> Figure:
    """The input, the base map, the Finer map and what Finer-CAM changed, for one image.

    Args:
        image: ``[H, W, 3]`` RGB in [0, 1] or a :class:`~camscope.models.Photo`.
        base: ``[H, W]`` the base method's map of the explained class.
        finer: ``[H, W]`` the Finer map.
        method: the Finer method (``finer-gradcam``), titled as people write it.
        explained: the explained class with its probability (``"tiger cat 39.3%"``).
        references: the compared classes with their probabilities.
        shift: the :class:`MassShift` of the base map to the Finer map (one sample).
        predictions: the top classes under the input.
        gamma, aggregate: Finer-CAM's options, in the Finer map's title.
        title, layer, model, note: the input's name; the heading (``note`` in red, e.g. random weights).
        style: the colour map of the maps.
    """
    cmap = style.cmap if style is not None else None
    figure = new_figure((12.4, 4.4))
    axes = figure.subplots(1, 6, width_ratios=[1, 1, 1, 0.05, 1, 0.05], squeeze=False)[0]
    figure.subplots_adjust(left=0.01, right=0.9, top=0.8, bottom=0.3, wspace=0.3)
    axes[0].imshow(framed(image))
    axes[0].set_title(wrap(title or "input", 30), fontsize=MIN_FONT + 1)
    if predictions:
        _text_under(axes[0], "\n".join(f"{p * 100:5.1f}%  {shorten(name, 22)}" for name, p in predictions))
    base_name = map_title(method[len("finer-") :] if method.startswith("finer-") else method)
    axes[1].imshow(overlay(image, base, cmap=cmap))
    axes[1].set_title(f"{base_name}:\n{explained}", fontsize=MIN_FONT + 1)
    axes[2].imshow(overlay(image, finer, cmap=cmap))
    versus = wrap("vs " + ", ".join(name for name, _ in references), 34)
    axes[2].set_title(f"{map_title(method)}: {explained}\n{versus}\n(gamma {gamma:g}, {aggregate})", fontsize=MIN_FONT)
    _text_under(axes[2], reference_list(references))
    size = tuple(np.shape(finer)[-2:])
    axes[4].imshow(overlay(image, shift.display(size)[0], signed=True))
    axes[4].set_title("what Finer-CAM changed\n(red: more of the mass, blue: less)", fontsize=MIN_FONT + 1)
    axes[4].text(
        0.5, -0.04, shift.caption(base=base_name), transform=axes[4].transAxes, va="top", ha="center", fontsize=MIN_FONT
    )
    for axis in (*axes[:3], axes[4]):
        axis.axis("off")
    heading = " | ".join(part for part in (model and f"model {model}", layer and f"layer {layer}", note) if part)
    figure.suptitle(heading, fontsize=MIN_FONT + 1, color="firebrick" if note else "black")
    colorbar(figure, None, cax=axes[3], cmap=cmap)
    label = wrap(DIFFERENCE_LABEL, 24, 3)
    colorbar(figure, None, signed=True, cax=axes[5], ends=("lost", "gained"), numbered=False, label=label)
    return figure


@dataclass
class PromptRow:
    """One prompt of :func:`prompts_figure`: its base map, and its Finer map against other prompts (if any)."""

    prompt: str
    probability: float
    base: np.ndarray | torch.Tensor
    finer: np.ndarray | torch.Tensor | None = None
    versus: Sequence[str] = ()
    shift: MassShift | None = None


def prompts_figure(
    image: Picture,
    rows: Sequence[PromptRow],
    *,
    method: str,
    gamma: float = 0.6,
    title: str = "",
    layer: str = "",
    model: str = "",
    style: FigureStyle | None = None,
) -> Figure:
    """Per text prompt: the input, the base map of the prompt, its Finer map against the other prompts, what changed."""
    cmap = style.cmap if style is not None else None
    shown = framed(image)
    row_height = 2.6 * min(max(shown.shape[0] / shown.shape[1], 0.45), 1.5) + 1.0  # the picture and its title
    height = row_height * len(rows) + 0.5
    figure = new_figure((12.4, height))
    axes = figure.subplots(len(rows), 6, width_ratios=[1, 1, 1, 0.05, 1, 0.05], squeeze=False)
    figure.subplots_adjust(
        left=0.01, right=0.9, top=1 - 0.95 / height, bottom=0.1 / height, wspace=0.3, hspace=1.0 / (row_height - 1.0)
    )
    for row, prompt in zip(axes, rows):
        row[0].imshow(shown)
        row[0].set_title(wrap(title or "input", 30), fontsize=MIN_FONT + 1)
        row[1].imshow(overlay(image, prompt.base, cmap=cmap))
        row[1].set_title(
            wrap(f"{map_title(method)}: '{prompt.prompt}' ({prompt.probability * 100:.1f}%)", 34, 3),
            fontsize=MIN_FONT + 1,
        )
        if prompt.finer is not None:
            row[2].imshow(overlay(image, prompt.finer, cmap=cmap))
            versus = ", ".join(f"'{text}'" for text in prompt.versus)
            row[2].set_title(wrap(f"Finer-CAM: '{prompt.prompt}' vs {versus}", 34, 3), fontsize=MIN_FONT + 1)
        if prompt.shift is not None:
            size = tuple(np.shape(prompt.base)[-2:])
            row[4].imshow(overlay(image, prompt.shift.display(size)[0], signed=True))
            row[4].set_title(
                "what Finer-CAM changed\n" + prompt.shift.caption(base=map_title(method)), fontsize=MIN_FONT + 1
            )
        for axis in (*row[:3], row[4]):
            axis.axis("off")
        colorbar(figure, None, cax=row[3], cmap=cmap)
        if prompt.shift is not None:
            label = wrap(DIFFERENCE_LABEL, 24, 3)
            colorbar(figure, None, signed=True, cax=row[5], ends=("lost", "gained"), numbered=False, label=label)
        else:
            row[5].axis("off")
    parts = (model and f"model {model}", layer and f"layer {layer}", f"Finer-CAM gamma {gamma:g}")
    figure.suptitle(" | ".join(part for part in parts if part), fontsize=MIN_FONT + 1, y=1 - 0.1 / height, va="top")
    return figure
