"""DiffCAM: how an example differs from a group of reference examples.

DiffCAM (papers/diffcam.txt, Sec. 3.2) explains an example by the direction in
the feature space that best separates it from a *reference group*, instead of
the direction towards a decision boundary (Grad-CAM, CAM). No gradients and no
classifier are needed, so self-supervised backbones and ViTs work.

Derivation (the paper's Eq. 4-7, restated). Let ``A_k(x)`` be the layer's
channels, ``z = mean_ij A(x)`` the embedding of the example (``[K]``) and
``z_1..z_n`` those of the references, with mean ``mu`` and scatter
``S_v = sum_i (z_i - mu)(z_i - mu)^T``. The Fisher-like criterion

    J(w) = (w^T (z - mu))^2 / (w^T S_v w)

is a ratio of quadratic forms; setting its gradient to zero gives
``S_d w = J S_v w`` with the rank-one ``S_d = (z - mu)(z - mu)^T``, so
``S_v w`` is parallel to ``z - mu``: ``w* = S_v^-1 (z - mu)`` up to a positive
factor (which J ignores). The map is ``M = sum_k w*_k A_k`` (signed).

What camscope fixes where the paper leaves details open:

* **Scale.** camscope uses the covariance ``Sigma = S_v / n`` in place of
  ``S_v``: the direction (and every normalised map) is the paper's exactly, and
  ``w*^T (z - mu)`` becomes the (regularised) squared Mahalanobis distance of
  the example from the group, so raw maps of groups of different sizes are on
  one scale.
* **Regularisation** (the paper: "a small Tikhonov term lambda I"). The
  default, ``regularization="oas"``, shrinks the covariance towards a multiple
  of the identity with the Oracle Approximating Shrinkage coefficient
  ``rho`` (Chen et al. 2010, as in ``sklearn.covariance.OAS``):
  ``Sigma_rho = (1 - rho) Sigma + rho (tr Sigma / K) I``, i.e. Tikhonov with
  ``lambda = rho / (1 - rho) * tr(Sigma) / K``, relative to the scale of
  ``S_v``. ``rho`` is small when the references are many compared with the
  ``K`` features (the paper's small lambda) and large when they are few
  (e.g. one class of deep features, ``n < K``), where a fixed small lambda
  lets the null space of the few references dominate ``w*``. On synthetic
  groups with power-law spectra (``benchmarks/diffcam.py --study``) OAS was
  the best or close to the best choice for every spectrum and ``n/K`` from
  0.1 to 30 in recovering the population direction, while each fixed
  ``lambda`` failed in some regime. A number ``r >= 0`` gives the fixed
  ``lambda = r * tr(Sigma) / K``; ``r = 0`` is the unregularised paper
  formula and needs at least ``K + 1`` references (else a clear error).
* **Embedding.** The spatial mean of the layer's activations, the paper's
  choice; for token models the mean of the patch tokens, or the class token
  with ``embedding="cls"`` (token 0 of the layer's output).

Reference groups come from a :class:`ReferenceBank` (per-class counts, means
and scatters from one pass over a dataset, float64) or directly from reference
inputs or embeddings. A group of classes ``G`` has the pooled scatter
``S_G = sum_{c in G} [S_c + n_c (mu_c - mu_G)(mu_c - mu_G)^T]``:

* ``"others"`` every class but the example's: "why is it c" (default),
* ``"knn"`` the ``k`` classes whose means are nearest to the example's
  embedding, its own class excluded (the paper's ImageNet setting, k = 100),
* ``"class"`` one class (or several) d: "why not d" (counterfactual),
* ``"intra"`` the example's own class: what makes it atypical,
* ``"all"`` every sample (unlabelled banks, self-supervised models).

Example:
    >>> import camscope, torch
    >>> from torchvision.models import resnet18
    >>> model = resnet18(num_classes=3).eval()
    >>> data = [(torch.randn(8, 3, 64, 64), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))]
    >>> bank = camscope.ReferenceBank.build(model, data, layer="layer4")
    >>> e = camscope.explain(model, torch.randn(2, 3, 64, 64), method="diffcam", layer="layer4",
    ...                      reference=bank.group("class", 1))
    >>> e.raw.shape, e.weights.shape
    (torch.Size([2, 2, 2]), torch.Size([2, 512]))
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.capture import (
    LayerSpec,
    default_layer,
    model_state,
    resolve_layers,
    to_channels_first,
    validate_inputs,
)
from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.engine.options import Option
from camscope.errors import CamscopeError
from camscope.targets.base import ClassTarget, Target

__all__ = [
    "BANK_KIND",
    "CounterfactualPair",
    "DiffCAM",
    "ReferenceBank",
    "ReferenceGroup",
    "counterfactual",
    "embed",
    "model_fingerprint",
    "oas_shrinkage",
]

#: The ``kind`` of bank files (see :mod:`camscope.io`).
BANK_KIND = "reference-bank"

#: Label of samples without a class (as :data:`camscope.passes.batches.UNLABELLED`).
UNLABELLED = -1

_EMBEDDINGS = ("mean", "cls")
_GROUP_KINDS = ("others", "knn", "class", "intra", "all")
_SCATTER_MODES = ("auto", "class", "shared")
_DEFAULT_K = 100
_DEFAULT_MAX_SCATTER_BYTES = 1 << 30


# --------------------------------------------------------------------------------------
# Model fingerprints and embeddings
# --------------------------------------------------------------------------------------

_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def _state_tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    return list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if b is not None]


def model_fingerprint(model: nn.Module, name: str | None = None) -> dict[str, Any]:
    """What identifies a model for a bank: its class, architecture and weights.

    ``architecture`` hashes the names, shapes and dtypes of the parameters and
    buffers; ``weights`` is the float64 sum of all floating-point values plus
    their absolute values (``weights_scale`` is the sum of absolute values, the
    tolerance of the comparison). The result is cached per model until a
    parameter changes (an in-place update bumps the tensor's version).

    Args:
        model: the network.
        name: a name to record (the CLI's model name); default: the class name.
    """
    tensors = _state_tensors(model)
    key = tuple((t.data_ptr(), t._version, tuple(t.shape)) for _, t in tensors)
    cached = _FINGERPRINTS.get(model)
    if cached is None or cached[0] != key:
        digest = hashlib.sha256()
        total = torch.zeros((), dtype=torch.float64)
        scale = torch.zeros((), dtype=torch.float64)
        for tensor_name, tensor in tensors:
            digest.update(f"{tensor_name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            if tensor.is_floating_point():
                values = tensor.detach().double()
                magnitude = values.abs().sum()
                total += (values.sum() + magnitude).cpu()
                scale += magnitude.cpu()
        fingerprint = {
            "class": type(model).__name__,
            "architecture": digest.hexdigest()[:16],
            "weights": float(total),
            "weights_scale": float(scale),
        }
        _FINGERPRINTS[model] = (key, fingerprint)
        cached = _FINGERPRINTS[model]
    result = dict(cached[1])
    result["name"] = name or result["class"]
    return result


def _fingerprint_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    if expected.get("architecture") != actual.get("architecture"):
        return [
            f"model: the bank was built with a {expected.get('name')} ({expected.get('class')}, architecture "
            f"{expected.get('architecture')}), this is a {actual.get('class')} (architecture {actual.get('architecture')})"
        ]
    tolerance = 1e-6 * max(float(expected.get("weights_scale", 0.0)), float(actual.get("weights_scale", 0.0)), 1e-12)
    if abs(float(expected.get("weights", 0.0)) - float(actual.get("weights", 0.0))) > tolerance:
        return [
            f"model: same architecture ({expected.get('class')}) but other weights than the bank's {expected.get('name')}"
        ]
    return []


class _StopForward(BaseException):
    """Ends a forward pass once the layer has run (a BaseException, so models' ``except Exception`` let it through)."""


def _embedding_of(
    output: Tensor,
    inputs_shape: Sequence[int],
    layer: str,
    model: nn.Module,
    embedding: str,
    layout: dict[str, Any],
) -> Tensor:
    """``[B, K]`` embedding from a layer's output: spatial mean, or the class token."""
    if embedding == "cls":
        if output.ndim != 3:
            raise CamscopeError(
                f"embedding='cls' needs a token layer ([B, tokens, K]); layer {layer!r} outputs "
                f"{list(output.shape)}: use embedding='mean'"
            )
        return output[:, 0]
    grid = to_channels_first(output, inputs_shape, layer, model, **layout)
    return grid.mean(dim=tuple(range(2, grid.ndim)))


class _LayerEmbedder:
    """Forward hooks that turn a batch into embeddings at one layer (no autograd, stops after the layer)."""

    def __init__(
        self, model: nn.Module, layer: str, module: nn.Module, embedding: str, layout: dict[str, Any], stop_early: bool
    ) -> None:
        self.model, self.layer, self.module = model, layer, module
        self.embedding, self.layout, self.stop_early = embedding, layout, stop_early
        self._output: Tensor | None = None
        self._handle: Any = None

    def __enter__(self) -> _LayerEmbedder:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            tensor = output if isinstance(output, Tensor) else output[0] if isinstance(output, (tuple, list)) else None
            if not isinstance(tensor, Tensor):
                raise CamscopeError(f"layer {self.layer!r} returns {type(output).__name__}, not a tensor")
            if self._output is None:
                self._output = tensor.detach()
            if self.stop_early:
                raise _StopForward
            # A clone downstream: in-place ops after the layer must not rewrite the embedding.
            return output.clone() if isinstance(output, Tensor) else (tensor.clone(), *output[1:])

        self._handle = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __call__(self, inputs: Tensor) -> Tensor:
        self._output = None
        try:
            with torch.no_grad():
                self.model(inputs)
        except _StopForward:
            pass
        if self._output is None:
            raise CamscopeError(
                f"layer {self.layer!r} did not run in the forward pass: choose a layer that the model uses"
            )
        return _embedding_of(self._output, inputs.shape, self.layer, self.model, self.embedding, self.layout)


def _layer_name(model: nn.Module, layer: LayerSpec | None, sample: Tensor) -> tuple[str, nn.Module]:
    spec = layer if layer is not None else default_layer(model, sample)
    resolved = resolve_layers(model, spec)
    if len(resolved) != 1:
        raise CamscopeError(f"a reference bank holds one layer's embeddings; got {len(resolved)} layers")
    return resolved[0]


def _check_embedding(embedding: str) -> str:
    if embedding not in _EMBEDDINGS:
        raise CamscopeError(f"unknown embedding {embedding!r}: use 'mean' (spatial mean) or 'cls' (class token)")
    return embedding


def embed(
    model: nn.Module,
    inputs: Tensor,
    layer: LayerSpec | None = None,
    *,
    embedding: str = "mean",
    batch_size: int = 64,
    layout: str = "auto",
    grid: tuple[int, int] | None = None,
    prefix_tokens: int | None = None,
) -> Tensor:
    """Embeddings ``[N, K]`` of inputs at a layer, as DiffCAM and the banks compute them.

    Args:
        model: the network (run in eval mode, without autograd).
        inputs: ``[N, C, H, W]`` on the model's device.
        layer: the layer (default: :func:`camscope.engine.capture.default_layer`).
        embedding: ``"mean"`` (spatial mean / mean of the patch tokens) or
            ``"cls"`` (the class token, token 0 of a token layer's output).
        batch_size: inputs per forward pass.
        layout, grid, prefix_tokens: as in :class:`camscope.Explainer`.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> embed(resnet18().eval(), torch.randn(3, 3, 64, 64), "layer4").shape
        torch.Size([3, 512])
    """
    inputs = validate_inputs(model, inputs)
    name, module = _layer_name(model, layer, inputs[:1])
    layout_options = dict(layout=layout, grid=grid, prefix_tokens=prefix_tokens)
    with (
        model_state(model),
        _LayerEmbedder(model, name, module, _check_embedding(embedding), layout_options, True) as run,
    ):
        return torch.cat([run(inputs[i : i + batch_size]) for i in range(0, inputs.shape[0], batch_size)])


# --------------------------------------------------------------------------------------
# Reference groups
# --------------------------------------------------------------------------------------


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


def _regularization_key(regularization: Any) -> str | float:
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
    cached on the group (see the module docstring for ``Sigma_reg``).

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
        key = _regularization_key(regularization)
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
        key = (_regularization_key(regularization), str(device))
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


# --------------------------------------------------------------------------------------
# Reference banks
# --------------------------------------------------------------------------------------


def _class_names_of(data: Any) -> list[str] | None:
    names = getattr(data, "class_names", None)
    if names:
        return list(names)
    dataset = getattr(data, "dataset", None)
    classes = getattr(dataset, "classes", None)
    if classes and all(isinstance(c, str) for c in classes):
        return list(classes)
    return None


def _batches_total(data: Any, batch_size: int) -> int | None:
    from camscope.data.folders import ImageFolderData

    if isinstance(data, ImageFolderData):
        return math.ceil(len(data) / batch_size)
    if isinstance(data, Tensor):
        return math.ceil(data.shape[0] / batch_size)
    try:
        return len(data)
    except TypeError:
        return None


class ReferenceBank:
    """Per-class statistics of one layer's embeddings over a dataset, for DiffCAM.

    For every class ``c`` the bank keeps the count ``n_c``, the mean ``mu_c``
    and the scatter ``S_c = sum_{i in c} (z_i - mu_c)(z_i - mu_c)^T``, all
    accumulated in float64 with Chan et al.'s pairwise update, so building in
    one pass, updating batch by batch and merging banks are exact (up to
    rounding). Samples without labels (``-1``) form one class of their own.

    Per-class scatters take ``C K^2`` doubles (33 MB per class at ``K = 2048``).
    With ``scatter="auto"`` (default) the bank keeps them while they fit in
    ``max_scatter_bytes`` (1 GiB) and otherwise keeps one *shared* within-class
    scatter ``W = sum_c S_c`` (exact) plus the per-class counts and means; a
    group then uses ``S_c ~ n_c W / N`` for its classes' own scatters (the
    between-class terms stay exact). ``scatter="class"`` or ``"shared"`` forces a mode.

    Use :meth:`build` (one pass over a dataset), :meth:`update`, :meth:`merge`,
    :meth:`save` / :meth:`load`, and :meth:`group` for reference groups.

    Example:
        >>> import torch
        >>> bank = ReferenceBank(feature_size=4, layer="layer4")
        >>> _ = bank.update(torch.randn(10, 4), torch.tensor([0, 1] * 5))
        >>> bank.labels, bank.counts.tolist()
        ([0, 1], [5, 5])
        >>> bank.group("class", 1)
        ReferenceGroup('class(1)', n=5, K=4)
    """

    def __init__(
        self,
        feature_size: int,
        layer: str,
        *,
        embedding: str = "mean",
        model: dict[str, Any] | None = None,
        class_names: Sequence[str] | dict[int, str] | None = None,
        scatter: str = "auto",
        max_scatter_bytes: int = _DEFAULT_MAX_SCATTER_BYTES,
        layout: dict[str, Any] | None = None,
        input_size: Sequence[int] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if scatter not in _SCATTER_MODES:
            raise CamscopeError(f"scatter must be one of {', '.join(_SCATTER_MODES)}, got {scatter!r}")
        if int(feature_size) < 1:
            raise CamscopeError(f"feature_size must be positive, got {feature_size}")
        self.feature_size = int(feature_size)
        self.layer = str(layer)
        self.embedding = _check_embedding(embedding)
        self.model = dict(model) if model else None
        self.layout = dict(layout or {"layout": "auto", "grid": None, "prefix_tokens": None})
        self.input_size = list(input_size) if input_size is not None else None
        self.max_scatter_bytes = int(max_scatter_bytes)
        self._mode = "class" if scatter == "auto" else scatter
        self._auto = scatter == "auto"
        self.device = torch.device(device)
        self._names: dict[int, str] = {}
        if class_names is not None:
            items = class_names.items() if isinstance(class_names, dict) else enumerate(class_names)
            self._names = {int(label): str(name) for label, name in items}
        self._labels: list[int] = []
        self._row: dict[int, int] = {}
        k = self.feature_size
        self._counts = torch.zeros(0, dtype=torch.float64, device=self.device)
        self._means = torch.zeros(0, k, dtype=torch.float64, device=self.device)
        self._scatters: list[Tensor] = []
        self._within = torch.zeros(k, k, dtype=torch.float64, device=self.device) if self._mode == "shared" else None
        self.cache_size = 8
        self._groups: OrderedDict[tuple[int, ...], ReferenceGroup] = OrderedDict()
        self._derived: dict[str, Any] = {}

    # -- construction -------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        model: nn.Module,
        data: Any,
        layer: LayerSpec | None = None,
        *,
        embedding: str = "mean",
        batch_size: int = 32,
        device: torch.device | str | None = None,
        size: int = 224,
        class_names: Sequence[str] | dict[int, str] | None = None,
        scatter: str = "auto",
        max_scatter_bytes: int = _DEFAULT_MAX_SCATTER_BYTES,
        model_name: str | None = None,
        progress: bool | None = None,
        layout: str = "auto",
        grid: tuple[int, int] | None = None,
        prefix_tokens: int | None = None,
    ) -> ReferenceBank:
        """Build a bank in one pass over a dataset.

        Each batch runs through the model without autograd and in eval mode up
        to the layer only (a forward hook ends the pass there), and its
        embeddings update the per-class statistics on the model's device.

        Args:
            model: the network.
            data: a folder (ImageFolder layout ``root/CLASS/*.png`` gives labels
                and class names; a flat folder is unlabelled), an
                :class:`~camscope.passes.batches.ImageFolderData`, a DataLoader or any
                iterable of ``(inputs, labels)`` batches or input tensors
                (unlabelled), or one tensor batch.
            layer: the layer (default: the model's default layer).
            embedding: ``"mean"`` or ``"cls"`` (see :func:`embed`).
            batch_size: batch size for folders and tensors.
            device: where to run (default: the model's device).
            size: image size for folders.
            class_names: names by label (a list indexed by label, or a dict);
                default: the folder names, ``dataset.classes``, or the labels.
            scatter: ``"auto"``, ``"class"`` or ``"shared"`` (see the class docstring).
            max_scatter_bytes: memory allowed for per-class scatters in ``"auto"``.
            model_name: the model's name to record (default: its class name).
            progress: show a progress bar (default: when stderr is a terminal).
            layout, grid, prefix_tokens: as in :class:`camscope.Explainer`.

        Returns:
            The bank.
        """
        from camscope.data.folders import ImageFolderData
        from camscope.passes.batches import iter_batches
        from camscope.passes.batches import progress as progress_bar

        if not isinstance(model, nn.Module):
            raise CamscopeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if int(batch_size) < 1:
            raise CamscopeError(f"batch_size must be positive, got {batch_size}")
        if isinstance(data, (str, os.PathLike)):
            data = ImageFolderData(data, size=size)
        names = class_names if class_names is not None else _class_names_of(data)
        if device is None:
            parameter = next(model.parameters(), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
        layout_options = dict(layout=layout, grid=grid, prefix_tokens=prefix_tokens)
        embedding = _check_embedding(embedding)
        bank: ReferenceBank | None = None
        batches = iter_batches(data, batch_size=batch_size, device=device, size=size)
        total = _batches_total(data, batch_size)
        with model_state(model):
            embedder = None
            try:
                for inputs, labels in progress_bar(batches, "building reference bank", total=total, enabled=progress):
                    if bank is None:
                        inputs = validate_inputs(model, inputs)
                        name, module = _layer_name(model, layer, inputs[:1])
                        embedder = _LayerEmbedder(model, name, module, embedding, layout_options, True).__enter__()
                        z = embedder(inputs)
                        bank = cls(
                            z.shape[1],
                            name,
                            embedding=embedding,
                            model=model_fingerprint(model, model_name),
                            class_names=names,
                            scatter=scatter,
                            max_scatter_bytes=max_scatter_bytes,
                            layout=layout_options,
                            input_size=list(inputs.shape[2:]),
                            device=z.device,
                        )
                    else:
                        z = embedder(inputs)
                    bank.update(z, labels)
            finally:
                if embedder is not None:
                    embedder.__exit__()
        if bank is None:
            raise CamscopeError("the dataset gave no batches: a reference bank needs at least one sample")
        return bank

    def update(self, embeddings: Tensor, labels: Tensor | Sequence[int] | None = None) -> ReferenceBank:
        """Add a batch of embeddings ``[B, K]`` with their labels (``-1`` or None: unlabelled).

        Chan et al.'s update per class: with the batch's count ``m``, mean ``nu``
        and scatter ``T`` of the class, ``n' = n + m``,
        ``mu' = mu + (m / n') (nu - mu)`` and
        ``S' = S + T + (n m / n') (nu - mu)(nu - mu)^T``.

        Returns:
            The bank itself (updated in place).
        """
        if not isinstance(embeddings, Tensor) or embeddings.ndim != 2 or embeddings.shape[1] != self.feature_size:
            shape = list(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise CamscopeError(f"the bank holds embeddings [B, {self.feature_size}], got {shape}")
        batch = embeddings.shape[0]
        if labels is None:
            labels = torch.full((batch,), UNLABELLED, dtype=torch.long)
        labels = torch.as_tensor(labels).reshape(-1).to(self.device)
        if labels.is_floating_point() or labels.numel() != batch:
            raise CamscopeError(
                f"labels must be {batch} integers (one per embedding), got {list(labels.shape)} {labels.dtype}"
            )
        if batch == 0:
            return self
        z = embeddings.detach().to(self.device, torch.float64)
        if not bool(torch.isfinite(z).all()):
            raise CamscopeError("the embeddings contain NaN or infinite values: check the inputs and the model")
        labels = labels.long()
        uniq, inverse, batch_counts = torch.unique(labels, return_inverse=True, return_counts=True)
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
        if self._mode == "class":
            order = torch.argsort(inverse, stable=True)
            blocks = torch.split(centred[order], batch_counts.long().tolist())
            for u, block in enumerate(blocks):
                rows_u = torch.cat([block, scaled[u : u + 1]])
                self._scatters[rows[u]].addmm_(rows_u.T, rows_u)
        else:
            rows_all = torch.cat([centred, scaled])
            self._within.addmm_(rows_all.T, rows_all)
        self._changed()
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
                        stacklevel=3,
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
        within = torch.zeros(self.feature_size, self.feature_size, dtype=torch.float64, device=self.device)
        for scatter in self._scatters:
            within += scatter
        self._within = within
        self._scatters = []
        self._mode = "shared"
        self._changed()

    def _changed(self) -> None:
        self._groups.clear()
        self._derived.clear()

    def merge(self, other: ReferenceBank) -> ReferenceBank:
        """A new bank with the samples of both (exact: the bank of the union of their data).

        Raises:
            CamscopeError: when the banks come from different models, layers,
                embeddings or feature sizes, or name a label differently.
        """
        if not isinstance(other, ReferenceBank):
            raise CamscopeError(f"can only merge a ReferenceBank, got {type(other).__name__}")
        differences = self._differences(
            other.model, other.layer, other.feature_size, other.embedding, what="the other bank"
        )
        if self.layout != other.layout:
            differences.append(f"layout: {self.layout} vs the other bank's {other.layout}")
        if differences:
            raise CamscopeError("cannot merge reference banks that differ: " + "; ".join(differences))
        names = dict(self._names)
        for label, name in other._names.items():
            if label in names and names[label] != name and label in self._row and label in other._row:
                raise CamscopeError(f"the banks name label {label} differently: {names[label]!r} and {name!r}")
            names.setdefault(label, name)
        mode = "class" if self._mode == other._mode == "class" else "shared"
        merged = ReferenceBank(
            self.feature_size,
            self.layer,
            embedding=self.embedding,
            model=self.model,
            class_names=names,
            scatter=mode if not (self._auto and other._auto) else "auto",
            max_scatter_bytes=max(self.max_scatter_bytes, other.max_scatter_bytes),
            layout=self.layout,
            input_size=self.input_size,
            device=self.device,
        )
        if mode == "shared":
            merged._mode = "shared"
            merged._within = torch.zeros(self.feature_size, self.feature_size, dtype=torch.float64, device=self.device)
        merged._rows_for(sorted(set(self._labels) | set(other._labels)))
        mode = merged._mode  # "auto" may have switched to a shared scatter
        for bank in (self, other):
            rows = merged._rows_for(bank._labels)
            counts = bank._counts.to(self.device)
            means = bank._means.to(self.device)
            old = merged._counts[rows]
            new = old + counts
            delta = means - merged._means[rows]
            coefficient = torch.where(new > 0, old * counts / new.clamp(min=1), torch.zeros_like(new))
            merged._means[rows] += delta * (counts / new.clamp(min=1))[:, None]
            merged._counts[rows] = new
            scaled = delta * coefficient.sqrt()[:, None]
            if mode == "class":
                for i, row in enumerate(rows):
                    merged._scatters[row] += bank._scatters[i].to(self.device)
                    merged._scatters[row].addr_(scaled[i], scaled[i])
            else:
                merged._within += bank._within_total().to(self.device)
                merged._within.addmm_(scaled.T, scaled)
        merged._changed()
        return merged

    # -- persistence ----------------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "layer": self.layer,
            "embedding": self.embedding,
            "feature_size": self.feature_size,
            "labels": list(self._labels),
            "class_names": [self.class_name(label) for label in self._labels],
            "scatter": self._mode,
            "auto_scatter": self._auto,
            "max_scatter_bytes": self.max_scatter_bytes,
            "layout": self.layout,
            "input_size": self.input_size,
            "count": self.count,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save as safetensors with JSON metadata, atomically (see :mod:`camscope.io`)."""
        from camscope.io import save_tensors

        if not self._labels:
            raise CamscopeError("the reference bank is empty: nothing to save")
        tensors = {
            "labels": torch.tensor(self._labels, dtype=torch.long),
            "counts": self._counts.round().long(),
            "means": self._means,
        }
        if self._mode == "class":
            tensors["scatters"] = torch.stack(self._scatters)
        else:
            tensors["within"] = self._within
        return save_tensors(path, tensors, self._metadata(), kind=BANK_KIND)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        model: nn.Module | None = None,
        layer: str | None = None,
        *,
        device: torch.device | str = "cpu",
    ) -> ReferenceBank:
        """Load a bank written by :meth:`save`.

        Args:
            path: the file.
            model: when given, the bank must have been built with this model
                (same architecture and weights).
            layer: when given, the bank must hold this layer.
            device: where to keep the statistics.

        Raises:
            CamscopeError: for a missing or foreign file, a newer format, an
                inconsistent file, or a model or layer that does not match.
        """
        from camscope.io import load_tensors

        tensors, meta = load_tensors(path, kind=BANK_KIND)
        try:
            labels = [int(v) for v in tensors["labels"].tolist()]
            feature_size = int(meta["feature_size"])
            bank = cls(
                feature_size,
                meta["layer"],
                embedding=meta.get("embedding", "mean"),
                model=meta.get("model"),
                class_names=dict(zip(labels, meta.get("class_names", []))),
                scatter=meta.get("scatter", "class"),
                max_scatter_bytes=int(meta.get("max_scatter_bytes", _DEFAULT_MAX_SCATTER_BYTES)),
                layout=meta.get("layout"),
                input_size=meta.get("input_size"),
                device=device,
            )
            bank._auto = bool(meta.get("auto_scatter", False))
            classes = len(labels)
            counts = tensors["counts"].to(device, torch.float64)
            means = tensors["means"].to(device, torch.float64)
            ok = counts.shape == (classes,) and means.shape == (classes, feature_size)
            if bank._mode == "class":
                scatters = tensors["scatters"].to(device, torch.float64)
                ok = ok and scatters.shape == (classes, feature_size, feature_size)
                bank._scatters = list(scatters.unbind(0)) if ok else []
            else:
                within = tensors["within"].to(device, torch.float64)
                ok = ok and within.shape == (feature_size, feature_size)
                bank._within = within
        except (KeyError, TypeError, ValueError) as error:
            raise CamscopeError(f"{path} is not a valid reference bank (missing or bad entry: {error})") from error
        if not ok or len(set(labels)) != len(labels):
            raise CamscopeError(f"{path} is not a valid reference bank: its tensors have inconsistent shapes")
        bank._labels = labels
        bank._row = {label: i for i, label in enumerate(labels)}
        bank._counts, bank._means = counts, means
        if model is not None or layer is not None:
            bank.check(model=model, layer=layer)
        return bank

    def to(self, device: torch.device | str) -> ReferenceBank:
        """Move the statistics to a device (in place); returns the bank."""
        self.device = torch.device(device)
        self._counts = self._counts.to(self.device)
        self._means = self._means.to(self.device)
        self._scatters = [s.to(self.device) for s in self._scatters]
        if self._within is not None:
            self._within = self._within.to(self.device)
        self._changed()
        return self

    # -- checks ------------------------------------------------------------------------

    def _differences(
        self,
        model: dict[str, Any] | None,
        layer: str | None,
        feature_size: int | None,
        embedding: str | None,
        what: str = "here",
    ) -> list[str]:
        differences = []
        if layer is not None and layer != self.layer:
            differences.append(f"layer: the bank holds {self.layer!r}, {what} {layer!r}")
        if feature_size is not None and feature_size != self.feature_size:
            differences.append(f"feature size: the bank's embeddings have {self.feature_size}, {what} {feature_size}")
        if embedding is not None and embedding != self.embedding:
            differences.append(f"embedding: the bank uses {self.embedding!r}, {what} {embedding!r}")
        if model is not None and self.model is not None:
            differences.extend(_fingerprint_differences(self.model, model))
        return differences

    def check(
        self,
        model: nn.Module | None = None,
        layer: str | None = None,
        feature_size: int | None = None,
        embedding: str | None = None,
    ) -> None:
        """Raise a :class:`CamscopeError` listing what differs from the bank's model, layer, size and embedding."""
        fingerprint = model_fingerprint(model) if model is not None else None
        differences = self._differences(fingerprint, layer, feature_size, embedding)
        if differences:
            raise CamscopeError(
                "the reference bank does not match: "
                + "; ".join(differences)
                + " (build the bank with this model and layer: camscope bank build, or ReferenceBank.build)"
            )

    # -- contents ----------------------------------------------------------------------

    @property
    def labels(self) -> list[int]:
        """The labels present, in order of appearance (``-1``: unlabelled samples)."""
        return list(self._labels)

    @property
    def class_names(self) -> list[str]:
        """Names of :attr:`labels`, in the same order."""
        return [self.class_name(label) for label in self._labels]

    def class_name(self, label: int) -> str:
        if label == UNLABELLED:
            return self._names.get(label, "<unlabelled>")
        return self._names.get(label, str(label))

    @property
    def counts(self) -> Tensor:
        """Samples per class, ``[C]`` (int64, aligned with :attr:`labels`)."""
        return self._counts.round().long()

    @property
    def means(self) -> Tensor:
        """Class means ``[C, K]`` (float64, aligned with :attr:`labels`)."""
        return self._means

    @property
    def count(self) -> int:
        """All samples."""
        return int(self._counts.sum().round()) if self._labels else 0

    @property
    def scatter_mode(self) -> str:
        """``"class"`` (per-class scatters) or ``"shared"`` (one within-class scatter)."""
        return self._mode

    @property
    def is_labelled(self) -> bool:
        """Whether any sample has a class label."""
        return any(label != UNLABELLED for label in self._labels)

    def class_scatter(self, label: int | str) -> Tensor:
        """``S_c`` of one class (``n_c W / N`` in shared mode), ``[K, K]`` float64."""
        row = self._row[self.label_of(label)]
        return self._scatter_rows([row])

    def _within_total(self) -> Tensor:
        if "within" not in self._derived:
            if self._mode == "shared":
                self._derived["within"] = self._within
            else:
                total = torch.zeros(self.feature_size, self.feature_size, dtype=torch.float64, device=self.device)
                for scatter in self._scatters:
                    total += scatter
                self._derived["within"] = total
        return self._derived["within"]

    def _scatter_rows(self, rows: list[int]) -> Tensor:
        """``sum_{c in rows} S_c`` (shared mode: ``(n_G / N) W``)."""
        if self._mode == "shared":
            share = float(self._counts[rows].sum() / self._counts.sum())
            return self._within * share
        if len(rows) > len(self._labels) // 2:
            inside = set(rows)
            total = self._within_total().clone()
            for row in range(len(self._labels)):
                if row not in inside:
                    total -= self._scatters[row]
            return total
        total = torch.zeros(self.feature_size, self.feature_size, dtype=torch.float64, device=self.device)
        for row in rows:
            total += self._scatters[row]
        return total

    def label_of(self, name_or_label: int | str) -> int:
        """The label of a class given by label, name, or label as text.

        Raises:
            CamscopeError: when the bank has no such class (with the classes it has).
        """
        if isinstance(name_or_label, Tensor):
            name_or_label = int(name_or_label)
        if isinstance(name_or_label, bool):
            raise CamscopeError("a class must be a label or a name, got a bool")
        if isinstance(name_or_label, int):
            if name_or_label in self._row:
                return name_or_label
        else:
            text = str(name_or_label).strip()
            by_name = {self.class_name(label).lower(): label for label in self._labels}
            if text.lower() in by_name:
                return by_name[text.lower()]
            if text.lstrip("-").isdigit() and int(text) in self._row:
                return int(text)
        raise CamscopeError(f"the bank has no class {name_or_label!r}; it has {self._describe_classes()}")

    def _describe_classes(self, limit: int = 12) -> str:
        shown = [f"{label} ({self.class_name(label)})" for label in self._labels[:limit]]
        more = f" and {len(self._labels) - limit} more" if len(self._labels) > limit else ""
        return (", ".join(shown) + more) if shown else "no classes (it is empty)"

    # -- groups ------------------------------------------------------------------------

    def group(
        self,
        kind: str = "others",
        classes: int | str | Sequence[int | str] | None = None,
        *,
        k: int = _DEFAULT_K,
        embedding: Tensor | None = None,
    ) -> ReferenceGroup:
        """A reference group built from the statistics, without revisiting data.

        ``S_G = sum_{c in G} [S_c + n_c (mu_c - mu_G)(mu_c - mu_G)^T]``,
        ``mu_G = sum_c n_c mu_c / n_G``.

        Args:
            kind: ``"others"`` (every labelled class but ``classes``: "why is it c"),
                ``"class"`` (the classes ``classes``: "why not d"), ``"intra"`` (the
                class ``classes`` itself), ``"knn"`` (the ``k`` labelled classes whose
                means are nearest to ``embedding``, ``classes`` excluded) or ``"all"``
                (every sample, labelled or not).
            classes: labels or names (one, or several for ``"class"``).
            k: neighbours for ``"knn"`` (at most the classes available).
            embedding: the example's embedding ``[K]`` for ``"knn"``.

        Returns:
            The group (cached: asking again costs nothing).

        Raises:
            CamscopeError: for an unknown kind or class, or an empty group.
        """
        if kind not in _GROUP_KINDS:
            raise CamscopeError(f"unknown reference group {kind!r}: use one of {', '.join(_GROUP_KINDS)}")
        if kind == "all":
            return self._group_of(list(range(len(self._labels))), "all")
        labelled = [row for row, label in enumerate(self._labels) if label != UNLABELLED]
        if not labelled:
            raise CamscopeError(f"group {kind!r} needs class labels, but the bank is unlabelled: use 'all'")
        if kind == "knn":
            if embedding is None:
                raise CamscopeError("group 'knn' needs the example's embedding: bank.group('knn', c, embedding=z)")
            exclude = None if classes is None else torch.tensor([self.label_of(classes)])
            labels = self.nearest_classes(torch.as_tensor(embedding).reshape(1, -1), k, exclude=exclude)[0]
            return self.group_of_labels(labels.tolist(), name=f"knn{k}")
        if classes is None:
            raise CamscopeError(f"group {kind!r} needs a class: bank.group({kind!r}, CLASS)")
        chosen = [classes] if isinstance(classes, (int, str, Tensor)) else list(classes)
        labels = sorted({self.label_of(c) for c in chosen})
        if kind in ("intra", "others") and len(labels) != 1:
            raise CamscopeError(f"group {kind!r} takes one class (the explained one), got {len(labels)}")
        if kind == "others":
            rows = [row for row in labelled if self._labels[row] != labels[0]]
            return self._group_of(rows, f"others({self.class_name(labels[0])})")
        return self.group_of_labels(labels, name=f"{kind}({','.join(self.class_name(c) for c in labels)})")

    def group_of_labels(self, labels: Iterable[int], name: str | None = None) -> ReferenceGroup:
        """The pooled group of some labels."""
        rows = sorted({self._row[self.label_of(int(label))] for label in labels})
        return self._group_of(rows, name or f"classes({','.join(str(self._labels[r]) for r in rows)})")

    def _group_of(self, rows: list[int], name: str) -> ReferenceGroup:
        rows = sorted(rows)
        key = tuple(rows)
        if key in self._groups:
            self._groups.move_to_end(key)
            return self._groups[key]
        if not rows:
            raise CamscopeError(
                f"the reference group {name} is empty: the bank has {self._describe_classes()}; "
                "choose another group (e.g. 'all') or add classes to the bank"
            )
        index = torch.tensor(rows, device=self.device)
        counts = self._counts[index]
        total = float(counts.sum())
        if total < 1:
            raise CamscopeError(f"the reference group {name} is empty (no samples)")
        mean = (counts[:, None] * self._means[index]).sum(dim=0) / total
        between = (self._means[index] - mean) * counts.sqrt()[:, None]
        scatter = self._scatter_rows(rows) + between.T @ between
        group = ReferenceGroup(
            int(round(total)),
            mean,
            scatter,
            classes=[self._labels[r] for r in rows],
            name=name,
            source=self._metadata_light(),
        )
        self._groups[key] = group
        while len(self._groups) > max(self.cache_size, 1):
            self._groups.popitem(last=False)
        return group

    def _metadata_light(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "embedding": self.embedding,
            "feature_size": self.feature_size,
            "model": self.model,
        }

    def nearest_classes(self, embeddings: Tensor, k: int, exclude: Tensor | Sequence[int] | None = None) -> Tensor:
        """Labels of the ``k`` labelled classes whose means are nearest to each embedding, ``[B, k]``.

        Exact (exhaustive) Euclidean search in one batched matrix product:
        ``|z - mu_c|^2 = |z|^2 - 2 z.mu_c + |mu_c|^2`` in float32 after centring
        everything on the bank's mean (which keeps the expansion accurate); the
        nearest first. ``exclude`` gives one label per embedding to leave out
        (the explained class); ``k`` is capped at the classes available.
        """
        if k < 1:
            raise CamscopeError(f"knn needs k >= 1, got {k}")
        if embeddings.ndim != 2 or embeddings.shape[1] != self.feature_size:
            raise CamscopeError(
                f"nearest_classes needs embeddings [B, {self.feature_size}], got {list(embeddings.shape)}"
            )
        device = embeddings.device
        key = f"knn:{device}"
        if key not in self._derived:
            rows = [row for row, label in enumerate(self._labels) if label != UNLABELLED]
            if not rows:
                raise CamscopeError("knn needs class labels, but the bank is unlabelled: use reference 'all'")
            index = torch.tensor(rows, device=self.device)
            centre = self._means[index].mean(dim=0)
            means = (self._means[index] - centre).to(device, torch.float32)
            labels = torch.tensor([self._labels[r] for r in rows], device=device)
            self._derived[key] = (centre.to(device, torch.float32), means, (means * means).sum(dim=1), labels)
        centre, means, norms, labels = self._derived[key]
        z = embeddings.to(torch.float32) - centre
        distances = (z * z).sum(dim=1, keepdim=True) - 2 * z @ means.T + norms
        available = labels.numel()
        if exclude is not None:
            exclude = torch.as_tensor(exclude, device=device).reshape(-1, 1)
            distances = distances.masked_fill(labels[None, :] == exclude, math.inf)
            available -= 1
        if available < 1:
            raise CamscopeError("knn: the bank has no class besides the explained one: the reference group is empty")
        nearest = distances.topk(min(k, available), dim=1, largest=False).indices
        return labels[nearest]

    def __repr__(self) -> str:
        return (
            f"ReferenceBank(layer={self.layer!r}, K={self.feature_size}, classes={len(self._labels)}, "
            f"samples={self.count}, embedding={self.embedding!r}, scatter={self._mode!r})"
        )


# --------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------


def _parse_spec(text: str) -> tuple[str, Any]:
    """``"others"``, ``"all"``, ``"intra"``, ``"knn"``, ``"knn:100"``, ``"class:NAME[,NAME]"``, ``"folder:PATH"``."""
    kind, _, argument = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "knn":
        if not argument:
            return "knn", _DEFAULT_K
        if not argument.strip().isdigit() or int(argument) < 1:
            raise CamscopeError(f"reference {text!r}: knn takes a positive number of classes, e.g. knn:100")
        return "knn", int(argument)
    if kind == "class":
        names = [part.strip() for part in argument.split(",") if part.strip()]
        if not names:
            raise CamscopeError(f"reference {text!r}: name the class, e.g. class:tabby or class:3")
        return "class", names
    if kind == "folder":
        if not argument:
            raise CamscopeError("reference 'folder:' needs a path, e.g. folder:photos/")
        return "folder", argument
    if kind in ("others", "intra", "all") and not argument:
        return kind, None
    raise CamscopeError(
        f"unknown reference {text!r}: use others, all, intra, knn[:K], class:NAME[,NAME], folder:PATH, "
        "a ReferenceGroup, or a tensor of reference inputs or embeddings"
    )


class _ExampleTarget(Target):
    """DiffCAM's target: the example's class in the bank, if any; scores where the outputs are class scores.

    DiffCAM needs no score, so the model's outputs may be embeddings or
    feature maps. Explicit classes (``target=``) are bank labels; otherwise the
    predicted class comes from the model's outputs when they score exactly the
    bank's classes ``0..C-1`` (``predict="model"`` forces it), and else from the
    nearest class mean, which the method binds after computing the embeddings.
    """

    def __init__(self, spec: Any = None, bank: ReferenceBank | None = None, predict: str = "auto") -> None:
        self.spec = spec
        self.bank = bank
        self.predict = predict
        self._classes: Tensor | None = None
        self.explicit = spec is not None

    def resolve(self, outputs: Tensor) -> _ExampleTarget:
        resolved = _ExampleTarget(self.spec, self.bank, self.predict)
        batch = outputs.shape[0]
        if self.spec is not None:
            classes = self.spec
            if isinstance(classes, Tensor) and classes.ndim == 0:
                classes = int(classes)
            if isinstance(classes, bool):
                raise CamscopeError("target must be a class label, got a bool")
            tensor = torch.full((batch,), classes) if isinstance(classes, int) else torch.as_tensor(classes).reshape(-1)
            if tensor.is_floating_point() or tensor.numel() != batch:
                raise CamscopeError(f"target must be one class label, or one per sample ({batch}), got {self.spec!r}")
            resolved._classes = tensor.long().to(outputs.device)
        elif self.predict == "model" or (self.predict == "auto" and _scores_bank_classes(outputs, self.bank)):
            if outputs.ndim != 2:
                raise CamscopeError(
                    f"predict='model' needs class scores [B, classes] from the model, got {list(outputs.shape)}: "
                    "use predict='nearest' (nearest class mean) or pass target="
                )
            resolved._classes = outputs.detach().argmax(dim=1)
        return resolved

    def bind(self, classes: Tensor) -> None:
        """Record the classes the method chose (nearest class mean)."""
        if self._classes is None:
            self._classes = classes

    def __call__(self, outputs: Tensor) -> Tensor:
        classes = self._classes
        if classes is not None and outputs.ndim == 2 and classes.numel() == outputs.shape[0]:
            if bool(((classes >= 0) & (classes < outputs.shape[1])).all()):
                return outputs.gather(1, classes[:, None].to(outputs.device))[:, 0]
        return torch.full(
            (outputs.shape[0],),
            math.nan,
            dtype=outputs.dtype if outputs.is_floating_point() else torch.float32,
            device=outputs.device,
        )

    def classes(self) -> Tensor | None:
        return self._classes

    def __repr__(self) -> str:
        shown = self._classes.tolist() if self._classes is not None else self.spec
        return f"ExampleClass({shown})"


def _scores_bank_classes(outputs: Tensor, bank: ReferenceBank | None) -> bool:
    if bank is None or outputs.ndim != 2:
        return False
    labels = sorted(label for label in bank.labels if label != UNLABELLED)
    return bool(labels) and outputs.shape[1] == len(labels) and labels == list(range(len(labels)))


@register_method
class DiffCAM(CamMethod):
    """DiffCAM (papers/diffcam.txt): the direction that best separates the example from a reference group.

    ``w* = Sigma_reg^-1 (z - mu)`` with the example's embedding ``z`` (spatial
    mean of the activations), the group's mean ``mu`` and covariance
    ``Sigma = S_v / n`` (regularised, see :mod:`camscope.methods.diffcam`);
    ``M = sum_k w*_k A_k``. No gradients, no classifier.

    Options:
        reference: a :class:`ReferenceGroup`; a :class:`ReferenceBank` (its
            default group); a tensor of reference inputs ``[N, C, H, W]``
            (embedded at the layer with one forward pass per ``batch_size``)
            or of embeddings ``[N, K]``; a spec ``"others"``, ``"all"``,
            ``"intra"``, ``"knn"``/``"knn:100"``, ``"class:NAME[,NAME]"`` (with
            ``bank``) or ``"folder:PATH"`` (images of a folder at the inputs'
            size); or a ``(bank, spec)`` pair. Default: ``"others"`` for a
            labelled bank, ``"all"`` for an unlabelled one.
        bank: a :class:`ReferenceBank` or the path of a saved one.
        regularization: ``"oas"`` (default) or a number ``r >= 0`` for
            ``lambda = r tr(Sigma) / K`` (0: none).
        k: neighbours of ``"knn"`` (default 100).
        embedding: ``"mean"`` or ``"cls"`` (default: the bank's, else ``"mean"``).
        predict: how an example's class is found when ``target`` is not given,
            for ``others``/``intra``/``knn``: ``"auto"`` (the model's top class
            when its outputs score exactly the bank's classes ``0..C-1``, else
            ``"nearest"``), ``"model"`` or ``"nearest"`` (nearest class mean of the bank).
        check_model: check that the bank was built with this model (default True).
        batch_size: reference inputs per forward pass (default 64).

    ``target=`` gives the examples' classes as bank labels (``bank.label_of(name)``
    turns a class name into its label). The explanation's
    ``classes`` are the classes DiffCAM used (None when it needed none), its
    ``scores`` the model's scores of them where the outputs are class scores (NaN otherwise).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=3).eval()
        >>> references = torch.randn(6, 3, 64, 64)
        >>> e = camscope.explain(model, torch.randn(1, 3, 64, 64), method="diffcam", layer="layer4",
        ...                      reference=references, regularization=0.1)
        >>> e.maps.shape
        torch.Size([1, 64, 64])
    """

    name = "diffcam"
    uses_gradients = False
    linear_in_gradient = False

    declared_options = (
        Option(
            "reference",
            (ReferenceGroup, ReferenceBank, Tensor, str, tuple),
            None,
            "the reference group: a group, a bank, inputs or embeddings, a spec such as 'others' or 'knn:100'",
        ),
        Option("bank", (ReferenceBank, str, os.PathLike), None, "a reference bank or the path of a saved one"),
        Option(
            "regularization",
            (str, float),
            "oas",
            "'oas' or r >= 0 for lambda = r tr(Sigma) / K",
            check=_regularization_key,
        ),
        Option("k", int, _DEFAULT_K, "neighbours of the 'knn' reference", positive=True),
        Option("embedding", str, None, "'mean' or 'cls' (None: the bank's, else 'mean')", choices=_EMBEDDINGS),
        Option(
            "predict",
            str,
            "auto",
            "how an example's class is found without a target",
            choices=("auto", "model", "nearest"),
        ),
        Option("check_model", bool, True, "check that the references come from this model and layer"),
        Option("batch_size", int, 64, "reference inputs per forward pass", positive=True),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.regularization = self.options["regularization"]
        self.k = self.options["k"]
        self.predict = self.options["predict"]
        self.check_model = self.options["check_model"]
        self.batch_size = self.options["batch_size"]
        bank = self.options["bank"]
        if isinstance(bank, (str, os.PathLike)):
            bank = ReferenceBank.load(bank)
        reference = self.options["reference"]
        self.group: ReferenceGroup | None = None
        self.tensor: Tensor | None = None
        self.kind: str | None = None
        self.argument: Any = None
        if isinstance(reference, tuple) and len(reference) == 2 and isinstance(reference[0], ReferenceBank):
            bank, reference = reference
        if isinstance(reference, ReferenceBank):
            bank, reference = reference, None
        if isinstance(reference, ReferenceGroup):
            self.group = reference
        elif isinstance(reference, Tensor):
            if reference.ndim not in (2, 4, 5):
                raise CamscopeError(
                    f"diffcam: a reference tensor must hold inputs [N, C, H, W] or embeddings [N, K], got {list(reference.shape)}"
                )
            if reference.shape[0] == 0:
                raise CamscopeError(
                    "diffcam: the reference tensor is empty: the reference group needs at least one example"
                )
            self.tensor = reference
        elif isinstance(reference, str):
            self.kind, self.argument = _parse_spec(reference)
            if self.kind == "knn":
                self.k = self.argument if ":" in reference else self.k
        elif reference is not None:
            raise CamscopeError(
                f"diffcam: cannot use {type(reference).__name__} as a reference: pass a ReferenceGroup, a bank, "
                "a spec string, or a tensor of reference inputs or embeddings"
            )
        if reference is None and self.group is None:
            if bank is None:
                raise CamscopeError(
                    "diffcam needs a reference group: reference=bank.group(...), reference=TENSOR of reference "
                    "inputs or embeddings, or bank=BANK with reference='others'|'knn:100'|'class:NAME'|'intra'|'all'"
                )
            self.kind, self.argument = ("others", None) if bank.is_labelled and len(bank.labels) > 1 else ("all", None)
        if self.kind not in (None, "folder") and bank is None:
            raise CamscopeError(f"diffcam: reference {self.kind!r} needs a bank: pass bank=ReferenceBank (or its path)")
        self.bank = bank
        embedding = self.options["embedding"]
        source_embedding = (
            bank.embedding if bank is not None else self.group.source.get("embedding") if self.group else None
        )
        if embedding is not None and source_embedding is not None and embedding != source_embedding:
            raise CamscopeError(
                f"diffcam: embedding={embedding!r} but the references use {source_embedding!r}: "
                "embed the example like the references"
            )
        self.embedding = _check_embedding(embedding or source_embedding or "mean")
        self._tensor_groups: dict[tuple[Any, ...], ReferenceGroup] = {}

    def prepare_target(self, target: Target, model: nn.Module) -> Target:
        """Replace class targets with one that needs no class scores (DiffCAM needs none)."""
        if isinstance(target, ClassTarget):
            return _ExampleTarget(getattr(target, "_spec", None), self.bank, self.predict)
        return target

    # -- embeddings ---------------------------------------------------------------------

    def _embeddings(self, ctx: CamContext) -> Tensor:
        if self.embedding == "mean":
            return ctx.activations.mean(dim=ctx.spatial_dims)
        native = self._activations_at(ctx, ctx.inputs, native=True)
        return _embedding_of(native, ctx.inputs.shape, ctx.layer, ctx.model, "cls", {})

    def _activations_at(self, ctx: CamContext, inputs: Tensor, native: bool) -> Tensor:
        if ctx.activations_at is None:
            raise CamscopeError("diffcam needs the engine's activations_at to embed reference inputs")
        return ctx.activations_at(inputs, native=native)

    def _embed_inputs(self, ctx: CamContext, inputs: Tensor) -> Tensor:
        inputs = inputs.to(ctx.inputs.device, ctx.inputs.dtype)
        if tuple(inputs.shape[1:2]) != tuple(ctx.inputs.shape[1:2]):
            raise CamscopeError(
                f"reference inputs have {inputs.shape[1]} channels but the explained inputs {ctx.inputs.shape[1]}"
            )
        chunks = []
        for start in range(0, inputs.shape[0], self.batch_size):
            batch = inputs[start : start + self.batch_size]
            if self.embedding == "cls":
                native = self._activations_at(ctx, batch, native=True)
                chunks.append(_embedding_of(native, batch.shape, ctx.layer, ctx.model, "cls", {}))
            else:
                grid = self._activations_at(ctx, batch, native=False)
                chunks.append(grid.mean(dim=tuple(range(2, grid.ndim))))
        return torch.cat(chunks)

    def _tensor_group(self, ctx: CamContext) -> ReferenceGroup:
        tensor = self.tensor
        assert tensor is not None
        key = (ctx.layer, id(tensor), tensor._version, self.embedding)
        if key not in self._tensor_groups:
            if tensor.ndim == 2:
                self._tensor_groups[key] = ReferenceGroup.from_embeddings(tensor, name="reference embeddings")
            else:
                source = {"layer": ctx.layer, "embedding": self.embedding}
                embeddings = self._embed_inputs(ctx, tensor)
                self._tensor_groups[key] = ReferenceGroup.from_embeddings(
                    embeddings, name="reference inputs", source=source
                )
        return self._tensor_groups[key]

    def _folder_group(self, ctx: CamContext) -> ReferenceGroup:
        key = ("folder", ctx.layer, str(self.argument), tuple(ctx.inputs.shape[2:]), self.embedding)
        if key not in self._tensor_groups:
            from camscope.passes.batches import iter_batches

            chunks = [
                self._embed_inputs(ctx, inputs)
                for inputs, _ in iter_batches(
                    str(self.argument), self.batch_size, ctx.inputs.device, size=int(ctx.inputs.shape[-1])
                )
            ]
            self._tensor_groups[key] = ReferenceGroup.from_embeddings(torch.cat(chunks), name=f"folder {self.argument}")
        return self._tensor_groups[key]

    # -- classes --------------------------------------------------------------------------

    def _example_classes(self, ctx: CamContext, z: Tensor) -> Tensor:
        bank = self.bank
        assert bank is not None
        if not bank.is_labelled:
            raise CamscopeError(f"reference {self.kind!r} needs class labels, but the bank is unlabelled: use 'all'")
        classes = ctx.target.classes() if hasattr(ctx.target, "classes") else None
        if classes is None:
            if self.predict == "model":
                raise CamscopeError("diffcam: predict='model' needs class scores from the model")
            classes = bank.nearest_classes(z, 1)[:, 0]
            if isinstance(ctx.target, _ExampleTarget):
                ctx.target.bind(classes)
        classes = classes.reshape(-1)
        missing = sorted({int(c) for c in classes.tolist()} - set(bank.labels))
        if missing:
            raise CamscopeError(
                f"class {missing[0]} is not in the reference bank, which has {bank._describe_classes()}: "
                "pass target= with bank labels, or predict='nearest'"
            )
        return classes

    # -- weights --------------------------------------------------------------------------

    def __call__(self, ctx: CamContext) -> CamResult:
        bank = self.bank
        channels = ctx.activations.shape[1]
        if bank is not None:
            model = ctx.model if self.check_model else None
            bank.check(model=model, layer=ctx.layer if self.check_model else None, feature_size=channels)
            size = list(ctx.inputs.shape[2:])
            if bank.input_size and size != list(bank.input_size):
                warnings.warn(
                    f"diffcam: the bank was built from inputs of size {bank.input_size}, the explained inputs are {size}: "
                    "embeddings may not be comparable (use the bank's input size)",
                    stacklevel=2,
                )
        elif self.group is not None:
            source = self.group.source
            differences = []
            if self.group.feature_size != channels:
                differences.append(f"feature size: the group has {self.group.feature_size}, the layer {channels}")
            if self.check_model and source.get("layer") not in (None, ctx.layer):
                differences.append(f"layer: the group comes from {source.get('layer')!r}, explained at {ctx.layer!r}")
            if self.check_model and source.get("model") and not differences:
                differences.extend(_fingerprint_differences(source["model"], model_fingerprint(ctx.model)))
            if differences:
                raise CamscopeError("the reference group does not match: " + "; ".join(differences))
        z = self._embeddings(ctx)
        if self.group is not None or self.tensor is not None or self.kind in ("folder", "all", "class"):
            if self.group is not None:
                group = self.group
            elif self.tensor is not None:
                group = self._tensor_group(ctx)
            elif self.kind == "folder":
                group = self._folder_group(ctx)
            elif self.kind == "all":
                group = bank.group("all")
            else:
                group = bank.group("class", self.argument)
            weights = group.weights(z, self.regularization)
        else:
            weights = self._per_example_weights(ctx, z)
        return CamResult(weights=ctx.expand(weights.to(ctx.activations.dtype)))

    def _per_example_weights(self, ctx: CamContext, z: Tensor) -> Tensor:
        bank = self.bank
        assert bank is not None
        classes = self._example_classes(ctx, z)
        if self.kind == "knn":
            neighbours = bank.nearest_classes(z, self.k, exclude=classes)
            keys = [tuple(sorted(row)) for row in neighbours.tolist()]
        else:
            keys = [(int(c),) for c in classes.tolist()]
        weights = torch.empty(z.shape, dtype=torch.float64, device=z.device)
        positions: dict[tuple[int, ...], list[int]] = {}
        for i, key in enumerate(keys):
            positions.setdefault(key, []).append(i)
        for key, indices in positions.items():
            if self.kind == "knn":
                group = bank.group_of_labels(key, name=f"knn{self.k}")
            else:
                group = bank.group(self.kind, key[0])
            index = torch.tensor(indices, device=z.device)
            weights[index] = group.weights(z[index], self.regularization)
        return weights


# --------------------------------------------------------------------------------------
# Counterfactual pairs
# --------------------------------------------------------------------------------------


@dataclass
class CounterfactualPair:
    """The two maps of a counterfactual explanation of classes c and d.

    Attributes:
        why: "why c, not d" on the inputs: DiffCAM against the group of class d.
        counterpart: "why d, not c". On ``counter_inputs`` (examples of d) it is
            DiffCAM against the group of class c, the paper's pair of maps. On
            the inputs themselves (no counter examples) it uses the typical
            example of d, the class mean ``mu_d``, against class c:
            ``w = Sigma_c,reg^-1 (mu_d - mu_c)``, ``M = sum_k w_k A_k(x)``: where
            the inputs show what tells d apart from c.
        explained: label c per input.
        versus: label d.
    """

    why: Any
    counterpart: Any
    explained: Tensor
    versus: int


def counterfactual(
    model: nn.Module,
    inputs: Tensor,
    bank: ReferenceBank | str | os.PathLike[str],
    versus: int | str,
    explained: int | str | None = None,
    *,
    layer: LayerSpec | None = None,
    counter_inputs: Tensor | None = None,
    regularization: float | str = "oas",
    **options: Any,
) -> CounterfactualPair:
    """ "Why c, not d" and its counterpart "why d, not c", in one call.

    Args:
        model: the network.
        inputs: ``[B, C, H, W]`` examples of class c.
        bank: the reference bank (or its path).
        versus: class d (label or name).
        explained: class c (label or name); default: each input's class as
            DiffCAM finds it (``predict``).
        layer: default: the bank's layer.
        counter_inputs: examples of class d for the counterpart; without them
            the counterpart is computed on ``inputs`` from the mean of d (no
            extra forward pass).
        regularization: as for DiffCAM.
        **options: other DiffCAM and Explainer options (``predict``, ``embedding``...).

    Returns:
        A :class:`CounterfactualPair`.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=3).eval()
        >>> data = [(torch.randn(12, 3, 32, 32), torch.arange(12) % 3)]
        >>> bank = ReferenceBank.build(model, data, layer="layer4")
        >>> pair = counterfactual(model, torch.randn(2, 3, 32, 32), bank, versus=2, explained=0)
        >>> pair.why.maps.shape, pair.counterpart.maps.shape
        (torch.Size([2, 32, 32]), torch.Size([2, 32, 32]))
    """
    from camscope.engine.explainer import explain

    if isinstance(bank, (str, os.PathLike)):
        bank = ReferenceBank.load(bank)
    d = bank.label_of(versus)
    c = bank.label_of(explained) if explained is not None else None
    layer = bank.layer if layer is None else layer
    why = explain(
        model,
        inputs,
        method="diffcam",
        layer=layer,
        target=c,
        bank=bank,
        reference=bank.group("class", d),
        regularization=regularization,
        **options,
    )
    classes = why.classes
    if classes is None:
        # the fixed group needed no class: find it as for "others" (the model's prediction or the nearest mean)
        z = why.activations.mean(dim=tuple(range(2, why.activations.ndim)))
        predict = options.get("predict", "auto")
        if predict != "nearest" and _scores_bank_classes(why.logits, bank):
            classes = why.logits.argmax(dim=1)
        else:
            classes = bank.nearest_classes(z, 1)[:, 0]
    if counter_inputs is not None:
        explained_labels = {int(v) for v in classes.tolist()}
        if len(explained_labels) != 1:
            raise CamscopeError("with counter_inputs, all inputs must be explained as one class: pass explained=")
        counterpart = explain(
            model,
            counter_inputs,
            method="diffcam",
            layer=layer,
            target=d,
            bank=bank,
            reference=bank.group("class", explained_labels.pop()),
            regularization=regularization,
            **options,
        )
    else:
        counterpart = _mean_counterpart(why, bank, classes, d, regularization)
    return CounterfactualPair(why=why, counterpart=counterpart, explained=classes, versus=d)


def _mean_counterpart(why: Any, bank: ReferenceBank, classes: Tensor, versus: int, regularization: float | str) -> Any:
    """The counterpart on the same inputs: ``w = Sigma_c^-1 (mu_d - mu_c)`` applied to their activations."""
    from camscope.engine.explainer import Explanation, normalize_maps, upsample

    activations = why.activations
    device = activations.device
    mean_d = bank.group("class", versus).mean.to(device)
    weights = torch.empty(activations.shape[:2], dtype=torch.float64, device=device)
    for label in sorted({int(v) for v in classes.tolist()}):
        group = bank.group("class", label)
        index = (classes.to(device) == label).nonzero().flatten()
        difference = (mean_d - group.mean.to(device)).expand(index.numel(), -1)
        weights[index] = group.solve(difference, regularization)
    weights = weights.to(activations.dtype)
    weighted = weights.reshape(*weights.shape, *([1] * (activations.ndim - 2))) * activations
    raw = weighted.sum(dim=1)
    target = _ExampleTarget(versus, bank).resolve(why.logits)
    size = why.maps.shape[1:]
    return Explanation(
        raw=raw,
        maps=normalize_maps(upsample(raw, size)),
        weights=weights,
        contributions=weighted.sum(dim=tuple(range(2, activations.ndim))),
        logits=why.logits,
        targets=target,
        scores=target(why.logits),
        method="diffcam",
        layer=why.layer,
        activations=activations,
    )
