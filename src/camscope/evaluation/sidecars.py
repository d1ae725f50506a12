"""Ground truth next to the images: JSON sidecars mapped to the model input.

Ground truth for the localisation and part metrics comes from a JSON *sidecar* next to
each image of a folder: ``cat.jpg`` -> ``cat.json``::

    {
      "boxes": [[x1, y1, x2, y2], ...],      # pixels of the original image; joined
      "mask": "cat_mask.png",                # relative to the JSON; nonzero = object
      "label": 281,                          # or "tabby cat": the class for target="label"
      "parts": {"beak": [x, y], "crown": [x, y], "tail": null},   # keypoints; null = not visible
      "differing": ["beak", "crown"]         # parts that differ from the counterfactual class
    }

Every key is optional. Coordinates are mapped to the model input with camscope's
preprocessing geometry (:class:`camscope.models.loading.DataConfig`: the shorter side resized to
``floor(size / crop_pct)``, the centre ``size x size`` crop), masks with nearest-neighbour
resizing. With data other than a folder, ``annotations=`` gives one such dict per sample
in dataset order, already in input pixels (``"mask"`` may then be an array or tensor).
Samples without ground truth get NaN for the metrics that need it (skipped by the means); the
report counts the samples that had it (:attr:`camscope.evaluation.report.EvaluationReport.ground_truth`).
The README's "Ground truth" section documents the format for users.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from camscope.errors import CamscopeError
from camscope.io import TensorSpec, check_file_tensors

__all__ = ["GroundTruth", "ground_truth", "load_sidecar", "parts_of", "regions_of", "sidecar_masks"]


@dataclass
class GroundTruth:
    """One sample's ground truth in input pixels.

    Attributes:
        region: ``[S, S]`` bool object region (boxes and mask joined), or None.
        parts: part name -> ``(x, y)`` keypoint, or None where the part is not visible.
        differing: the parts that differ from the counterfactual class.
        label: the sample's class (index or name) for ``target="label"``, or None.
    """

    region: Tensor | None = None  # [S, S] bool
    parts: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    differing: set[str] = field(default_factory=set)
    label: Any = None


def _geometry(width: int, height: int, size: int, crop_pct: float) -> tuple[float, float, int, int, int, int]:
    """Scale factors, crop offsets and resized size of camscope's resize-then-centre-crop."""
    short_target = math.floor(size / crop_pct)
    if width <= height:
        new_w, new_h = short_target, int(short_target * height / width)
    else:
        new_w, new_h = int(short_target * width / height), short_target
    top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)
    return new_w / width, new_h / height, left, top, new_w, new_h


def load_sidecar(image: str | os.PathLike[str], size: int = 224, crop_pct: float = 0.875) -> dict[str, Any] | None:
    """Read ``IMAGE.json`` next to an image and map it to the ``size x size`` model input.

    Returns None when there is no sidecar, else a dict with ``region`` (``[size, size]``
    bool tensor or None), ``parts`` (name -> ``(x, y)`` or None), ``differing`` (names) and
    ``label``. See the module docstring for the format.
    """
    from PIL import Image, ImageOps

    image = Path(image)
    sidecar = image.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        spec = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CamscopeError(f"cannot read the annotation sidecar {sidecar}: {error}") from error
    if not isinstance(spec, dict):
        raise CamscopeError(f"{sidecar} must hold a JSON object with boxes/mask/label/parts/differing")
    with Image.open(image) as opened:
        width, height = ImageOps.exif_transpose(opened).size
    sx, sy, left, top, new_w, new_h = _geometry(width, height, size, crop_pct)
    region = None
    if spec.get("boxes"):
        from camscope.metrics import boxes_to_masks

        boxes = _boxes(spec["boxes"], sidecar)
        mapped = boxes * torch.tensor([sx, sy, sx, sy], dtype=torch.float64) - torch.tensor(
            [left, top, left, top], dtype=torch.float64
        )
        region = boxes_to_masks([mapped], (size, size))[0]
    if spec.get("mask"):
        mask_path = sidecar.parent / spec["mask"]
        if not mask_path.is_file():
            raise CamscopeError(f"{sidecar} names a mask {mask_path} that does not exist")
        with Image.open(mask_path) as opened:
            mask = ImageOps.exif_transpose(opened).convert("L")
            if mask.size != (width, height):
                raise CamscopeError(f"mask {mask_path} is {mask.size[0]}x{mask.size[1]}, its image {width}x{height}")
            mask = mask.resize((new_w, new_h), Image.Resampling.NEAREST).crop((left, top, left + size, top + size))
            array = torch.frombuffer(bytearray(mask.tobytes()), dtype=torch.uint8).reshape(size, size) > 0
        region = array if region is None else region | array
    if not isinstance(spec.get("parts") or {}, dict) or not isinstance(spec.get("differing") or [], list):
        raise CamscopeError(f"{sidecar}: parts must be an object of name: [x, y], differing a list of part names")
    parts: dict[str, tuple[float, float] | None] = {}
    for name, point in (spec.get("parts") or {}).items():
        if point is None:
            parts[str(name)] = None
            continue
        x, y = _point(point, name, sidecar)
        x, y = x * sx - left, y * sy - top
        parts[str(name)] = (x, y) if 0 <= x < size and 0 <= y < size else None
    differing = {str(name) for name in spec.get("differing") or []}
    return {"region": region, "parts": parts, "differing": differing, "label": spec.get("label")}


def _boxes(value: Any, sidecar: Path) -> Tensor:
    """A sidecar's ``boxes`` as ``[N, 4]`` float64: a list of ``[x1, y1, x2, y2]`` (or one such box)."""
    try:
        boxes = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        raise CamscopeError(f"{sidecar}: boxes must be a list of [x1, y1, x2, y2] numbers ({error})") from error
    boxes = boxes.reshape(1, 4) if boxes.shape == (4,) else boxes
    check_file_tensors({"boxes": boxes}, {"boxes": TensorSpec(torch.float64, ("N", 4))}, sidecar)
    if not bool(boxes.isfinite().all()):
        raise CamscopeError(f"{sidecar}: boxes hold a value that is not a finite number")
    return boxes


def _point(value: Any, name: str, sidecar: Path) -> tuple[float, float]:
    """A sidecar's keypoint ``[x, y]``: two finite numbers."""
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise CamscopeError(f"{sidecar}: the part {name!r} must be [x, y] or null, got {value!r}")
    try:
        x, y = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        raise CamscopeError(f"{sidecar}: the part {name!r} must be [x, y] numbers, got {value!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise CamscopeError(f"{sidecar}: the part {name!r} must be [x, y] finite numbers, got {value!r}")
    return x, y


def sidecar_masks(samples: Sequence[tuple[Path, int]]) -> set[Path]:
    """Mask images named by the sidecars in the samples' folders (resolved): next to the images, but not samples."""
    masks: set[Path] = set()
    for folder in {path.parent for path, _ in samples}:
        for sidecar in folder.glob("*.json"):
            try:
                spec = json.loads(sidecar.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(spec, dict) and isinstance(spec.get("mask"), str):
                masks.add((folder / spec["mask"]).resolve())
    return masks


def ground_truth(spec: Mapping[str, Any] | None, size: Sequence[int]) -> GroundTruth:
    """A sample's :class:`GroundTruth` from an ``annotations=`` dict (input pixels) or a :func:`load_sidecar` result.

    ``size`` is the inputs' ``(H, W)``: boxes are drawn at it and masks must have it.

    Example:
        >>> truth = ground_truth({"boxes": [[0, 0, 2, 1]], "parts": {"beak": [1, 0]}}, (2, 3))
        >>> truth.region.int().tolist(), truth.parts
        ([[1, 1, 0], [0, 0, 0]], {'beak': (1.0, 0.0)})
    """
    if not spec:
        return GroundTruth()
    if "region" in spec:  # from load_sidecar: already in input pixels
        return GroundTruth(
            spec.get("region"), dict(spec.get("parts") or {}), set(spec.get("differing") or ()), spec.get("label")
        )
    from camscope.metrics import boxes_to_masks

    region = None
    if spec.get("boxes") is not None and len(spec["boxes"]):
        region = boxes_to_masks([spec["boxes"]], size)[0]
    if spec.get("mask") is not None:
        mask = torch.as_tensor(spec["mask"]).bool()
        if tuple(mask.shape) != tuple(size):
            raise CamscopeError(f"annotation masks must be {list(size)} like the inputs, got {list(mask.shape)}")
        region = mask if region is None else region | mask
    parts = {str(k): (None if v is None else (float(v[0]), float(v[1]))) for k, v in (spec.get("parts") or {}).items()}
    return GroundTruth(region, parts, {str(n) for n in spec.get("differing") or []}, spec.get("label"))


def regions_of(truths: list[GroundTruth], size: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
    """``[B, H, W]`` bool regions on ``device`` (empty where a sample has none) and ``[B]`` bool "has no region".

    Example:
        >>> import torch
        >>> truths = [ground_truth({"boxes": [[0, 0, 1, 1]]}, (2, 2)), GroundTruth()]
        >>> regions, missing = regions_of(truths, (2, 2), torch.device("cpu"))
        >>> regions.sum().item(), missing.tolist()
        (1, [False, True])
    """
    regions = torch.zeros(len(truths), *size, dtype=torch.bool, device=device)
    missing = torch.ones(len(truths), dtype=torch.bool)
    for i, truth in enumerate(truths):
        if truth.region is not None:
            regions[i] = truth.region.to(device)
            missing[i] = False
    return regions, missing


def parts_of(truths: list[GroundTruth], device: torch.device) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """Keypoints of a batch, by the sorted union of the part names.

    Returns ``points`` ``[B, P, 2]`` (NaN where a part is absent), ``differing`` ``[B, P]``
    bool, ``missing`` ``[B]`` bool (no parts at all) and the ``P`` names.

    Example:
        >>> import torch
        >>> truth = ground_truth({"parts": {"tail": [3, 4], "beak": None}, "differing": ["tail"]}, (8, 8))
        >>> points, differing, missing, names = parts_of([truth], torch.device("cpu"))
        >>> names, points[0, 1].tolist(), differing.tolist(), missing.tolist()
        (['beak', 'tail'], [3.0, 4.0], [[False, True]], [False])
    """
    names = sorted({name for truth in truths for name in truth.parts})
    points = torch.full((len(truths), max(1, len(names)), 2), float("nan"), device=device)
    differing = torch.zeros(len(truths), max(1, len(names)), dtype=torch.bool, device=device)
    missing = torch.ones(len(truths), dtype=torch.bool)
    for i, truth in enumerate(truths):
        if truth.parts:
            missing[i] = False
        for j, name in enumerate(names):
            point = truth.parts.get(name)
            if point is not None:
                points[i, j] = torch.tensor(point, device=device)
            differing[i, j] = name in truth.differing
    return points, differing, missing, names
