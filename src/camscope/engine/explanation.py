"""``Explanation``: what explaining a batch gives (maps, weights, scores, the resolved target)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from camscope.targets.base import Target

__all__ = ["Explanation"]


@dataclass
class Explanation:
    """The result of explaining a batch.

    Attributes:
        raw: the signed class-activation map ``sum_k w_k A_k`` at layer
            resolution, before ReLU and any scaling, ``[B, h, w]`` (``[B, d, h, w]``
            for volumes). For several layers: the mean over layers of each
            layer's raw map upsampled to the input and divided by its per-image
            maximum absolute value.
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
        return f"Explanation({', '.join(parts)})"

    @property
    def classes(self) -> Tensor | None:
        """The explained class per sample, where the target has one."""
        return self.targets.classes()
