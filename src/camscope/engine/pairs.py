"""Maps for both images of a matching pair: why does each look like the other.

For an embedding model ``f``, image ``a`` is explained by ``cos(f(a), f(b))`` with
``f(b)`` held fixed, and ``b`` by ``cos(f(b), f(a))`` (pytorch-grad-cam's
embedding-similarity tutorial, both ways). Both sides run as one batch.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchvision.models import resnet18
    >>> backbone = resnet18(num_classes=10).eval()
    >>> backbone.fc = nn.Identity()
    >>> first, second = explain_pair(backbone, torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64), layer="layer4")
    >>> first.maps.shape, second.maps.shape, bool(torch.allclose(first.scores, second.scores))
    (torch.Size([1, 64, 64]), torch.Size([1, 64, 64]), True)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.capture import LayerSpec, model_state, validate_inputs
from camscope.engine.explainer import Explainer, Explanation
from camscope.errors import CamscopeError
from camscope.targets.embedding import SimilarityTarget
from camscope.targets.outputs import output_tensor

__all__ = ["explain_pair"]


def explain_pair(
    model: nn.Module,
    first: Tensor,
    second: Tensor,
    method: str = "gradcam",
    layer: LayerSpec | None = None,
    *,
    dissimilar: bool = False,
    **options: Any,
) -> tuple[Explanation, Explanation]:
    """Explain each image of matching pairs by its similarity to the other's embedding.

    Args:
        model: returns embeddings ``[B, K]`` (or anything :func:`output_tensor` finds them in).
        first: images ``[B, C, H, W]``.
        second: the images they are matched with, same shape.
        method: any method that explains a score (``camscope.available_methods()``).
        layer: the layer, as for :func:`camscope.explain`.
        dissimilar: explain ``1 - cos`` (what sets them apart) instead of ``cos``.
        **options: Explainer and method options.

    Returns:
        ``(explanation of first, explanation of second)``; row ``i`` of each is pair ``i``.
        The scores of both are the pairs' similarities.
    """
    if not isinstance(first, Tensor) or not isinstance(second, Tensor) or first.shape != second.shape:
        shapes = [list(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (first, second)]
        raise CamscopeError(f"explain_pair takes two batches of the same shape, got {shapes[0]} and {shapes[1]}")
    inputs = validate_inputs(model, torch.cat([first, second]))
    with model_state(model, options.get("eval_mode", True)), torch.no_grad():
        embeddings = output_tensor(model(inputs)).detach()
    batch = first.shape[0]
    references = torch.cat([embeddings[batch:], embeddings[:batch]]).reshape(2 * batch, -1)
    target = SimilarityTarget(references, dissimilar=dissimilar)
    both = Explainer(model, layer=layer, method=method, **options)(inputs, target=target)
    return _rows(both, slice(0, batch), references[:batch], dissimilar), _rows(
        both, slice(batch, 2 * batch), references[batch:], dissimilar
    )


def _rows(explanation: Explanation, rows: slice, references: Tensor, dissimilar: bool) -> Explanation:
    """The explanation of some rows of the batch."""

    def part(tensor: Tensor | None) -> Tensor | None:
        return None if tensor is None else tensor[rows]

    return replace(
        explanation,
        raw=explanation.raw[rows],
        maps=explanation.maps[rows],
        weights=part(explanation.weights),
        contributions=part(explanation.contributions),
        logits=explanation.logits[rows],
        targets=SimilarityTarget(references, dissimilar=dissimilar),
        scores=explanation.scores[rows],
        activations=part(explanation.activations),
        layers={name: _rows(e, rows, references, dissimilar) for name, e in explanation.layers.items()},
    )
