"""Figures: overlays (on the model's crop or on the whole photo), labelled figures, what a comparison changes, atomic saves.

Figures need matplotlib, the extra ``pip install 'camscope[plots]'``.
"""

from camscope.errors import needs_extra

with needs_extra("plots", "figures"):
    import matplotlib  # noqa: F401  (before any figure module, so that its absence is one line)

from camscope.viz.compare import MassShift, explanation_shift, mass_shift
from camscope.viz.figures import Picture, explanation_figure, framed, overlay, save_figure, save_image
from camscope.viz.style import FigureStyle

__all__ = [
    "FigureStyle",
    "MassShift",
    "Picture",
    "explanation_figure",
    "explanation_shift",
    "framed",
    "mass_shift",
    "overlay",
    "save_figure",
    "save_image",
]
