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
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camscope.accumulators.reference_bank_build import build_reference_bank
from camscope.accumulators.reference_bank_files import load_bank, save_bank
from camscope.data.folders import UNLABELLED
from camscope.engine.capture import LayerSpec
from camscope.engine.embedding import check_embedding
from camscope.errors import CamscopeError
from camscope.models.fingerprint import fingerprint_differences, model_fingerprint
from camscope.stats.class_moments import DEFAULT_MAX_SCATTER_BYTES, ClassMoments
from camscope.stats.reference_group import ReferenceGroup

__all__ = ["DEFAULT_K", "GROUP_KINDS", "ReferenceBank"]

#: The reference groups a bank gives (see :meth:`ReferenceBank.group`).
GROUP_KINDS = ("others", "knn", "class", "intra", "all")
#: Classes of a ``"knn"`` group by default (the DiffCAM paper's ImageNet setting).
DEFAULT_K = 100


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

    The statistics live in :attr:`moments`, a
    :class:`~camscope.stats.class_moments.ClassMoments`; the bank adds what
    they describe (model fingerprint, layer, embedding, layout, input size,
    class names) and the reference groups. Use :meth:`build` (one pass over a
    dataset), :meth:`update`, :meth:`merge`, :meth:`state_dict` /
    :meth:`load_state_dict`, :meth:`save` / :meth:`load`, and :meth:`group`.

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
        self.moments = ClassMoments(feature_size, scatter=scatter, max_scatter_bytes=max_scatter_bytes, device=device)
        self.layer = str(layer)
        self.embedding = check_embedding(embedding)
        self.model = dict(model) if model else None
        self.layout = dict(layout or {"layout": "auto", "grid": None, "prefix_tokens": None})
        self.input_size = list(input_size) if input_size is not None else None
        self._names: dict[int, str] = {}
        if class_names is not None:
            items = class_names.items() if isinstance(class_names, dict) else enumerate(class_names)
            self._names = {int(label): str(name) for label, name in items}
        self.cache_size = 8
        self._groups: OrderedDict[tuple[int, ...], ReferenceGroup] = OrderedDict()
        self._nearest: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    @property
    def feature_size(self) -> int:
        """``K``, the embedding size."""
        return self.moments.feature_size

    @property
    def device(self) -> torch.device:
        """Where the statistics live."""
        return self.moments.device

    @property
    def max_scatter_bytes(self) -> int:
        """Memory allowed for per-class scatters in ``scatter="auto"``."""
        return self.moments.max_scatter_bytes

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
        distributed: bool | None = None,
        workers: int = 0,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int | None = None,
        resume: bool = False,
        precision: str | None = None,
    ) -> ReferenceBank:
        """Build a bank in one pass over a dataset.

        Each batch runs through the model without autograd and in eval mode up
        to the layer only (a forward hook ends the pass there; the first batch
        runs the whole model, to refuse a layer that runs more than once per
        pass), and its embeddings update the per-class statistics on the model's device.

        Args:
            model: the network.
            data: a folder (ImageFolder layout ``root/CLASS/*.png`` gives labels
                and class names; a flat folder is unlabelled), an
                :class:`~camscope.data.folders.ImageFolderData`, a map-style torch
                dataset of ``(image, label)`` samples, a DataLoader or any
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
            layout: as in :class:`camscope.Explainer`.
            grid: as in :class:`camscope.Explainer`.
            prefix_tokens: as in :class:`camscope.Explainer`.
            distributed: split the pass over a ``torch.distributed`` process group (None: when one is
                initialised; every rank returns the whole bank; see :class:`camscope.passes.engine.DatasetPass`).
            workers: worker processes that load folders and map-style datasets (0: in this process).
            checkpoint: a file for the pass's state (one per rank when distributed).
            checkpoint_every: save the checkpoint every this many batches (default: only at the end).
            resume: continue from ``checkpoint`` when the file exists.
            precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: the model's forward runs under
                ``torch.autocast`` (:mod:`camscope.passes.precision`).

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
            distributed=distributed,
            workers=workers,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            resume=resume,
            precision=precision,
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
        self.moments.update(embeddings, labels)
        self._changed()
        return self

    def _changed(self) -> None:
        self._groups.clear()
        self._nearest.clear()

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
        if self.input_size and other.input_size and list(self.input_size) != list(other.input_size):
            differences.append(f"input size: {self.input_size} vs the other bank's {other.input_size}")
        if differences:
            raise CamscopeError("cannot merge reference banks that differ: " + "; ".join(differences))
        names = dict(self._names)
        for label, name in other._names.items():
            both = self.moments.row(label) is not None and other.moments.row(label) is not None
            if label in names and names[label] != name and both:
                raise CamscopeError(f"the banks name label {label} differently: {names[label]!r} and {name!r}")
            names.setdefault(label, name)
        merged = ReferenceBank(
            self.feature_size,
            self.layer,
            embedding=self.embedding,
            model=self.model or other.model,
            class_names=names,
            layout=self.layout,
            input_size=self.input_size or other.input_size,
            device=self.device,
        )
        merged.moments = self.moments.merge(other.moments)
        return merged

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A copy of everything the bank holds, which :meth:`load_state_dict` restores exactly.

        The keys of :meth:`ClassMoments.state_dict <camscope.stats.class_moments.ClassMoments.state_dict>`
        (``labels``, ``counts``, ``means``, ``scatters`` or ``within``, ...)
        plus ``layer``, ``embedding``, ``model`` (the fingerprint), ``layout``,
        ``input_size`` and ``names`` (label to class name).

        Example:
            >>> import torch
            >>> bank = ReferenceBank(3, "layer4").update(torch.randn(8, 3), torch.tensor([0, 1] * 4))
            >>> copy = ReferenceBank(1, "other").load_state_dict(bank.state_dict())
            >>> torch.equal(copy.group("others", 0).scatter, bank.group("others", 0).scatter)
            True
        """
        return {
            **self.moments.state_dict(),
            "layer": self.layer,
            "embedding": self.embedding,
            "model": None if self.model is None else dict(self.model),
            "layout": dict(self.layout),
            "input_size": None if self.input_size is None else list(self.input_size),
            "names": dict(self._names),
        }

    def load_state_dict(self, state: dict[str, Any]) -> ReferenceBank:
        """Restore what :meth:`state_dict` returned (onto this bank's device); returns the bank.

        Raises:
            CamscopeError: for a missing entry or tensors of inconsistent shapes.
        """
        try:
            layer, embedding = state["layer"], check_embedding(state.get("embedding", "mean"))
            if not isinstance(layer, str):
                raise CamscopeError(f"layer must be a name, got {layer!r}")
            names = {int(label): str(name) for label, name in dict(state.get("names") or {}).items()}
            model, layout = state.get("model"), state.get("layout")
            for key, value in (("model", model), ("layout", layout)):
                if value is not None and not isinstance(value, dict):
                    raise CamscopeError(f"{key} must be a mapping, got {value!r}")
            size = state.get("input_size")
            if size is not None and (
                not isinstance(size, (list, tuple))
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
            ):
                raise CamscopeError(f"input_size must be a list of positive integers, got {size!r}")
            self.moments.load_state_dict(state)
        except CamscopeError as error:
            raise CamscopeError(f"not a reference bank state: {error}") from error
        except (KeyError, TypeError, ValueError) as error:
            raise CamscopeError(f"not a reference bank state: missing or bad entry {error}") from error
        self.layer, self.embedding, self._names = layer, embedding, names
        self.model = dict(model) if model else None
        self.layout = dict(layout or {"layout": "auto", "grid": None, "prefix_tokens": None})
        self.input_size = list(size) if size is not None else None
        self._changed()
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], *, device: torch.device | str = "cpu") -> ReferenceBank:
        """A new bank on ``device`` with what :meth:`state_dict` returned."""
        return cls(1, "", device=device).load_state_dict(state)

    # -- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save as safetensors with JSON metadata, atomically (see :mod:`camscope.io`).

        The file holds the tensors ``labels``, ``counts``, ``means`` and
        ``scatters`` or ``within``, and the metadata of :meth:`state_dict`
        (see :mod:`camscope.accumulators.reference_bank_files`).
        """
        return save_bank(self, path)

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
        return load_bank(cls, path, model, layer, device=device)

    def to(self, device: torch.device | str) -> ReferenceBank:
        """Move the statistics to a device (in place); returns the bank."""
        self.moments.to(device)
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
        return self.moments.labels

    @property
    def class_names(self) -> list[str]:
        """Names of :attr:`labels`, in the same order."""
        return [self.class_name(label) for label in self.moments.labels]

    def class_name(self, label: int) -> str:
        """The name of a label (the label as text when it has none)."""
        if label == UNLABELLED:
            return self._names.get(label, "<unlabelled>")
        return self._names.get(label, str(label))

    @property
    def counts(self) -> Tensor:
        """Samples per class, ``[C]`` (int64, aligned with :attr:`labels`)."""
        return self.moments.counts

    @property
    def means(self) -> Tensor:
        """Class means ``[C, K]`` (float64, aligned with :attr:`labels`)."""
        return self.moments.means

    @property
    def count(self) -> int:
        """All samples."""
        return self.moments.count

    @property
    def scatter_mode(self) -> str:
        """``"class"`` (per-class scatters) or ``"shared"`` (one within-class scatter)."""
        return self.moments.scatter_mode

    @property
    def is_labelled(self) -> bool:
        """Whether any sample has a class label."""
        return any(label != UNLABELLED for label in self.moments.labels)

    def class_scatter(self, label: int | str) -> Tensor:
        """``S_c`` of one class (``n_c W / N`` in shared mode), ``[K, K]`` float64."""
        return self.moments.scatter_of([self._row(self.label_of(label))])

    def _row(self, label: int) -> int:
        row = self.moments.row(label)
        if row is None:
            raise CamscopeError(f"the bank has no class {label!r}; it has {self.describe_classes()}")
        return row

    def label_of(self, name_or_label: int | str | Tensor) -> int:
        """The label of a class given by label, name, or label as text.

        Raises:
            CamscopeError: when the bank has no such class (with the classes it has).
        """
        if isinstance(name_or_label, Tensor):
            name_or_label = int(name_or_label)
        if isinstance(name_or_label, bool):
            raise CamscopeError("a class must be a label or a name, got a bool")
        if isinstance(name_or_label, int):
            if self.moments.row(name_or_label) is not None:
                return name_or_label
        else:
            text = str(name_or_label).strip()
            by_name = {self.class_name(label).lower(): label for label in self.moments.labels}
            if text.lower() in by_name:
                return by_name[text.lower()]
            if text.lstrip("-").isdigit() and self.moments.row(int(text)) is not None:
                return int(text)
        raise CamscopeError(f"the bank has no class {name_or_label!r}; it has {self.describe_classes()}")

    def describe_classes(self, limit: int = 12) -> str:
        """The first ``limit`` classes as ``"label (name)"``, for messages."""
        labels = self.moments.labels
        shown = [f"{label} ({self.class_name(label)})" for label in labels[:limit]]
        more = f" and {len(labels) - limit} more" if len(labels) > limit else ""
        return (", ".join(shown) + more) if shown else "no classes (it is empty)"

    def summary(self) -> dict[str, Any]:
        """What the bank describes and holds, JSON-friendly: model, layer, embedding, sizes and per-class counts.

        Example:
            >>> import torch
            >>> bank = ReferenceBank(feature_size=2, layer="fc", class_names={0: "cat", 1: "dog"})
            >>> _ = bank.update(torch.randn(3, 2), torch.tensor([0, 1, 1]))
            >>> summary = bank.summary()
            >>> summary["samples"], summary["classes"]
            (3, [{'label': 0, 'name': 'cat', 'count': 1}, {'label': 1, 'name': 'dog', 'count': 2}])
        """
        return {
            "model": (self.model or {}).get("name"),
            "layer": self.layer,
            "embedding": self.embedding,
            "feature_size": self.feature_size,
            "samples": self.count,
            "scatter": self.scatter_mode,
            "input_size": self.input_size,
            "classes": [
                {"label": label, "name": name, "count": int(count)}
                for label, name, count in zip(self.labels, self.class_names, self.counts.tolist())
            ],
        }

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
        labels_present = self.moments.labels
        if kind == "all":
            return self._group_of(list(range(len(labels_present))), "all")
        labelled = [row for row, label in enumerate(labels_present) if label != UNLABELLED]
        if not labelled:
            raise CamscopeError(f"group {kind!r} needs class labels, but the bank is unlabelled: use 'all'")
        if kind == "knn":
            if embedding is None:
                raise CamscopeError("group 'knn' needs the example's embedding: bank.group('knn', c, embedding=z)")
            if classes is not None and not isinstance(classes, (int, str, Tensor)):
                raise CamscopeError("group 'knn' leaves out one class (the explained one), not several")
            exclude = None if classes is None else torch.tensor([self.label_of(classes)])
            neighbours = self.nearest_classes(torch.as_tensor(embedding).reshape(1, -1), k, exclude=exclude)[0]
            return self.group_of_labels(neighbours.tolist(), name=f"knn{k}")
        if classes is None:
            raise CamscopeError(f"group {kind!r} needs a class: bank.group({kind!r}, CLASS)")
        chosen = [classes] if isinstance(classes, (int, str, Tensor)) else list(classes)
        labels = sorted({self.label_of(c) for c in chosen})
        if kind in ("intra", "others") and len(labels) != 1:
            raise CamscopeError(f"group {kind!r} takes one class (the explained one), got {len(labels)}")
        if kind == "others":
            rows = [row for row in labelled if labels_present[row] != labels[0]]
            return self._group_of(rows, f"others({self.class_name(labels[0])})")
        return self.group_of_labels(labels, name=f"{kind}({','.join(self.class_name(c) for c in labels)})")

    def group_of_labels(self, labels: Iterable[int], name: str | None = None) -> ReferenceGroup:
        """The pooled group of some labels."""
        rows = sorted({self._row(self.label_of(int(label))) for label in labels})
        present = self.moments.labels
        return self._group_of(rows, name or f"classes({','.join(str(present[r]) for r in rows)})")

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
        total, mean, scatter = self.moments.pooled(rows)
        if total < 1:
            raise CamscopeError(
                f"the reference group {name} is empty (its classes have no samples): "
                "choose classes that the bank has samples of, or rebuild the bank"
            )
        present = self.moments.labels
        group = ReferenceGroup(
            round(total),
            mean,
            scatter,
            classes=[present[r] for r in rows],
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
        if key not in self._nearest:
            present = self.moments.labels
            rows = [row for row, label in enumerate(present) if label != UNLABELLED]
            if not rows:
                raise CamscopeError("knn needs class labels, but the bank is unlabelled: use reference 'all'")
            index = torch.tensor(rows, device=self.device)
            centre = self.moments.means[index].mean(dim=0)
            means = (self.moments.means[index] - centre).to(device, torch.float32)
            labels = torch.tensor([present[r] for r in rows], device=device)
            self._nearest[key] = (centre.to(device, torch.float32), means, (means * means).sum(dim=1), labels)
        centre, means, norms, labels = self._nearest[key]
        z = embeddings.to(torch.float32) - centre
        distances = (z * z).sum(dim=1, keepdim=True) - 2 * z @ means.T + norms
        available = labels.numel()
        if exclude is not None:
            exclude = torch.as_tensor(exclude, device=device).reshape(-1, 1)
            distances = distances.masked_fill(labels[None, :] == exclude, math.inf)
            available -= 1
        if available < 1:
            raise CamscopeError(
                "the reference group knn is empty: the bank has no class besides the explained one "
                f"({self.describe_classes()}); use reference 'all' or 'intra', or add classes to the bank"
            )
        nearest = distances.topk(min(k, available), dim=1, largest=False).indices
        return labels[nearest]

    def __repr__(self) -> str:
        return (
            f"ReferenceBank(layer={self.layer!r}, K={self.feature_size}, classes={len(self.moments.labels)}, "
            f"samples={self.count}, embedding={self.embedding!r}, scatter={self.scatter_mode!r})"
        )
