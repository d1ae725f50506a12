"""Overlays and figures."""

from camscope.viz.figures import explanation_figure, overlay, save_figure, save_image

__all__ = ["explanation_figure", "overlay", "save_figure", "save_image"]
