"""DiffCAM: how an example differs from a group of reference examples.

DiffCAM (Li et al., "DiffCAM: Data-Driven Saliency Maps by Capturing Feature Differences", CVPR 2025, Sec. 3.2) explains an example by the direction in
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

Reference groups (:class:`~camscope.stats.reference_group.ReferenceGroup`)
come from a :class:`~camscope.accumulators.reference_bank.ReferenceBank` (per-class
counts, means and scatters from one pass over a dataset, float64) or directly
from reference inputs or embeddings (:func:`camscope.engine.embedding.embed`).
A group of classes ``G`` has the pooled scatter
``S_G = sum_{c in G} [S_c + n_c (mu_c - mu_G)(mu_c - mu_G)^T]``:

* ``"others"`` every class but the example's: "why is it c" (default),
* ``"knn"`` the ``k`` classes whose means are nearest to the example's
  embedding, its own class excluded (the paper's ImageNet setting, k = 100).
  The paper says "we retrieve the top 100 most similar mean features as the
  reference group": ``knn_group="means"`` takes those ``k`` class means
  themselves as the group (mean of the means, scatter of the means around it:
  at most ``k - 1`` directions, so it needs the regularisation), while
  ``knn_group="samples"`` (the default) pools every bank sample of the ``k``
  classes (``S_G`` below); the paper does not say which it used,
* ``"class"`` one class (or several) d: "why not d" (counterfactual; both
  maps of a pair: :func:`camscope.analyses.counterfactual.counterfactual`),
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

import os
import warnings
import weakref
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from camscope.accumulators.reference_bank import DEFAULT_K, ReferenceBank
from camscope.engine.embedding import EMBEDDINGS, check_embedding, embedding_of
from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.errors import CamscopeError
from camscope.models.fingerprint import fingerprint_differences, model_fingerprint, version_counter
from camscope.options import Option
from camscope.stats.reference_group import ReferenceGroup, regularization_key
from camscope.targets.base import ClassTarget, Target
from camscope.targets.example import ExampleTarget

__all__ = ["DiffCAM"]

#: Readings of the "knn" group: the pooled samples of the k nearest classes, or their k class means only.
KNN_GROUPS = ("samples", "means")
#: Reference groups a DiffCAM instance keeps for reference inputs (one per model state, layer, ...).
GROUP_CACHE_SIZE = 4


def _model_state_key(model: nn.Module) -> tuple[Any, ...]:
    """What changes when the model's weights do: every parameter's and buffer's storage and version.

    ``load_state_dict``, optimiser steps and other in-place updates bump a tensor's version;
    ``model.to(...)`` and replaced parameters change its storage.
    """
    tensors = [*model.parameters(), *(b for b in model.buffers() if b is not None)]
    return tuple((t.data_ptr(), version_counter(t), t.dtype, t.device) for t in tensors)


def _parse_spec(text: str) -> tuple[str, Any]:
    """``"others"``, ``"all"``, ``"intra"``, ``"knn"``, ``"knn:100"``, ``"class:NAME[,NAME]"``, ``"folder:PATH"``."""
    kind, _, argument = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "knn":
        if not argument:
            return "knn", DEFAULT_K
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


@register_method
class DiffCAM(CamMethod):
    """DiffCAM (Li et al., CVPR 2025): the direction that best separates the example from a reference group.

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
        knn_group: the "knn" group: ``"samples"`` (pooled samples of the ``k`` classes, default) or
            ``"means"`` (the ``k`` class means themselves, the paper's words).
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
    display_name = "DiffCAM"
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
            check=regularization_key,
        ),
        Option("k", int, DEFAULT_K, "neighbours of the 'knn' reference", positive=True),
        Option(
            "knn_group",
            str,
            "samples",
            "the 'knn' group: 'samples' (every sample of the k classes) or 'means' (the k class means)",
            choices=KNN_GROUPS,
        ),
        Option("embedding", str, None, "'mean' or 'cls' (None: the bank's, else 'mean')", choices=EMBEDDINGS),
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
        self.knn_group = self.options["knn_group"]
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
            if reference.ndim not in (2, 3, 4, 5):
                raise CamscopeError(
                    "diffcam: a reference tensor must hold inputs ([N, C, T], [N, C, H, W] or [N, C, D, H, W]) "
                    f"or embeddings [N, K], got {list(reference.shape)}"
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
        self.embedding = check_embedding(embedding or source_embedding or "mean")
        # (model identity and state, layer, layout, ...) -> (weak reference to the model, group); an LRU
        self._tensor_groups: OrderedDict[tuple[Any, ...], tuple[weakref.ref[nn.Module], ReferenceGroup]] = OrderedDict()

    def prepare_target(self, target: Target, model: nn.Module) -> Target:
        """Replace class targets with one that needs no class scores (DiffCAM needs none)."""
        del model  # the replacement reads the bank, not the model
        if isinstance(target, ClassTarget):
            return ExampleTarget(getattr(target, "_spec", None), self.bank, self.predict)
        return target

    # -- embeddings ---------------------------------------------------------------------

    def _embeddings(self, ctx: CamContext) -> Tensor:
        if self.embedding == "mean":
            pooled = ctx.target.pool(ctx.activations, ctx.inputs.shape[2:])  # a box's or region's mean, if any
            return ctx.activations.mean(dim=ctx.spatial_dims) if pooled is None else pooled
        native = self._activations_at(ctx, ctx.inputs, native=True)
        return embedding_of(native, ctx.inputs.shape, ctx.layer, ctx.model, "cls", {})

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
                chunks.append(embedding_of(native, batch.shape, ctx.layer, ctx.model, "cls", {}))
            else:
                grid = self._activations_at(ctx, batch, native=False)
                chunks.append(grid.mean(dim=tuple(range(2, grid.ndim))))
        return torch.cat(chunks)

    def _cache_key(self, ctx: CamContext, *reference: Any) -> tuple[Any, ...]:
        """Everything the embeddings of reference inputs depend on: the model (identity and weights), the layer,
        the layout (through the activations' shape), the embedding, the inputs' device and dtype, the references."""
        return (
            id(ctx.model),
            _model_state_key(ctx.model),
            ctx.layer,
            tuple(ctx.activations.shape[1:]),
            self.embedding,
            str(ctx.inputs.device),
            ctx.inputs.dtype,
            *reference,
        )

    def _cached_group(self, ctx: CamContext, key: tuple[Any, ...], make: Any) -> ReferenceGroup:
        entry = self._tensor_groups.get(key)
        if entry is not None and entry[0]() is ctx.model:
            self._tensor_groups.move_to_end(key)
            return entry[1]
        group = make()
        self._tensor_groups[key] = (weakref.ref(ctx.model), group)
        self._tensor_groups.move_to_end(key)
        while len(self._tensor_groups) > GROUP_CACHE_SIZE:
            self._tensor_groups.popitem(last=False)
        return group

    def _tensor_group(self, ctx: CamContext) -> ReferenceGroup:
        tensor = self.tensor
        assert tensor is not None
        if tensor.ndim == 2:
            key: tuple[Any, ...] = ("embeddings", id(tensor), version_counter(tensor))
            return self._cached_group(
                ctx, key, lambda: ReferenceGroup.from_embeddings(tensor, name="reference embeddings")
            )

        def make() -> ReferenceGroup:
            source = {"layer": ctx.layer, "embedding": self.embedding}
            embeddings = self._embed_inputs(ctx, tensor)
            return ReferenceGroup.from_embeddings(embeddings, name="reference inputs", source=source)

        return self._cached_group(ctx, self._cache_key(ctx, "inputs", id(tensor), version_counter(tensor)), make)

    def _folder_group(self, ctx: CamContext) -> ReferenceGroup:
        def make() -> ReferenceGroup:
            from camscope.passes.batches import iter_batches

            chunks = [
                self._embed_inputs(ctx, inputs)
                for inputs, _ in iter_batches(
                    str(self.argument), self.batch_size, ctx.inputs.device, size=int(ctx.inputs.shape[-1])
                )
            ]
            return ReferenceGroup.from_embeddings(torch.cat(chunks), name=f"folder {self.argument}")

        key = self._cache_key(ctx, "folder", str(self.argument), tuple(ctx.inputs.shape[2:]))
        return self._cached_group(ctx, key, make)

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
            if isinstance(ctx.target, ExampleTarget):
                ctx.target.bind(classes)
        classes = classes.reshape(-1)
        missing = sorted({int(c) for c in classes.tolist()} - set(bank.labels))
        if missing:
            raise CamscopeError(
                f"class {missing[0]} is not in the reference bank, which has {bank.describe_classes()}: "
                "pass target= with bank labels, or predict='nearest'"
            )
        return classes

    # -- weights --------------------------------------------------------------------------

    def __call__(self, ctx: CamContext) -> CamResult:
        self._check_references(ctx)
        z = self._embeddings(ctx)
        if not bool(torch.isfinite(z).all()):
            raise CamscopeError(
                f"diffcam: the layer {ctx.layer!r} gives NaN or infinite activations for the explained inputs: "
                "check the inputs (normalised, finite) and the model's weights"
            )
        group = self._shared_group(ctx)
        weights = group.weights(z, self.regularization) if group is not None else self._per_example_weights(ctx, z)
        weights = weights.to(ctx.activations.dtype)
        if not bool(torch.isfinite(weights).all()):
            raise CamscopeError(
                f"diffcam: the channel weights overflow {ctx.activations.dtype} (the example is extremely far from "
                "the reference group for its spread): use a larger regularization, or explain in float64"
            )
        return CamResult(weights=ctx.expand(weights))

    def _check_references(self, ctx: CamContext) -> None:
        """Refuse a bank or group made with another model, layer or feature size; warn of another input size."""
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
                    stacklevel=3,
                )
        elif self.group is not None:
            source = self.group.source
            differences = []
            if self.group.feature_size != channels:
                differences.append(f"feature size: the group has {self.group.feature_size}, the layer {channels}")
            if self.check_model and source.get("layer") not in (None, ctx.layer):
                differences.append(f"layer: the group comes from {source.get('layer')!r}, explained at {ctx.layer!r}")
            if self.check_model and source.get("model") and not differences:
                differences.extend(fingerprint_differences(source["model"], model_fingerprint(ctx.model)))
            if differences:
                raise CamscopeError("the reference group does not match: " + "; ".join(differences))

    def _shared_group(self, ctx: CamContext) -> ReferenceGroup | None:
        """The one reference group of every explained example (None: each example has its own)."""
        bank = self.bank
        if self.group is not None:
            return self.group
        if self.tensor is not None:
            return self._tensor_group(ctx)
        if self.kind == "folder":
            return self._folder_group(ctx)
        if self.kind not in ("all", "class"):
            return None
        if bank is None:
            raise CamscopeError(f"diffcam: reference {self.kind!r} needs a bank")
        if self.kind == "all":
            return bank.group("all")
        return bank.group("class", self.argument)

    def _per_example_weights(self, ctx: CamContext, z: Tensor) -> Tensor:
        bank, kind = self.bank, self.kind
        assert bank is not None and kind is not None
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
            if self.kind == "knn" and self.knn_group == "means":
                rows = [bank.moments.labels.index(label) for label in key]
                group = ReferenceGroup.from_embeddings(bank.moments.means[rows], name=f"knn{self.k}-means")
            elif self.kind == "knn":
                group = bank.group_of_labels(key, name=f"knn{self.k}")
            else:
                group = bank.group(kind, key[0])
            index = torch.tensor(indices, device=z.device)
            weights[index] = group.weights(z[index], self.regularization)
        return weights
