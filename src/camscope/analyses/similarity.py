"""Class similarity: the cosine similarity of classifier rows (Finer-CAM, Zhang et al. 2025, Fig. 1 / App. A.1).

Example:
    >>> import torch
    >>> from camscope.analyses.similarity import class_similarity
    >>> similarity = class_similarity(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))
    >>> [index for index, _, _ in similarity.most_similar(0, k=2)]
    [1, 2]
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.errors import CamscopeError
from camscope.targets.finer import classifier_weights

__all__ = ["ClassSimilarity", "class_similarity"]


@dataclass
class ClassSimilarity:
    """Cosine similarity of classifier rows (the paper's Fig. 1 left, App. A.1).

    Attributes:
        matrix: ``S_pq = w^p . w^q / (|w^p| |w^q|)``, ``[C, C]``, diagonal 1 (Eq. 11).
        names: class names, where known.
    """

    matrix: Tensor
    names: list[str] | None = None

    @property
    def sorted(self) -> Tensor:
        """Eq. 12: ``S`` with 1 subtracted from the diagonal, each row sorted in descending order."""
        eye = torch.eye(self.matrix.shape[0], dtype=self.matrix.dtype, device=self.matrix.device)
        return (self.matrix - eye).sort(dim=1, descending=True).values

    def curve(self) -> tuple[Tensor, Tensor]:
        """The sorted-similarity curve: the class-wise mean and standard deviation of :attr:`sorted`, ``[C]`` each.

        Its first point is the mean similarity of a class to its most similar class.
        """
        rows = self.sorted
        return rows.mean(dim=0), rows.std(dim=0) if rows.shape[0] > 1 else torch.zeros_like(rows[0])

    def index(self, cls: int | str) -> int:
        """A class index from an index or a name (case-insensitive)."""
        count = self.matrix.shape[0]
        if isinstance(cls, str) and cls.strip().lstrip("-").isdigit():
            cls = int(cls)
        if isinstance(cls, int) and not isinstance(cls, bool):
            if not 0 <= cls < count:
                raise CamscopeError(f"class {cls} is out of range for {count} classes (valid: 0..{count - 1})")
            return cls
        if not isinstance(cls, str) or self.names is None:
            raise CamscopeError(f"class {cls!r}: give a class index (this classifier has no class names)")
        lowered = [name.lower() for name in self.names]
        if cls.strip().lower() in lowered:
            return lowered.index(cls.strip().lower())
        close = difflib.get_close_matches(cls.strip().lower(), lowered, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(self.names[lowered.index(c)]) for c in close)}?" if close else ""
        raise CamscopeError(f"unknown class {cls!r}{hint}")

    def name(self, index: int) -> str:
        return self.names[index] if self.names is not None else str(index)

    def most_similar(self, cls: int | str, k: int = 5) -> list[tuple[int, str, float]]:
        """The ``k`` classes most similar to ``cls``: ``(index, name, cosine)``, most similar first."""
        index = self.index(cls)
        row = self.matrix[index].clone()
        row[index] = float("-inf")
        k = max(0, min(int(k), row.numel() - 1))
        values, indices = row.topk(k)
        return [(int(i), self.name(int(i)), float(v)) for v, i in zip(values, indices)]

    def most_similar_pairs(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The ``k`` most similar pairs of distinct classes ``(p, q, cosine)``, ``p < q``."""
        upper = torch.triu(torch.ones_like(self.matrix, dtype=torch.bool), diagonal=1)
        values = self.matrix.masked_fill(~upper, float("-inf")).flatten()
        k = max(0, min(int(k), int(upper.sum())))
        top = values.topk(k)
        count = self.matrix.shape[0]
        return [(int(i) // count, int(i) % count, float(v)) for v, i in zip(top.values, top.indices)]

    def plot(self, path: str | os.PathLike[str], label: str | None = None) -> Path:
        """Write the sorted-similarity curve as a PNG.

        Deprecated: use ``save_figure(path, camscope.viz.analysis.similarity_curve(similarity))``.
        """
        warnings.warn(
            "ClassSimilarity.plot is deprecated: use camscope.viz.analysis.similarity_curve and save_figure",
            DeprecationWarning,
            stacklevel=2,
        )
        from camscope.viz.analysis import similarity_curve
        from camscope.viz.figures import save_figure

        return save_figure(path, similarity_curve(self, label), dpi=120)


def class_similarity(source: nn.Module | Tensor, names: Sequence[str] | None = None) -> ClassSimilarity:
    """The cosine similarity of a classifier's rows (Eq. 11), with the curve of the paper's Fig. 1.

    Args:
        source: a model (its last linear layer), a linear layer, a
            :class:`camscope.models.clip.CLIPClassifier` (its prompt embeddings) or a
            ``[C, K]`` weight matrix.
        names: the class names; the ImageNet names are used for 1000 classes
            when None, CLIP prompts for a CLIP classifier.

    Example:
        >>> import torch
        >>> from camscope.analyses.similarity import class_similarity
        >>> similarity = class_similarity(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))
        >>> [(i, round(s, 3)) for i, _, s in similarity.most_similar(0, k=2)]
        [(1, 0.707), (2, 0.0)]
    """
    weights = classifier_weights(source).double()
    unit = F.normalize(weights, dim=1)
    matrix = (unit @ unit.T).float()
    count = matrix.shape[0]
    prompts = getattr(source, "prompts", None) if isinstance(source, nn.Module) else None
    if names is None and isinstance(prompts, list):
        names = list(prompts)
    if names is None and count == 1000:
        from camscope.models import imagenet_classes

        names = imagenet_classes()
    if names is not None and len(names) != count:
        raise CamscopeError(f"{len(names)} class names were given for a classifier with {count} classes")
    return ClassSimilarity(matrix=matrix, names=list(names) if names is not None else None)
