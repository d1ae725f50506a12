"""The files the explorer serves: overlays and images as PNG, maps as ``.npy`` and safetensors, settings as JSON.

* ``overlay.png``: the map over the whole photo, in the place of the model's input crop (``jet`` over [0, 1]; the
  diverging ``RdBu_r`` over [-1, 1] for S-CAMs), :func:`camscope.viz.figures.overlay`;
* ``map.npy``: the drawn map ``[H, W]`` float32 (``Explanation.maps[0]``), and ``raw.npy``
  the signed map at the layer's resolution (``Explanation.raw[0]``), written by
  :func:`numpy.save` without pickles;
* ``maps.safetensors``: ``maps`` and ``raw`` with camscope's file header (``kind`` ``"maps"``,
  ``format_version``, the settings, the layer and method), readable with
  ``camscope.io.load_tensors(path, kind="maps")``;
* ``settings.json``: the request's settings, the explained class and each map's title.

Example:
    >>> import torch
    >>> npy_bytes(torch.zeros(2, 2))[:6]
    b'\\x93NUMPY'
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from torch import Tensor

from camscope.app.schema import ExplainResult, Panel

__all__ = ["npy_bytes", "overlay_png", "png_bytes", "safetensors_bytes", "settings_json"]


def png_bytes(rgb: np.ndarray, max_side: int | None = None) -> bytes:
    """An ``[H, W, 3]`` image (float in [0, 1] or ``uint8``) as PNG bytes, shrunk to ``max_side`` if given."""
    from PIL import Image

    if rgb.dtype != np.uint8:
        rgb = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    image = Image.fromarray(rgb)
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_png(result: ExplainResult, panel: Panel) -> bytes:
    """The panel's map blended over its crop's place in the whole photo (the rest faded), as PNG bytes."""
    from camscope.viz.figures import overlay

    return png_bytes(overlay(result.photo, panel.maps, signed=panel.signed))


def npy_bytes(tensor: Tensor) -> bytes:
    """A tensor as a float32 ``.npy`` file (no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, tensor.detach().float().cpu().numpy(), allow_pickle=False)
    return buffer.getvalue()


def safetensors_bytes(result: ExplainResult, panel: Panel) -> bytes:
    """``maps`` and ``raw`` of one panel with camscope's ``maps`` header and the settings."""
    from safetensors.torch import save

    from camscope.io import FORMAT_VERSION

    header = {
        "kind": "maps",
        "format_version": FORMAT_VERSION,
        "method": panel.method,
        "layer": panel.layer,
        "signed": panel.signed,
        "title": panel.title,
        "settings": result.settings,
    }
    tensors = {"maps": panel.maps.contiguous(), "raw": panel.raw.contiguous()}
    return save(tensors, metadata={"camscope": json.dumps(header)})


def settings_json(result: ExplainResult) -> bytes:
    """The settings of a result, the explained class and the maps' titles, as JSON."""
    document: dict[str, Any] = {
        "settings": result.settings,
        "explained": result.explained,
        "predictions": result.predictions,
        "maps": [
            {"key": p.key, "method": p.method, "title": p.title, "caption": p.caption, "layer": p.layer}
            for p in result.panels
        ],
    }
    return json.dumps(document, indent=2).encode()
