"""What the tutorials' hidden blocks use to put their figures in the page (imported at build time only).

A hidden block prints ``figure_html(path, caption)``: markdown-exec captures what the block prints.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any


def figure_html(figure: Any, caption: str = "") -> str:
    """A figure as an HTML ``<figure>`` with the PNG inlined: a path to a PNG, or a matplotlib figure.

    Inlined images keep the built page self-contained (nothing written into the docs folder at build time).
    """
    if isinstance(figure, (str, Path)):
        data = Path(figure).read_bytes()
    else:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        data = buffer.getvalue()
    if data[:4] != b"\x89PNG":
        raise ValueError(f"{figure!r} is not a PNG image")
    source = base64.b64encode(data).decode("ascii")
    text = html.escape(caption)
    caption_html = f"<figcaption>{text}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{source}" alt="{text}">{caption_html}</figure>'
