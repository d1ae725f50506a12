"""Figures: overlays (on the model's crop or on the whole photo), labelled figures, atomic saves."""

from camscope.viz.figures import Picture, explanation_figure, framed, overlay, save_figure, save_image

__all__ = ["Picture", "explanation_figure", "framed", "overlay", "save_figure", "save_image"]
