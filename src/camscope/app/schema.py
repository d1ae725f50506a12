"""What the page sends and receives: an explanation request, and the maps of its result.

An :class:`ExplainRequest` is the page's JSON, validated field by field (a bad field is a
:class:`~camscope.errors.CamscopeError` that names it). An :class:`ExplainResult` holds one
:class:`Panel` per map, with the input crop the maps are drawn over and the settings.

Example:
    >>> request = ExplainRequest.from_json({"image": "photo:chelsea", "model": "m", "methods": ["gradcam"]})
    >>> request.gamma, request.source
    (0.6, 'photos')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from camscope.errors import CamscopeError
from camscope.models.preprocessing import Photo

__all__ = [
    "DIFFCAM_SOURCES",
    "TOP_CHANNELS",
    "ExplainRequest",
    "ExplainResult",
    "Panel",
    "finer_references",
    "is_finer",
    "top_contributions",
    "top_predictions",
]

#: Where DiffCAM's reference group comes from.
DIFFCAM_SOURCES = ("bank", "data", "photos")
#: Channels shown in the contributions chart.
TOP_CHANNELS = 12


def is_finer(method: str) -> bool:
    return method.lower().startswith("finer-")


@dataclass
class ExplainRequest:
    """The settings of one explanation, as the page sends them (JSON)."""

    image: str
    model: str
    methods: list[str]
    layer: str | None = None
    target: int | None = None
    versus: list[int] = field(default_factory=list)
    gamma: float = 0.6
    reference: str = "others"
    source: str = "photos"
    scaled: bool = False
    principal: float | None = None
    box: list[float] | None = None  # a detector's box to explain, [x0, y0, x1, y1] in input pixels

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExplainRequest:
        """Validate the page's JSON (a :class:`CamscopeError` that names the bad field)."""
        from camscope.engine.method import method_class

        if not isinstance(data, Mapping):
            raise CamscopeError("the request must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CamscopeError(f"unknown field(s) {', '.join(unknown)}: use {', '.join(sorted(known))}")
        methods = data.get("methods") or []
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise CamscopeError("methods must be a list of method names")
        if not methods and not data.get("scaled"):
            raise CamscopeError("choose at least one method")
        for name in methods:
            method_class(name)
        request = cls(
            image=_text(data, "image"),
            model=_text(data, "model"),
            methods=list(dict.fromkeys(methods)),
            layer=data.get("layer") or None,
            target=_optional_int(data.get("target"), "target"),
            versus=[_int(v, "versus") for v in data.get("versus") or []],
            gamma=_number(data.get("gamma", 0.6), "gamma"),
            reference=str(data.get("reference") or "others"),
            source=str(data.get("source") or "photos"),
            scaled=bool(data.get("scaled", False)),
            principal=None if data.get("principal") in (None, "") else _number(data["principal"], "principal"),
            box=_box(data.get("box")),
        )
        if request.gamma < 0:
            raise CamscopeError(f"gamma must be >= 0, got {request.gamma}")
        if request.source not in DIFFCAM_SOURCES:
            raise CamscopeError(f"source must be one of {', '.join(DIFFCAM_SOURCES)}, got {request.source!r}")
        if request.principal is not None and not 0 < request.principal <= 1:
            raise CamscopeError(f"principal must be a fraction in (0, 1], got {request.principal}")
        if request.layer is not None and not isinstance(request.layer, str):
            raise CamscopeError("layer must be a layer name")
        return request

    def settings(self) -> dict[str, Any]:
        """The request as JSON-ready values."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise CamscopeError(f"{key} is required (a string)")
    return value


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise CamscopeError(f"{key} must be class indices, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise CamscopeError(f"{key} must be class indices, got {value!r}") from None


def _box(value: Any) -> list[float] | None:
    if value in (None, ""):
        return None
    if not isinstance(value, list) or len(value) != 4:
        raise CamscopeError(f"box must be [x0, y0, x1, y1], got {value!r}")
    box = [_number(v, "box") for v in value]
    if box[2] <= box[0] or box[3] <= box[1]:
        raise CamscopeError(f"box must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0, got {value!r}")
    return box


def _optional_int(value: Any, key: str) -> int | None:
    return None if value in (None, "") else _int(value, key)


def _number(value: Any, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CamscopeError(f"{key} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise CamscopeError(f"{key} must be finite, got {value!r}")
    return number


@dataclass
class Panel:
    """One map of a result: what it shows (``title``, ``caption``), the map and its data."""

    key: str
    method: str
    title: str
    caption: str
    maps: Tensor  # [H, W], what is drawn: in [0, 1], or in (-1, 1) when signed
    raw: Tensor  # the signed map at the layer's resolution
    layer: str
    signed: bool = False
    contributions: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "method": self.method,
            "title": self.title,
            "caption": self.caption,
            "layer": self.layer,
            "signed": self.signed,
            "contributions": self.contributions,
            **self.extra,
        }


@dataclass
class ExplainResult:
    """The panels of one request, with the image they are drawn over and the settings."""

    photo: Photo  # the whole photo, with the place of the model's input crop
    panels: list[Panel]
    settings: dict[str, Any]
    explained: dict[str, Any]
    predictions: list[dict[str, Any]]

    def panel(self, key: str) -> Panel:
        for panel in self.panels:
            if panel.key == key:
                return panel
        raise CamscopeError(f"no map {key!r} in this result: use one of {', '.join(p.key for p in self.panels)}")

    def describe(self) -> dict[str, Any]:
        return {
            "panels": [panel.describe() for panel in self.panels],
            "settings": self.settings,
            "explained": self.explained,
            "predictions": self.predictions,
        }


def top_predictions(logits: Tensor, names: list[str], k: int = 5) -> list[list[dict[str, Any]]]:
    """Top-k classes per sample: index, name, probability (as ``camscope explain`` prints them).

    Example:
        >>> import torch
        >>> top_predictions(torch.tensor([[0.0, 2.0]]), ["cat", "dog"], k=1)[0][0]["name"]
        'dog'
    """
    probabilities = logits.detach().float().softmax(dim=1).cpu()
    values, indices = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    return [
        [{"class": int(i), "name": names[int(i)], "probability": float(p)} for p, i in zip(row_p, row_i)]
        for row_p, row_i in zip(values, indices)
    ]


def finer_references(explanation: Any, names: list[str]) -> list[dict[str, Any]]:
    """The compared classes of the first sample of a ``finer-*`` explanation: index, name, probability, weight."""
    from camscope.targets.finer import Finer

    target = explanation.targets
    references = target.references() if isinstance(target, Finer) else None
    weights = target.reference_weights() if isinstance(target, Finer) else None
    if references is None or weights is None:
        return []
    probabilities = explanation.logits[0].softmax(dim=0)
    return [
        {"class": int(c), "name": names[int(c)], "probability": float(probabilities[int(c)]), "weight": float(w)}
        for c, w in zip(references[0], weights[0])
    ]


def top_contributions(contributions: Tensor | None, count: int = TOP_CHANNELS) -> list[dict[str, Any]]:
    """The channels with the largest ``|sum_ij w_k A_k^ij|`` of one sample, signed values, largest first.

    Example:
        >>> import torch
        >>> top_contributions(torch.tensor([0.5, -2.0, 1.0]), count=2)
        [{'channel': 1, 'value': -2.0}, {'channel': 2, 'value': 1.0}]
    """
    if contributions is None:
        return []
    values = contributions.detach().float().cpu().reshape(-1)
    order = values.abs().argsort(descending=True, stable=True)[:count]
    return [{"channel": int(k), "value": float(values[k])} for k in order]
