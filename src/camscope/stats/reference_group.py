"""Reference groups: ``n`` embeddings summarised by their mean and scatter, and DiffCAM's regularised solve.

A group of references ``z_1..z_n`` (``[K]`` each) keeps the count ``n``, the
mean ``mu`` and the scatter ``S_v = sum_i (z_i - mu)(z_i - mu)^T`` in float64.
DiffCAM ("DiffCAM: Data-Driven Saliency Maps by Capturing Feature Differences",
CVPR 2025) weights a layer's channels by ``w* = Sigma_reg^-1 (z - mu)`` with
the covariance ``Sigma = S_v / n`` regularised as

* ``"oas"``: ``Sigma_rho = (1 - rho) Sigma + rho (tr Sigma / K) I`` with the
  Oracle Approximating Shrinkage coefficient ``rho`` (:func:`oas_shrinkage`;
  "Shrinkage Algorithms for MMSE Covariance Estimation", arXiv:0907.4698),
* a number ``r >= 0``: ``Sigma + r (tr Sigma / K) I`` (``r = 0``: none; needs
  at least ``K + 1`` references).

See :mod:`camscope.methods.diffcam` for the derivation and the choice of ``"oas"``.

Example:
    >>> import torch
    >>> group = ReferenceGroup.from_embeddings(torch.randn(50, 4, dtype=torch.float64))
    >>> group.count, group.feature_size
    (50, 4)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from camscope.errors import CamscopeError

__all__ = ["ReferenceGroup", "oas_shrinkage", "regularization_key"]


def oas_shrinkage(covariance: Tensor, count: int) -> float:
    """The Oracle Approximating Shrinkage coefficient ``rho`` of a covariance.

    ``rho = min(1, (tr(S^2) + tr(S)^2) / ((n + 1) (tr(S^2) - tr(S)^2 / K)))`` for the
    empirical covariance ``S`` (divided by ``n``) of ``n`` samples in ``K``
    dimensions (Chen et al. 2010, Eq. 23 without the ``2/K`` terms, exactly as
    ``sklearn.covariance.OAS``); 1 when the denominator vanishes.
    """
    features = covariance.shape[0]
    if features == 1:
        return 0.0
    trace = float(torch.diagonal(covariance).sum())
    trace2 = float((covariance * covariance).sum())
    denominator = (count + 1) * (trace2 - trace * trace / features)
    if denominator <= 0:
        return 1.0
    return min((trace2 + trace * trace) / denominator, 1.0)


def regularization_key(regularization: Any) -> str | float:
    """``"oas"`` or the number ``r >= 0`` that ``regularization`` gives; else a :class:`CamscopeError`."""
    if isinstance(regularization, str):
        if regularization.lower() != "oas":
            raise CamscopeError(f"regularization must be 'oas' or a number >= 0, got {regularization!r}")
        return "oas"
    try:
        value = float(regularization)
    except (TypeError, ValueError):
        raise CamscopeError(f"regularization must be 'oas' or a number >= 0, got {regularization!r}") from None
    if not math.isfinite(value) or value < 0:
        raise CamscopeError(f"regularization must be 'oas' or a number >= 0, got {regularization!r}")
    return value


class ReferenceGroup:
    """A reference group: ``n`` embeddings summarised by their mean and scatter.

    ``weights(z)`` gives DiffCAM's ``w* = Sigma_reg^-1 (z - mu)`` for a batch of
    embeddings with one Cholesky factorisation per regularisation and device,
    cached on the group (see :mod:`camscope.stats.reference_group` for ``Sigma_reg``).

    Args:
        count: the number of references ``n`` (>= 1).
        mean: ``mu``, ``[K]``.
        scatter: ``S_v = sum_i (z_i - mu)(z_i - mu)^T``, ``[K, K]``.
        classes: the bank labels the group pools, if it comes from a bank.
        name: a label such as ``"others(3)"``.
        source: the metadata of the bank it comes from (layer, model, ...).

    Example:
        >>> import torch
        >>> group = ReferenceGroup.from_embeddings(torch.randn(50, 4, dtype=torch.float64))
        >>> group.weights(torch.zeros(2, 4)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        count: int,
        mean: Tensor,
        scatter: Tensor,
        *,
        classes: Sequence[int] | None = None,
        name: str = "group",
        source: dict[str, Any] | None = None,
    ) -> None:
        if int(count) < 1:
            raise CamscopeError(
                f"the reference group {name!r} is empty: it needs at least one reference "
                "(choose classes that the bank has samples of, or pass reference inputs)"
            )
        mean = torch.as_tensor(mean).detach().to(torch.float64)
        scatter = torch.as_tensor(scatter).detach().to(device=mean.device, dtype=torch.float64)
        if mean.ndim != 1 or scatter.shape != (mean.shape[0], mean.shape[0]):
            raise CamscopeError(
                f"a group needs a mean [K] and a scatter [K, K], got {list(mean.shape)} and {list(scatter.shape)}"
            )
        self.count = int(count)
        self.mean = mean
        self.scatter = scatter
        self.classes = tuple(int(c) for c in classes) if classes is not None else None
        self.name = name
        self.source = dict(source or {})
        self._factors: dict[tuple[str | float, str], tuple[Tensor, float]] = {}

    @classmethod
    def from_embeddings(
        cls, embeddings: Tensor, name: str = "embeddings", source: dict[str, Any] | None = None
    ) -> ReferenceGroup:
        """The group of ``[N, K]`` reference embeddings (accumulated in float64)."""
        if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
            shape = list(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise CamscopeError(f"reference embeddings must be a tensor [N, K], got {shape}")
        if embeddings.shape[0] == 0:
            raise CamscopeError("the reference group is empty: pass at least one reference embedding or input")
        values = embeddings.detach().to(torch.float64)
        if not bool(torch.isfinite(values).all()):
            raise CamscopeError("reference embeddings contain NaN or infinite values")
        mean = values.mean(dim=0)
        centred = values - mean
        return cls(values.shape[0], mean, centred.T @ centred, name=name, source=source)

    @property
    def feature_size(self) -> int:
        """``K``, the embedding size."""
        return int(self.mean.shape[0])

    @property
    def covariance(self) -> Tensor:
        """``Sigma = S_v / n`` (float64)."""
        return self.scatter / self.count

    def shrinkage(self) -> float:
        """The OAS coefficient ``rho`` of this group (see :func:`oas_shrinkage`)."""
        return oas_shrinkage(self.covariance, self.count)

    def regularized_covariance(self, regularization: float | str = "oas") -> tuple[Tensor, float]:
        """``(Sigma_reg, lambda)``: the matrix DiffCAM inverts and the equivalent Tikhonov ``lambda``.

        ``"oas"``: ``(1 - rho) Sigma + rho (tr Sigma / K) I`` (``lambda = rho / (1 - rho) tr Sigma / K``,
        infinite when ``rho = 1``); a number ``r``: ``Sigma + r (tr Sigma / K) I``. References
        without any spread (one reference, or identical ones) give the identity,
        i.e. ``w* = z - mu``, unless ``regularization=0``.

        Raises:
            CamscopeError: with ``regularization=0`` and fewer than ``K + 1``
                references, or without spread.
        """
        key = regularization_key(regularization)
        covariance = self.covariance
        features = self.feature_size
        scale = float(torch.diagonal(covariance).sum()) / features
        eye = torch.eye(features, dtype=torch.float64, device=covariance.device)
        if key == 0.0:
            if self.count - 1 < features:
                raise CamscopeError(
                    f"the reference group {self.name!r} has {self.count} references for {features} features: "
                    f"its scatter has rank at most {self.count - 1} < {features}, so S_v cannot be inverted without "
                    "regularisation; use regularization='oas' (default) or a number > 0, or more references"
                )
            if scale <= 0:
                raise CamscopeError(
                    f"the references of group {self.name!r} do not vary (zero scatter): "
                    "use regularization='oas' (default) or a number > 0"
                )
            return covariance, 0.0
        if scale <= 0:
            return eye, math.inf
        if key == "oas":
            rho = oas_shrinkage(covariance, self.count)
            lam = math.inf if rho >= 1 else rho / (1 - rho) * scale
            return (1 - rho) * covariance + rho * scale * eye, lam
        lam = float(key) * scale
        return covariance + lam * eye, lam

    def _factor(self, regularization: float | str, device: torch.device) -> Tensor:
        key = (regularization_key(regularization), str(device))
        if key not in self._factors:
            base = (key[0], str(self.mean.device))
            if base not in self._factors:
                matrix, lam = self.regularized_covariance(regularization)
                factor, info = torch.linalg.cholesky_ex(matrix)
                if int(info) != 0:
                    raise CamscopeError(
                        f"the covariance of reference group {self.name!r} is singular "
                        f"(regularization={regularization!r}; e.g. channels that never activate): "
                        "use regularization='oas' (default) or a number > 0"
                    )
                self._factors[base] = (factor, lam)
            factor, lam = self._factors[base]
            self._factors[key] = (factor.to(device), lam)
        return self._factors[key][0]

    def solve(self, differences: Tensor, regularization: float | str = "oas") -> Tensor:
        """``Sigma_reg^-1 d`` for a batch of difference vectors ``[B, K]`` (float64, on their device)."""
        if differences.ndim != 2 or differences.shape[1] != self.feature_size:
            raise CamscopeError(
                f"the reference group has {self.feature_size} features but the embeddings are "
                f"{list(differences.shape)}: the references come from another layer or model"
            )
        factor = self._factor(regularization, differences.device)
        # Two triangular solves with L and L^T: torch.cholesky_solve copies the K x K factor
        # on every call (about 10x slower at K = 2048 on the CPU).
        half = torch.linalg.solve_triangular(factor, differences.to(torch.float64).T, upper=False)
        return torch.linalg.solve_triangular(factor.mT, half, upper=True).T

    def weights(self, embeddings: Tensor, regularization: float | str = "oas") -> Tensor:
        """DiffCAM's channel weights ``w* = Sigma_reg^-1 (z - mu)`` for ``[B, K]`` embeddings (float64)."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.feature_size:
            raise CamscopeError(
                f"the reference group has {self.feature_size} features but the layer gives {list(embeddings.shape)[1:]}: "
                "build the references at the explained layer"
            )
        mean = self.mean.to(embeddings.device)
        return self.solve(embeddings.to(torch.float64) - mean, regularization)

    def __repr__(self) -> str:
        return f"ReferenceGroup({self.name!r}, n={self.count}, K={self.feature_size})"
