"""``Explanation``: what explaining a batch gives (maps, weights, scores, the resolved target), and its file.

An explanation saves as one safetensors file (kind ``explanation``, with the
format version of :mod:`camscope.io`): the tensors ``raw``, ``maps``, ``logits``,
``scores`` and, where present, ``weights``, ``contributions``, the method's extras
(``extras.NAME``) and the explained ``classes``, plus those of each layer of a multi-layer explanation; JSON metadata
holds the method, the layer (a list for several layers), the model's name, the
method's options and a description of the target. Activations are not saved.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from camscope.errors import CamscopeError
from camscope.io import TensorSpec, check_file_tensors, checked_tensor, load_tensors, save_tensors
from camscope.targets.base import ClassTarget, FrozenTarget, Target

__all__ = ["Explanation", "SavedTarget"]

_KIND = "explanation"
_OPTIONAL = ("weights", "contributions")
_EXTRAS = "extras."


def _file_specs(layers: int, extras: dict[str, list[str]]) -> dict[str, TensorSpec]:
    """The tensors of an explanation file: float32 maps of ``B`` samples, int64 classes, per-layer parts.

    ``extras`` names the method's extras of each part (``""`` or ``"layers.i."``), as the metadata records them.
    """
    specs = {
        "logits": TensorSpec(torch.float32, ("B", "...")),
        "scores": TensorSpec(torch.float32, ("B",)),
        "classes": TensorSpec(torch.int64, ("B",), required=False),
    }
    for index, prefix in enumerate(["", *(f"layers.{i}." for i in range(layers))]):
        specs[f"{prefix}raw"] = TensorSpec(torch.float32, ("B", "*spatial"))
        specs[f"{prefix}maps"] = TensorSpec(torch.float32, ("B", "*spatial"))
        for name in _OPTIONAL:  # K channels at each layer
            specs[f"{prefix}{name}"] = TensorSpec(torch.float32, ("B", f"K{index}"), required=False)
        for name in extras.get(prefix, []):  # one row per sample, any further shape
            specs[f"{prefix}{_EXTRAS}{name}"] = TensorSpec(torch.float32, ("B", "..."))
    return specs


def _extras_header(entry: Any, path: Path) -> dict[str, list[str]]:
    """The recorded names of the extras of each part of the explanation (none in files without them)."""
    entry = {} if entry is None else entry
    if not isinstance(entry, dict) or not all(
        isinstance(names, list) and all(isinstance(name, str) and name for name in names) for names in entry.values()
    ):
        raise CamscopeError(f"{path} has corrupt metadata: 'extras' must map each part to a list of names")
    return {str(prefix): list(names) for prefix, names in entry.items()}


@dataclass
class Explanation:
    """The result of explaining a batch.

    Attributes:
        raw: the signed class-activation map ``sum_k w_k A_k`` at layer
            resolution, before ReLU and any scaling, ``[B, h, w]`` (``[B, d, h, w]``
            for volumes). For several layers: the mean over layers of each
            layer's raw map upsampled to the input and divided by its per-image
            maximum absolute value (``fuse="product"`` and RefineCAM: the product
            of the layers' ``maps``). With ``aug_smooth``: the mean of the
            augmentations' raw maps, flipped back.
        maps: ``raw`` upsampled to the input size, ReLU, min-max scaled per
            image to [0, 1], ``[B, H, W]``; a constant map gives zeros. With
            ``scale=`` (S-CAMs): ``scale(upsampled raw)``, signed, in (-1, 1).
        weights: ``[B, K]`` channel weights where the method has them, else None.
        contributions: ``[B, K]`` per-channel contributions ``sum_ij w_k^ij A_k^ij``
            (their sum over k is the sum of ``raw``), None for projection methods.
        logits: the model's outputs on the inputs, detached.
        targets: the resolved target (``targets.classes()`` gives class indices).
        scores: the target's score per sample on the inputs.
        method: the method's name.
        layer: the layer's name (a list for several layers).
        activations: the layer's activations ``[B, K, *spatial]``, detached.
        layers: per-layer explanations when several layers were asked.
        options: the method's options (and, for a loaded explanation, the recorded model).
        extras: what the method computed beside its map, by name (e.g. Guided Grad-CAM's
            ``"pixels"``, Deep Feature Factorization's ``"concepts"``); empty for most
            methods. A multi-layer explanation keeps them in ``layers``.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> explanation = camscope.explain(resnet18(num_classes=10), torch.randn(2, 3, 64, 64), target=[1, 2])
        >>> explanation.classes.tolist(), explanation.layer, explanation.contributions.shape
        ([1, 2], 'layer4', torch.Size([2, 512]))
    """

    raw: Tensor
    maps: Tensor
    weights: Tensor | None
    contributions: Tensor | None
    logits: Tensor
    targets: Target
    scores: Tensor
    method: str
    layer: str | list[str]
    activations: Tensor | None = None
    layers: dict[str, Explanation] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __repr__(self) -> str:
        """A one-line summary: method, layer, batch, shapes and explained classes (never the tensors)."""

        def shape(tensor: Tensor | None) -> str:
            return "None" if tensor is None else "[" + ", ".join(map(str, tensor.shape)) + "]"

        classes = self.classes
        if classes is None:
            explained = type(self.targets).__name__
        else:
            listed = [int(c) for c in classes.reshape(-1)[:8]]
            explained = str(listed)[:-1] + (", ...]" if classes.numel() > 8 else "]")
        parts = [
            f"method={self.method!r}",
            f"layer={self.layer!r}",
            f"batch={self.maps.shape[0]}",
            f"raw={shape(self.raw)}",
            f"maps={shape(self.maps)}",
            f"weights={shape(self.weights)}",
            f"logits={shape(self.logits)}",
            f"classes={explained}",
        ]
        if self.layers:
            parts.append(f"layers={list(self.layers)!r}")
        if self.extras:
            parts.append(f"extras={sorted(self.extras)!r}")
        return f"Explanation({', '.join(parts)})"

    @property
    def classes(self) -> Tensor | None:
        """The explained class per sample, where the target has one."""
        return self.targets.classes()

    def save(self, path: str | os.PathLike[str], *, model: str | None = None) -> Path:
        """Write the explanation to ``path`` (safetensors + JSON metadata), atomically.

        Args:
            path: the file to write (replaced if it exists).
            model: the model's name to record (e.g. ``"torchvision:resnet50"``).

        Returns:
            The path written. :meth:`load` reads it back.

        Example:
            >>> import camscope, tempfile, pathlib, torch
            >>> from torchvision.models import resnet18
            >>> e = camscope.explain(resnet18(num_classes=10), torch.randn(2, 3, 64, 64), target=[1, 2])
            >>> path = e.save(pathlib.Path(tempfile.mkdtemp()) / "e.safetensors", model="resnet18")
            >>> back = camscope.Explanation.load(path)
            >>> bool(torch.equal(back.maps, e.maps)), back.classes.tolist(), back.layer
            (True, [1, 2], 'layer4')
        """
        tensors = _tensors(self, "")
        for index, per_layer in enumerate(self.layers.values()):
            tensors.update(_tensors(per_layer, f"layers.{index}."))
        metadata = {
            "method": self.method,
            "layer": self.layer if isinstance(self.layer, str) else list(self.layer),
            "layers": list(self.layers),
            "model": model,
            "options": {key: _json_value(value) for key, value in self.options.items()},
            "target": _describe_target(self.targets),
            "extras": {
                prefix: sorted(part.extras)
                for prefix, part in [("", self), *((f"layers.{i}.", e) for i, e in enumerate(self.layers.values()))]
                if part.extras
            },
        }
        return save_tensors(path, tensors, metadata, kind=_KIND)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Explanation:
        """Read an explanation written by :meth:`save`.

        The target comes back as a :class:`SavedTarget`: it knows the explained
        classes and what the target was; a plain class target can also score outputs again.
        The model's name is in ``explanation.options["model"]`` when it was recorded.

        Raises:
            CamscopeError: for a missing, truncated or corrupt file, one that holds something
                else, or tensors other than those :meth:`save` writes (names, dtypes, shapes).
        """
        path = Path(path)
        tensors, header = load_tensors(path, _KIND)
        layers = header.get("layers") or []
        if not isinstance(layers, list) or not all(isinstance(name, str) for name in layers):
            raise CamscopeError(f"{path} has corrupt metadata: 'layers' must be a list of layer names")
        extras = _extras_header(header.get("extras"), path)
        check_file_tensors(tensors, _file_specs(len(layers), extras), path)
        target = SavedTarget.from_header(header.get("target"), tensors.get("classes"), path)
        per_layer = {
            name: _explanation(tensors, f"layers.{i}.", header, name, target, path) for i, name in enumerate(layers)
        }
        layer = header.get("layer")
        if not (isinstance(layer, str) or (isinstance(layer, list) and all(isinstance(n, str) for n in layer))):
            raise CamscopeError(f"{path} has corrupt metadata: 'layer' must be a name or a list of names")
        loaded = _explanation(tensors, "", header, layer, target, path)
        loaded.layers = per_layer
        return loaded


def _tensors(explanation: Explanation, prefix: str) -> dict[str, Tensor]:
    tensors = {f"{prefix}raw": explanation.raw, f"{prefix}maps": explanation.maps}
    if prefix == "":  # the layers of a multi-layer explanation share its logits and scores
        tensors.update(logits=explanation.logits, scores=explanation.scores)
    for name in _OPTIONAL:
        value = getattr(explanation, name)
        if value is not None:
            tensors[f"{prefix}{name}"] = value
    for name, value in explanation.extras.items():
        tensors[f"{prefix}{_EXTRAS}{name}"] = value
    classes = explanation.classes if prefix == "" else None
    if classes is not None:
        tensors["classes"] = classes.reshape(-1)
    return {name: tensor.detach().float() if tensor.is_floating_point() else tensor for name, tensor in tensors.items()}


def _explanation(
    tensors: dict[str, Tensor], prefix: str, header: dict[str, Any], layer: Any, target: Target, path: Path
) -> Explanation:
    def get(name: str, required: bool = True) -> Tensor | None:
        value = tensors.get(prefix + name)
        if value is None and required:
            raise CamscopeError(f"{path} has no tensor {prefix + name!r}: the file is incomplete; write it again")
        if value is None:
            return None
        return checked_tensor(value, prefix + name, [-1] * value.dim(), value.dtype, allow_infinite=name == "logits")

    maps, raw = get("maps"), get("raw")
    assert maps is not None and raw is not None
    if maps.shape[0] != raw.shape[0]:
        raise CamscopeError(f"{path} has {maps.shape[0]} maps but {raw.shape[0]} raw maps: the file is corrupt")
    method = header.get("method")
    if not isinstance(method, str):
        raise CamscopeError(f"{path} has corrupt metadata: 'method' must be a name")
    options = header.get("options") or {}
    if not isinstance(options, dict):
        raise CamscopeError(f"{path} has corrupt metadata: 'options' must be an object")
    if header.get("model") is not None:
        options = {**options, "model": header["model"]}
    logits, scores = tensors.get("logits"), tensors.get("scores")
    if logits is None or scores is None:
        raise CamscopeError(f"{path} has no logits or scores: the file is incomplete; write it again")
    return Explanation(
        raw=raw,
        maps=maps,
        weights=get("weights", required=False),
        contributions=get("contributions", required=False),
        logits=logits,
        targets=target,
        scores=scores,
        method=method,
        layer=layer,
        options=options,
        extras={
            name[len(prefix + _EXTRAS) :]: checked_tensor(tensor, name, [-1] * tensor.dim(), tensor.dtype)
            for name, tensor in tensors.items()
            if name.startswith(prefix + _EXTRAS) and len(name) > len(prefix + _EXTRAS)
        },
    )


def _json_value(value: Any) -> Any:
    """An option's value as JSON: numbers, text, lists and objects as they are; a tensor by its shape; else its type."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, Tensor):
        return {"tensor": list(value.shape)} if value.numel() > 16 else value.tolist()
    return {"object": type(value).__name__}


def _describe_target(target: Target) -> dict[str, Any]:
    inner = target.inner if isinstance(target, FrozenTarget) else target
    description = target.description if isinstance(target, SavedTarget) else repr(target)
    kind = target.kind if isinstance(target, SavedTarget) else type(inner).__name__
    return {"type": kind, "description": description[:2000]}


class SavedTarget(Target):
    """The target of a loaded :class:`Explanation`: its explained classes and what it was.

    ``kind`` is the original target's class name and ``description`` its text. A
    saved class target (``ClassTarget``) still scores outputs (``y_c`` per sample);
    any other cannot be rebuilt from a file and says so when called.
    """

    def __init__(self, classes: Tensor | None, kind: str, description: str) -> None:
        self._classes = classes
        self.kind = kind
        self.description = description

    @classmethod
    def from_header(cls, entry: Any, classes: Tensor | None, path: Path) -> SavedTarget:
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise CamscopeError(f"{path} has corrupt metadata: 'target' must describe the target")
        if classes is not None:
            classes = checked_tensor(classes, "classes", [-1], torch.long, nonnegative=True)
        return cls(classes, entry["type"], str(entry.get("description", "")))

    def classes(self) -> Tensor | None:
        return self._classes

    def __call__(self, outputs: Tensor) -> Tensor:
        if self.kind != "ClassTarget" or self._classes is None:
            raise CamscopeError(
                f"a loaded explanation's target ({self.description}) cannot score outputs: "
                "explain again with the original target"
            )
        return ClassTarget(self._classes.to(outputs.device)).resolve(outputs)(outputs)

    def __repr__(self) -> str:
        return f"SavedTarget({self.description})"
