"""Embedding targets: similarity to a reference embedding or a concept vector.

A backbone that outputs embeddings ``f(x)`` (``[B, K]``) is explained by how close its
embedding is to a reference ``r``: another image's embedding (why do these two images
match), or a concept vector (the mean embedding of a concept's images, a text
embedding). :class:`SimilarityTarget` explains ``cos(f(x), r)`` (pytorch-grad-cam's
embedding-similarity tutorial, ``SimilarityToConceptTarget``) or, with
``dissimilar=True``, ``1 - cos(f(x), r)`` (its ``DifferenceFromConceptTarget``).
:func:`camscope.engine.pairs.explain_pair` draws the maps of both images of a pair.

Example:
    >>> import torch
    >>> SimilarityTarget(torch.tensor([1.0, 0.0]))(torch.tensor([[1.0, 1.0], [0.0, 2.0]])).round(decimals=4)
    tensor([0.7071, 0.0000])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from camscope.errors import CamscopeError
from camscope.targets.base import Target

__all__ = ["SimilarityTarget"]


class SimilarityTarget(Target):
    """The cosine similarity of the model's embedding to a reference: ``cos(f(x), r) = f.r / (|f| |r|)``.

    Args:
        reference: ``[K]`` (one reference for every input: a concept vector) or ``[B, K]``
            (one per input, e.g. the embedding of the image it is matched with).
        dissimilar: explain ``1 - cos(f(x), r)`` instead: what makes the input unlike the reference.

    Outputs of more than two dimensions (``[B, K, h, w]``) are flattened per sample.

    Example:
        >>> import camscope, torch
        >>> from torch import nn
        >>> from torchvision.models import resnet18
        >>> backbone = resnet18(num_classes=10).eval()
        >>> backbone.fc = nn.Identity()  # the embedding [B, 512]
        >>> x = torch.randn(2, 3, 64, 64)
        >>> concept = backbone(x).mean(dim=0).detach()
        >>> camscope.explain(backbone, x, layer="layer4", target=SimilarityTarget(concept)).maps.shape
        torch.Size([2, 64, 64])
    """

    def __init__(self, reference: Any, dissimilar: bool = False) -> None:
        try:
            tensor = reference.detach() if isinstance(reference, Tensor) else torch.as_tensor(np.asarray(reference))
        except (TypeError, ValueError) as error:
            raise CamscopeError(f"reference must be an embedding [K] or [B, K]: {error}") from error
        if not tensor.is_floating_point() or tensor.ndim not in (1, 2) or tensor.shape[-1] == 0:
            raise CamscopeError(
                f"reference must be a float embedding [K] or one per input [B, K], got {tensor.dtype} "
                f"{list(tensor.shape)}"
            )
        if not bool(torch.isfinite(tensor).all()) or bool((tensor.norm(dim=-1) == 0).any()):
            raise CamscopeError("reference must be finite and non-zero: a cosine needs a direction")
        self.reference = tensor
        self.dissimilar = bool(dissimilar)

    def __call__(self, outputs: Tensor) -> Tensor:
        embeddings = outputs.reshape(outputs.shape[0], -1)
        reference = self.reference.to(device=embeddings.device, dtype=embeddings.dtype)
        if reference.shape[-1] != embeddings.shape[1] or (
            reference.ndim == 2 and reference.shape[0] != embeddings.shape[0]
        ):
            raise CamscopeError(
                f"reference {list(reference.shape)} does not match the model's embeddings {list(embeddings.shape)}: "
                "give [K] or one reference per input [B, K] with the model's K"
            )
        similarity = F.cosine_similarity(embeddings, reference.expand_as(embeddings), dim=1)
        return 1 - similarity if self.dissimilar else similarity

    def __repr__(self) -> str:
        return f"SimilarityTarget({list(self.reference.shape)}{', dissimilar=True' if self.dissimilar else ''})"
