"""Figures of a DiffCAM counterfactual pair: "why c, not d" (or its counterpart) over its image.

Li et al., "DiffCAM: Data-Driven Saliency Maps by Capturing Feature Differences", CVPR 2025
(:func:`camscope.analyses.counterfactual.counterfactual` computes the pair). A map whose raw map
``sum_k w_k A_k`` has no positive cell is *empty* after the ReLU; its figure shows the signed raw map
on a diverging scale instead, so that the reader sees what argues against, and its title says so.

Example:
    >>> import numpy as np, torch
    >>> from types import SimpleNamespace
    >>> explanation = SimpleNamespace(raw=torch.rand(1, 4, 4), maps=torch.rand(1, 8, 8))
    >>> figure = counterfactual_figure(np.zeros((8, 8, 3)), explanation, question="why cat, not dog",
    ...                                group="reference group: bank class dog, 12 images", caption="cat.jpg, layer 4")
    >>> figure.axes[0].get_title().splitlines()[0]
    'DiffCAM: why cat, not dog'
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from camscope.analyses.counterfactual import signed_maps
from camscope.viz.figures import Picture, colorbar, new_figure, overlay
from camscope.viz.style import MIN_FONT, FigureStyle, wrap

__all__ = ["counterfactual_figure"]


def counterfactual_figure(
    photo: Picture,
    explanation: Any,
    *,
    question: str,
    group: str,
    caption: str,
    empty_note: str = "",
    style: FigureStyle | None = None,
    index: int = 0,
) -> Figure:
    """One map of a counterfactual pair over its image, titled with the question, the reference group and a caption.

    Args:
        photo: the image the map is drawn on (as the model saw it).
        explanation: the map's explanation (``pair.why`` or ``pair.counterpart``).
        question: ``"why c, not d"``.
        group: the reference group in words.
        caption: the image and the layer, e.g. ``"cat.jpg, layer layer4"``.
        empty_note: non-empty for an empty map
            (:func:`camscope.analyses.counterfactual.empty_note`): the figure then shows the
            signed raw map on a diverging scale, and says so.
        style: the colormap of the (non-empty) map.
        index: which input of the explanation.
    """
    figure = new_figure((4.6, 4.8 if empty_note else 4.6))
    axis = figure.add_subplot()
    cmap = style.cmap if style is not None else None
    if empty_note:  # nothing for: the signed raw map, on the diverging scale of signed maps
        axis.imshow(overlay(photo, signed_maps(explanation)[index], signed=True))
        parts = [f"DiffCAM: {question}", "EMPTY map: no cell argues for it; shown: the signed raw map"]
    else:
        axis.imshow(overlay(photo, explanation.maps[index], cmap=cmap))
        parts = [f"DiffCAM: {question}"]
    text = "\n".join(wrap(part, 48, lines=2) for part in (*parts, group, caption))
    axis.set_title(text, fontsize=MIN_FONT)
    axis.axis("off")
    if empty_note:
        colorbar(figure, axis, signed=True, label="raw map / max |raw|")
    else:
        colorbar(figure, axis, cmap=cmap)
    return figure
