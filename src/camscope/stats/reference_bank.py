"""Reference banks: per-class counts, means and float64 scatters of one layer's embeddings.

One pass over a dataset gives, for every class ``c``, ``n_c``, ``mu_c`` and
``S_c = sum_{i in c} (z_i - mu_c)(z_i - mu_c)^T``; any group of classes ``G``
is then a :class:`~camscope.stats.reference_group.ReferenceGroup` with
``S_G = sum_{c in G} [S_c + n_c (mu_c - mu_G)(mu_c - mu_G)^T]``, without
revisiting the data. DiffCAM explains an example against such groups.

Example:
    >>> import torch
    >>> bank = ReferenceBank(feature_size=3, layer="layer4")
    >>> _ = bank.update(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2]))
    >>> bank.group("others", 0).count
    4
"""

from __future__ import annotations

import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camscope.data.folders import UNLABELLED
from camscope.engine.capture import LayerSpec
from camscope.engine.embedding import check_embedding
from camscope.errors import CamscopeError
from camscope.stats.fingerprint import fingerprint_differences, model_fingerprint
from camscope.stats.reference_bank_build import build_reference_bank
from camscope.stats.reference_group import ReferenceGroup

__all__ = ["BANK_KIND", "DEFAULT_K", "DEFAULT_MAX_SCATTER_BYTES", "GROUP_KINDS", "SCATTER_MODES", "ReferenceBank"]

#: The ``kind`` of bank files (see :mod:`camscope.io`).
BANK_KIND = "reference-bank"
#: The reference groups a bank gives (see :meth:`ReferenceBank.group`).
GROUP_KINDS = ("others", "knn", "class", "intra", "all")
#: How a bank keeps its scatters (see :class:`ReferenceBank`).
SCATTER_MODES = ("auto", "class", "shared")
#: Classes of a ``"knn"`` group by default (the DiffCAM paper's ImageNet setting).
DEFAULT_K = 100
#: Memory allowed for per-class scatters in ``scatter="auto"`` (1 GiB).
DEFAULT_MAX_SCATTER_BYTES = 1 << 30


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
        max_scatter_bytes: int = DEFAULT_MAX_SCATTER_BYTES,
        layout: dict[str, Any] | None = None,
        input_size: Sequence[int] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if scatter not in SCATTER_MODES:
            raise CamscopeError(f"scatter must be one of {', '.join(SCATTER_MODES)}, got {scatter!r}")
        if int(feature_size) < 1:
            raise CamscopeError(f"feature_size must be positive, got {feature_size}")
        self.feature_size = int(feature_size)
        self.layer = str(layer)
        self.embedding = check_embedding(embedding)
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
        max_scatter_bytes: int = DEFAULT_MAX_SCATTER_BYTES,
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
                :class:`~camscope.data.folders.ImageFolderData`, a DataLoader or any
                iterable of ``(inputs, labels)`` batches or input tensors
                (unlabelled), or one tensor batch.
            layer: the layer (default: the model's default layer).
            embedding: ``"mean"`` or ``"cls"`` (see :func:`camscope.engine.embedding.embed`).
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
        return build_reference_bank(
            cls,
            model,
            data,
            layer,
            embedding=embedding,
            batch_size=batch_size,
            device=device,
            size=size,
            class_names=class_names,
            scatter=scatter,
            max_scatter_bytes=max_scatter_bytes,
            model_name=model_name,
            progress=progress,
            layout=layout,
            grid=grid,
            prefix_tokens=prefix_tokens,
        )

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
                max_scatter_bytes=int(meta.get("max_scatter_bytes", DEFAULT_MAX_SCATTER_BYTES)),
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
            differences.extend(fingerprint_differences(self.model, model))
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
        raise CamscopeError(f"the bank has no class {name_or_label!r}; it has {self.describe_classes()}")

    def describe_classes(self, limit: int = 12) -> str:
        shown = [f"{label} ({self.class_name(label)})" for label in self._labels[:limit]]
        more = f" and {len(self._labels) - limit} more" if len(self._labels) > limit else ""
        return (", ".join(shown) + more) if shown else "no classes (it is empty)"

    # -- groups ------------------------------------------------------------------------

    def group(
        self,
        kind: str = "others",
        classes: int | str | Sequence[int | str] | None = None,
        *,
        k: int = DEFAULT_K,
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
        if kind not in GROUP_KINDS:
            raise CamscopeError(f"unknown reference group {kind!r}: use one of {', '.join(GROUP_KINDS)}")
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
                f"the reference group {name} is empty: the bank has {self.describe_classes()}; "
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
