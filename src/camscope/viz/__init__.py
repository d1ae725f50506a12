"""Figures: overlays (on the model's crop or on the whole photo), labelled figures, atomic saves.

Figures need matplotlib, the extra ``pip install 'camscope[plots]'``.
"""

from camscope.errors import needs_extra

with needs_extra("plots", "figures"):
    import matplotlib  # noqa: F401  (before any figure module, so that its absence is one line)

from camscope.viz.figures import Picture, explanation_figure, framed, overlay, save_figure, save_image

__all__ = ["Picture", "explanation_figure", "framed", "overlay", "save_figure", "save_image"]
