"""Per-class moments: the count, mean and float64 scatter of K-dimensional vectors, by label.

For every label ``c`` the accumulator keeps ``n_c``, ``mu_c`` and
``S_c = sum_{i in c} (z_i - mu_c)(z_i - mu_c)^T``. A batch (or another
accumulator) with count ``m``, mean ``nu`` and scatter ``T`` for ``c`` is
added with Chan et al.'s pairwise update ("Updating Formulae and a Pairwise
Algorithm for Computing Sample Variances", 1979)::

    n' = n + m,   mu' = mu + (m / n') (nu - mu),   S' = S + T + (n m / n') (nu - mu)(nu - mu)^T

so updating batch by batch and merging accumulators built on disjoint data
equal one pass over all of it (up to float64 rounding). The pooled moments of
a set of labels ``G`` follow without revisiting data:
``mu_G = sum_c n_c mu_c / n_G`` and
``S_G = sum_{c in G} [S_c + n_c (mu_c - mu_G)(mu_c - mu_G)^T]``.

Example:
    >>> import torch
    >>> moments = ClassMoments(2).update(torch.tensor([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0]]), torch.tensor([0, 0, 1]))
    >>> moments.labels, moments.counts.tolist(), moments.means[0].tolist()
    ([0, 1], [2, 1], [1.0, 0.0])
    >>> count, mean, scatter = moments.pooled([0, 1])
    >>> count, mean.tolist()
    (3.0, [2.3333333333333335, 1.6666666666666667])
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from camscope.data.folders import UNLABELLED
from camscope.errors import CamscopeError
from camscope.io import checked_int, checked_tensor
from camscope.passes.batches import label_tensor

__all__ = ["DEFAULT_MAX_SCATTER_BYTES", "SCATTER_MODES", "ClassMoments", "check_scatters"]

#: How the scatters are kept: per class, one shared within-class scatter, or per class while they fit.
SCATTER_MODES = ("auto", "class", "shared")
#: Memory allowed for per-class scatters in ``scatter="auto"`` (1 GiB).
DEFAULT_MAX_SCATTER_BYTES = 1 << 30


class ClassMoments:
    """Count, mean and float64 scatter per label of ``K``-dimensional vectors; exact updates and merges.

    Per-class scatters take ``C K^2`` doubles (33 MB per class at ``K = 2048``).
    With ``scatter="auto"`` (default) they are kept while they fit in
    ``max_scatter_bytes`` and otherwise collapsed, exactly, into one shared
    within-class scatter ``W = sum_c S_c``; the scatter of a set of classes is
    then approximated by ``(n_G / N) W`` (the between-class terms of pooled
    groups stay exact). ``scatter="class"`` or ``"shared"`` forces a mode.

    Args:
        feature_size: ``K``.
        scatter: ``"auto"``, ``"class"`` or ``"shared"``.
        max_scatter_bytes: memory allowed for per-class scatters in ``"auto"``.
        device: where the statistics live.

    Example:
        >>> import torch
        >>> a = ClassMoments(3).update(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]))
        >>> b = ClassMoments(3).update(torch.randn(2, 3), torch.tensor([1, 2]))
        >>> a.merge(b).counts.tolist()
        [2, 3, 1]
    """

    def __init__(
        self,
        feature_size: int,
        *,
        scatter: str = "auto",
        max_scatter_bytes: int = DEFAULT_MAX_SCATTER_BYTES,
        device: torch.device | str = "cpu",
    ) -> None:
        if scatter not in SCATTER_MODES:
            raise CamscopeError(f"scatter must be one of {', '.join(SCATTER_MODES)}, got {scatter!r}")
        if int(feature_size) < 1:
            raise CamscopeError(f"feature_size must be positive, got {feature_size}")
        self.feature_size = int(feature_size)
        self.max_scatter_bytes = int(max_scatter_bytes)
        self.device = torch.device(device)
        self._mode = "class" if scatter == "auto" else scatter
        self._auto = scatter == "auto"
        self._labels: list[int] = []
        self._row: dict[int, int] = {}
        k = self.feature_size
        self._counts = torch.zeros(0, dtype=torch.float64, device=self.device)
        self._means = torch.zeros(0, k, dtype=torch.float64, device=self.device)
        self._scatters: list[Tensor] = []
        self._within = torch.zeros(k, k, dtype=torch.float64, device=self.device) if self._mode == "shared" else None
        self._within_sum: Tensor | None = None

    # -- contents -----------------------------------------------------------------------

    @property
    def labels(self) -> list[int]:
        """The labels present, in order of appearance (``-1``: vectors without a label)."""
        return list(self._labels)

    def row(self, label: int) -> int | None:
        """The position of ``label`` in :attr:`labels`, or None when it is absent."""
        return self._row.get(int(label))

    @property
    def counts(self) -> Tensor:
        """Vectors per label, ``[C]`` (int64, aligned with :attr:`labels`)."""
        return self._counts.round().long()

    @property
    def means(self) -> Tensor:
        """Means per label ``[C, K]`` (float64, aligned with :attr:`labels`)."""
        return self._means

    @property
    def count(self) -> int:
        """All vectors."""
        return int(self._counts.sum().round()) if self._labels else 0

    @property
    def scatter_mode(self) -> str:
        """``"class"`` (per-class scatters) or ``"shared"`` (one within-class scatter)."""
        return self._mode

    @property
    def auto_scatter(self) -> bool:
        """Whether per-class scatters collapse to a shared one when over ``max_scatter_bytes``."""
        return self._auto

    def within(self) -> Tensor:
        """The within-class scatter ``W = sum_c S_c``, ``[K, K]`` float64 (cached until the next change)."""
        if self._within is not None:
            return self._within
        if self._within_sum is None:
            total = torch.zeros(self.feature_size, self.feature_size, dtype=torch.float64, device=self.device)
            for scatter in self._scatters:
                total += scatter
            self._within_sum = total
        return self._within_sum

    def scatter_of(self, rows: Sequence[int]) -> Tensor:
        """``sum_{c in rows} S_c`` for rows of :attr:`labels` (shared mode: ``(n_G / N) W``)."""
        if self._within is not None:
            share = float(self._counts[list(rows)].sum() / self._counts.sum())
            return self._within * share
        if len(rows) > len(self._labels) // 2:
            inside = set(rows)
            total = self.within().clone()
            for row in range(len(self._labels)):
                if row not in inside:
                    total -= self._scatters[row]
            return total
        total = torch.zeros(self.feature_size, self.feature_size, dtype=torch.float64, device=self.device)
        for row in rows:
            total += self._scatters[row]
        return total

    def pooled(self, rows: Sequence[int]) -> tuple[float, Tensor, Tensor]:
        """``(n_G, mu_G, S_G)`` of the labels at ``rows`` (see the module docstring); ``n_G = 0`` for no samples."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        counts = self._counts[index]
        total = float(counts.sum())
        mean = (counts[:, None] * self._means[index]).sum(dim=0) / max(total, 1.0)
        between = (self._means[index] - mean) * counts.sqrt()[:, None]
        return total, mean, self.scatter_of(list(rows)) + between.T @ between

    # -- updates ------------------------------------------------------------------------

    def update(self, embeddings: Tensor, labels: Tensor | Sequence[int] | None = None) -> ClassMoments:
        """Add vectors ``[B, K]`` with their labels (``-1`` or None: unlabelled); returns the accumulator."""
        if not isinstance(embeddings, Tensor) or embeddings.ndim != 2 or embeddings.shape[1] != self.feature_size:
            shape = list(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise CamscopeError(f"the bank holds embeddings [B, {self.feature_size}], got {shape}")
        batch = embeddings.shape[0]
        if labels is None:
            labels = torch.full((batch,), UNLABELLED, dtype=torch.long)
        labels = label_tensor(labels, batch).to(self.device)
        if batch == 0:
            return self
        z = embeddings.detach().to(self.device, torch.float64)
        if not bool(torch.isfinite(z).all()):
            raise CamscopeError("the embeddings contain NaN or infinite values: check the inputs and the model")
        uniq, inverse, batch_counts = torch.unique(labels.long(), return_inverse=True, return_counts=True)
        batch_counts = batch_counts.to(torch.float64)
        # per-class sums as a one-hot product (index_add_ is far slower on CPU under load)
        membership = torch.nn.functional.one_hot(inverse, len(uniq)).to(torch.float64)
        batch_means = (membership.T @ z) / batch_counts[:, None]
        centred = z - batch_means[inverse]
        rows = self._rows_for([int(u) for u in uniq.tolist()])
        old_counts = self._counts[rows]
        new_counts = old_counts + batch_counts
        delta = batch_means - self._means[rows]
        coefficient = old_counts * batch_counts / new_counts
        self._means[rows] += delta * (batch_counts / new_counts)[:, None]
        self._counts[rows] = new_counts
        # S += T + coef * delta delta^T  ==  S += X^T X  with  X = [centred rows; sqrt(coef) delta]:
        # one in-place BLAS update per matrix, no K x K temporaries.
        scaled = delta * coefficient.sqrt()[:, None]
        if self._within is None:
            order = torch.argsort(inverse, stable=True)
            blocks = torch.split(centred[order], batch_counts.long().tolist())
            for u, block in enumerate(blocks):
                rows_u = torch.cat([block, scaled[u : u + 1]])
                self._scatters[rows[u]].addmm_(rows_u.T, rows_u)
        else:
            rows_all = torch.cat([centred, scaled])
            self._within.addmm_(rows_all.T, rows_all)
        self._within_sum = None
        return self

    def _rows_for(self, labels: list[int]) -> list[int]:
        new = [label for label in labels if label not in self._row]
        if new:
            k = self.feature_size
            if self._mode == "class" and self._auto:
                needed = (len(self._labels) + len(new)) * k * k * 8
                if needed > self.max_scatter_bytes:
                    warnings.warn(
                        f"reference bank: {len(self._labels) + len(new)} per-class scatters of {k}x{k} would take "
                        f"{needed / 2**30:.1f} GiB > max_scatter_bytes; keeping one shared within-class scatter "
                        "(groups use n_c W / N for their classes' scatters)",
                        stacklevel=4,
                    )
                    self._collapse()
            for label in new:
                self._row[label] = len(self._labels)
                self._labels.append(label)
                if self._mode == "class":
                    self._scatters.append(torch.zeros(k, k, dtype=torch.float64, device=self.device))
            self._counts = torch.cat([self._counts, self._counts.new_zeros(len(new))])
            self._means = torch.cat([self._means, self._means.new_zeros(len(new), k)])
        return [self._row[label] for label in labels]

    def _collapse(self) -> None:
        """Per-class scatters to one shared within-class scatter (exact: ``W = sum_c S_c``)."""
        self._within = self.within()
        self._scatters = []
        self._mode = "shared"
        self._within_sum = None

    def merge(self, other: ClassMoments) -> ClassMoments:
        """A new accumulator with the vectors of both (exact: the moments of the union of their data).

        Labels come out sorted; the result keeps per-class scatters only when both do.
        """
        if not isinstance(other, ClassMoments) or other.feature_size != self.feature_size:
            shape = other.feature_size if isinstance(other, ClassMoments) else type(other).__name__
            raise CamscopeError(f"cannot merge moments of {self.feature_size} features with {shape}")
        mode = "class" if self._mode == other._mode == "class" else "shared"
        merged = ClassMoments(
            self.feature_size,
            scatter=mode if not (self._auto and other._auto) else "auto",
            max_scatter_bytes=max(self.max_scatter_bytes, other.max_scatter_bytes),
            device=self.device,
        )
        if mode == "shared":
            merged._mode = "shared"
            merged._within = torch.zeros(self.feature_size, self.feature_size, dtype=torch.float64, device=self.device)
        merged._rows_for(sorted(set(self._labels) | set(other._labels)))
        for part in (self, other):
            merged._absorb(part)
        return merged

    def _absorb(self, other: ClassMoments) -> None:
        """Add ``other``'s moments (Chan et al.'s update with its counts, means and scatters)."""
        rows = self._rows_for(other._labels)
        counts = other._counts.to(self.device)
        old = self._counts[rows]
        new = old + counts
        delta = other._means.to(self.device) - self._means[rows]
        coefficient = torch.where(new > 0, old * counts / new.clamp(min=1), torch.zeros_like(new))
        self._means[rows] += delta * (counts / new.clamp(min=1))[:, None]
        self._counts[rows] = new
        scaled = delta * coefficient.sqrt()[:, None]
        if self._within is None:
            for i, row in enumerate(rows):
                self._scatters[row] += other._scatters[i].to(self.device)
                self._scatters[row].addr_(scaled[i], scaled[i])
        else:
            self._within += other.within().to(self.device)
            self._within.addmm_(scaled.T, scaled)
        self._within_sum = None

    def to(self, device: torch.device | str) -> ClassMoments:
        """Move the statistics to a device (in place); returns the accumulator."""
        self.device = torch.device(device)
        self._counts = self._counts.to(self.device)
        self._means = self._means.to(self.device)
        self._scatters = [s.to(self.device) for s in self._scatters]
        if self._within is not None:
            self._within = self._within.to(self.device)
        self._within_sum = None
        return self

    # -- state --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A copy of the statistics: plain values and float64 tensors, which :meth:`load_state_dict` restores exactly.

        Keys: ``feature_size``, ``scatter`` (``"class"`` or ``"shared"``),
        ``auto_scatter``, ``max_scatter_bytes``, ``labels`` (``[C]`` int64),
        ``counts`` (``[C]``), ``means`` (``[C, K]``) and ``scatters``
        (``[C, K, K]``, class mode) or ``within`` (``[K, K]``, shared mode).
        """
        k = self.feature_size
        state: dict[str, Any] = {
            "feature_size": k,
            "scatter": self._mode,
            "auto_scatter": self._auto,
            "max_scatter_bytes": self.max_scatter_bytes,
            "labels": torch.tensor(self._labels, dtype=torch.long),
            "counts": self._counts.clone(),
            "means": self._means.clone(),
        }
        if self._within is None:
            empty = torch.zeros(0, k, k, dtype=torch.float64, device=self.device)
            state["scatters"] = torch.stack(self._scatters) if self._scatters else empty
        else:
            state["within"] = self._within.clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> ClassMoments:
        """Restore what :meth:`state_dict` returned (onto this accumulator's device); returns the accumulator.

        Raises:
            CamscopeError: for a missing entry, tensors of inconsistent shapes, or
                values no data can give (NaN or infinite values, counts below 1,
                scatters that are not symmetric positive semi-definite).
        """
        try:
            k = checked_int(state["feature_size"], "feature_size", minimum=1)
            mode = state["scatter"]
            if mode not in ("class", "shared"):
                raise CamscopeError(f"scatter must be 'class' or 'shared', got {mode!r}")
            key = "scatters" if mode == "class" else "within"
            labels_tensor = checked_tensor(torch.as_tensor(state["labels"]), "labels", [-1], torch.int64)
            classes = labels_tensor.numel()
            counts = checked_tensor(torch.as_tensor(state["counts"]), "counts", [classes], torch.float64)
            means = checked_tensor(torch.as_tensor(state["means"]), "means", [classes, k], torch.float64)
            expected = [classes, k, k] if mode == "class" else [k, k]
            scatter = checked_tensor(torch.as_tensor(state[key]), key, expected, torch.float64)
        except CamscopeError as error:
            raise CamscopeError(f"inconsistent statistics: {error}") from error
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CamscopeError(f"missing or bad entry {error}") from error
        labels = [int(v) for v in labels_tensor.tolist()]
        if len(set(labels)) != classes or any(label < UNLABELLED for label in labels):
            raise CamscopeError(f"labels must be distinct and at least {UNLABELLED}, got {labels}")
        if classes and (
            float(counts.min()) < 1 or float(counts.max()) > 2**53 or bool((counts != counts.round()).any())
        ):
            raise CamscopeError(
                f"every class needs a count of at least 1 (and at most 2**53), in whole numbers, got {counts.tolist()}"
            )
        check_scatters(scatter.reshape(-1, k, k), key)
        _check_pooled(counts, means, scatter)
        self.feature_size, self._mode = k, mode
        self._auto = bool(state.get("auto_scatter", False))
        self.max_scatter_bytes = int(state.get("max_scatter_bytes", self.max_scatter_bytes))
        self._labels, self._row = labels, {label: i for i, label in enumerate(labels)}
        self._counts, self._means = counts.to(self.device), means.to(self.device)
        scatter = scatter.to(self.device)
        self._scatters = list(scatter.unbind(0)) if mode == "class" else []
        self._within = scatter if mode == "shared" else None
        self._within_sum = None
        return self

    def __repr__(self) -> str:
        return f"ClassMoments(K={self.feature_size}, classes={len(self._labels)}, samples={self.count}, scatter={self._mode!r})"


def _check_pooled(counts: Tensor, means: Tensor, scatter: Tensor) -> None:
    """Raise unless the moments of all classes together are finite (then those of any group are)."""
    if not counts.numel():
        return
    total = counts.sum()
    mean = (counts[:, None] * means).sum(0) / total
    spread = ((means - mean) ** 2 * counts[:, None]).sum(0)
    within = scatter.reshape(-1, *scatter.shape[-2:]).diagonal(dim1=1, dim2=2).sum(0)
    if not (bool(mean.isfinite().all()) and bool((spread + within).isfinite().all())):
        raise CamscopeError("the statistics overflow when classes are pooled: the file holds values far too large")


#: Work (multiply-adds) allowed for exact eigenvalue checks of loaded scatters; larger ones get cheaper checks.
_EIGEN_BUDGET = 2e9
#: Relative tolerance of the symmetry and positive semi-definiteness checks.
_SCATTER_TOLERANCE = 1e-6


def check_scatters(scatters: Tensor, name: str = "scatters") -> None:
    """Raise a :class:`CamscopeError` unless every ``[K, K]`` matrix of ``scatters`` is a scatter.

    A scatter ``sum (z - mu)(z - mu)^T`` is symmetric positive semi-definite. The
    check allows float64 rounding relative to the largest diagonal entry. When
    exact eigenvalues would take too long (many large matrices), it checks the
    diagonal, ``S_ij^2 <= S_ii S_jj`` and ``v^T S v >= 0`` for random ``v``.
    """
    count, k = scatters.shape[0], scatters.shape[-1]
    exact = count * k**3 <= _EIGEN_BUDGET
    generator = torch.Generator(device=scatters.device).manual_seed(0)
    for index, matrix in enumerate(scatters):
        diagonal = matrix.diagonal()
        scale = max(float(diagonal.abs().max()) if k else 0.0, 1e-300)
        tolerance = _SCATTER_TOLERANCE * scale
        what = f"{name}[{index}]" if scatters.dim() == 3 and count > 1 else name
        if float((matrix - matrix.T).abs().max()) > tolerance:
            raise CamscopeError(f"{what} is not symmetric: it is not a scatter matrix")
        if float(diagonal.min()) < -tolerance:
            raise CamscopeError(f"{what} has a negative diagonal: it is not a scatter matrix")
        if exact:  # eigenvalues of the matrix scaled to a unit diagonal maximum, which cannot overflow
            lowest = float(torch.linalg.eigvalsh((matrix / scale + matrix.T / scale) / 2).min()) * scale
        else:
            bound = diagonal.clamp(min=0).sqrt()
            if bool((matrix.abs() > bound[:, None] * bound[None, :] + tolerance).any()):
                raise CamscopeError(f"{what} is not positive semi-definite: it is not a scatter matrix")
            probes = torch.randn(k, 8, generator=generator, device=matrix.device, dtype=matrix.dtype)
            probes = probes / probes.norm(dim=0, keepdim=True)
            lowest = float((probes * (matrix @ probes)).sum(0).min())
        if not lowest >= -tolerance * k:  # NaN included
            raise CamscopeError(f"{what} is not positive semi-definite: it is not a scatter matrix")
