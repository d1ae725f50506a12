"""Deep Feature Factorization: concepts from a non-negative factorization of the activations.

Collins, Achanta & Süsstrunk, "Deep Feature Factorization For Concept
Discovery", ECCV 2018, arXiv:1806.10206. The activations of a batch at one layer,
arranged as a ``[K, N]`` matrix (``K`` channels, ``N`` positions of all images),
are factorised as ``V ~ W H`` with ``W >= 0`` (``[K, k]``, one direction in feature
space per concept) and ``H >= 0`` (``[k, N]``, where each concept is, per image).
Concepts are found jointly over the batch (the paper's co-segmentation), or per
image (``shared=False``, the images' factorizations batched).

:func:`nmf` is scikit-learn's coordinate-descent solver (``NMF(solver="cd")``:
each sweep updates every column of ``W``, then every row of ``H``, by exact
coordinate minimisation, i.e. hierarchical alternating least squares), in torch,
batched over independent matrices: the factorization runs on the model's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.errors import CamscopeError
from camscope.options import Option

__all__ = ["DeepFeatureFactorization", "Factorization", "deep_feature_factorization", "nmf"]


def _sweep(factor: Tensor, gram: Tensor, target: Tensor, active: Tensor) -> Tensor:
    """One coordinate-descent sweep over the rows of ``factor`` (``[G, k, a]``), in place.

    Minimises ``||V - F^T O||^2`` over ``F`` for fixed ``O``, given ``gram = O O^T``
    (``[G, k, k]``) and ``target = O V^T`` (``[G, k, a]``). Row ``t`` moves to the
    minimum along it, clipped at 0: ``f_t <- max(0, f_t - g_t / gram_tt)`` with the
    gradient ``g_t = gram_t F - target_t`` of the current ``F`` (rows before ``t``
    already updated), scikit-learn's ``_update_cdnmf_fast``. Returns the summed absolute
    projected gradient per matrix ``[G]``, measured before each update; matrices not
    ``active`` are left unchanged.
    """
    diagonal = gram.diagonal(dim1=1, dim2=2)
    usable = (diagonal != 0) & active[:, None]
    step = torch.where(
        usable, -1 / torch.where(usable, diagonal, torch.ones_like(diagonal)), torch.zeros_like(diagonal)
    )
    before = factor.clone()  # row t's value when it is updated: only row t changes at step t
    rows, gram_rows, target_rows, steps = (t.split(1, dim=1) for t in (factor, gram, target, step[:, :, None]))
    grads = []
    for row, gram_row, target_row, row_step in zip(rows, gram_rows, target_rows, steps):
        grad = torch.baddbmm(target_row, gram_row, factor, beta=-1)  # [G, 1, a]
        row.addcmul_(grad, row_step).clamp_(min=0)
        grads.append(grad)
    gradient = torch.cat(grads, dim=1)
    # The projected gradient: the gradient, or its negative part where the coordinate was at 0.
    projected = torch.where(before > 0, gradient.abs(), (-gradient).clamp(min=0))
    return projected.sum(dim=(1, 2))


def nmf(
    matrix: Tensor,
    components: int,
    *,
    iterations: int = 200,
    tol: float = 1e-4,
    init: tuple[Tensor, Tensor] | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Non-negative matrix factorization ``V ~ W H`` minimising ``||V - W H||_F^2``, for one matrix or a batch.

    Args:
        matrix: ``V >= 0``, ``[n, m]`` or ``[G, n, m]`` (``G`` independent factorizations).
        components: ``k``.
        iterations: at most this many sweeps (scikit-learn's ``max_iter``).
        tol: a matrix stops when its projected-gradient norm (sum of absolute values)
            falls to ``tol`` times that of the first sweep (scikit-learn's rule).
        init: ``(W, H)`` to start from; default scikit-learn's ``init="random"``
            scheme, ``sqrt(mean(V) / k) |N(0, 1)|``, drawn on the CPU from ``seed`` (H first).
        seed: the seed of the default initialisation.

    Returns:
        ``W`` (``[n, k]`` or ``[G, n, k]``) and ``H`` (``[k, m]`` or ``[G, k, m]``), in the
        matrix's dtype (computed in float32 at least).

    Example:
        >>> import torch
        >>> w, h = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), torch.tensor([[1.0, 0.0, 3.0], [0.0, 1.0, 1.0]])
        >>> W, H = nmf(w @ h, 2, iterations=500, tol=0.0)
        >>> bool(torch.allclose(W @ H, w @ h, atol=1e-4))
        True
    """
    single = matrix.ndim == 2
    work_dtype = torch.promote_types(matrix.dtype, torch.float32)
    values = (matrix.unsqueeze(0) if single else matrix).to(work_dtype)
    if values.ndim != 3 or not bool((values >= 0).all()):
        raise CamscopeError(f"nmf needs a non-negative [n, m] or [G, n, m] matrix, got shape {list(matrix.shape)}")
    groups, rows, cols = values.shape
    if init is None:
        generator = torch.Generator().manual_seed(seed)
        scale = (values.mean(dim=(1, 2)) / components).sqrt()[:, None, None]
        h = torch.randn(groups, components, cols, generator=generator, dtype=work_dtype).to(values.device).abs() * scale
        w = torch.randn(groups, rows, components, generator=generator, dtype=work_dtype).to(values.device).abs() * scale
    else:
        w, h = (t.unsqueeze(0) if single else t for t in init)
    # Copies (never the caller's init tensors): the sweeps update them in place.
    w_rows = w.to(values.device, work_dtype).transpose(1, 2).clone(memory_format=torch.contiguous_format)  # W^T
    h = h.to(values.device, work_dtype).clone(memory_format=torch.contiguous_format)  # [G, k, m]
    active = torch.ones(groups, dtype=torch.bool, device=values.device)
    first = None
    for _ in range(iterations):
        violation = _sweep(w_rows, h @ h.transpose(1, 2), h @ values.transpose(1, 2), active)
        violation = violation + _sweep(h, w_rows @ w_rows.transpose(1, 2), w_rows @ values, active)
        first = violation if first is None else first
        active = active & (first != 0) & (violation > tol * first)
        if not bool(active.any()):  # one host synchronisation per sweep: the stopping rule
            break
    w, h = w_rows.transpose(1, 2).to(matrix.dtype), h.to(matrix.dtype)
    return (w[0], h[0]) if single else (w, h)


@dataclass
class Factorization:
    """Deep Feature Factorization of a batch's activations.

    Attributes:
        concepts: ``[B, k, K]``: each concept as an activation vector, ``W_j + m`` (the
            same rows for every image when the concepts are shared).
        maps: ``[B, k, *spatial]``: where each concept is in each image (``H``, non-negative).
        offset: ``[B, K]``: ``m``, the per-channel minimum subtracted before the
            factorization (0 for activations after a ReLU that reach 0).
    """

    concepts: Tensor
    maps: Tensor
    offset: Tensor

    @property
    def directions(self) -> Tensor:
        """``[B, k, K]``: the factor ``W_j`` itself, ``concepts - offset``."""
        return self.concepts - self.offset[:, None, :]


def deep_feature_factorization(
    activations: Tensor,
    components: int = 5,
    *,
    shared: bool = True,
    iterations: int = 200,
    tol: float = 1e-4,
    seed: int = 0,
    init: tuple[Tensor, Tensor] | None = None,
) -> Factorization:
    """Factorise activations ``[B, K, *spatial]`` into ``components`` concepts (Collins et al., arXiv:1806.10206).

    ``A - m ~ sum_j H_j W_j``, with ``m`` the minimum of each channel (over the batch's
    positions when ``shared``, else over each image's) so that the matrix is
    non-negative, as pytorch-grad-cam 1.5.7's ``dff``; :func:`nmf` does the
    factorization (``init``: its ``(W, H)``, ``[K, k]`` and ``[k, B * P]`` when shared,
    with a leading ``B`` when not).

    Example:
        >>> import torch
        >>> f = deep_feature_factorization(torch.rand(2, 8, 4, 4), components=3)
        >>> f.concepts.shape, f.maps.shape, bool((f.maps >= 0).all())
        (torch.Size([2, 3, 8]), torch.Size([2, 3, 4, 4]), True)
    """
    batch, channels = activations.shape[:2]
    spatial = activations.shape[2:]
    work = torch.nan_to_num(activations.detach(), nan=0.0).to(torch.promote_types(activations.dtype, torch.float32))
    flat = work.flatten(2)  # [B, K, P]
    if shared:
        matrix = flat.transpose(0, 1).reshape(channels, -1)  # [K, B * P]: image by image
        offset = matrix.amin(dim=1, keepdim=True)
        w, h = nmf(matrix - offset, components, iterations=iterations, tol=tol, init=init, seed=seed)
        maps = h.reshape(components, batch, *spatial).transpose(0, 1)
        concepts = (w + offset).T.expand(batch, -1, -1)
        offsets = offset[:, 0].expand(batch, -1)
    else:
        offset = flat.amin(dim=2, keepdim=True)  # [B, K, 1]
        w, h = nmf(flat - offset, components, iterations=iterations, tol=tol, init=init, seed=seed)
        maps = h.reshape(batch, components, *spatial)
        concepts = (w + offset).transpose(1, 2)
        offsets = offset[:, :, 0]
    dtype = activations.dtype
    return Factorization(concepts.to(dtype).contiguous(), maps.to(dtype).contiguous(), offsets.to(dtype).contiguous())


@register_method
class DeepFeatureFactorization(CamMethod):
    r"""Deep Feature Factorization (Collins et al. 2018): concepts of the layer, weighted by the target's gradient.

    Paper: "Deep Feature Factorization For Concept Discovery", arXiv:1806.10206.
    The activations are factorised into ``k`` concepts, ``A - m ~ sum_j H_j W_j`` (see
    :func:`deep_feature_factorization`: jointly over the batch, as the paper and
    pytorch-grad-cam 1.5.7). DFF finds concepts, not the evidence for a target; in
    camscope a concept's score for the target is its Grad-CAM weight,
    ``s_j = <W_j, w>`` with ``w_k = (1/Z) sum_ij dy/dA_k^ij``, and the map is the
    concepts' maps weighted by their scores, ``M = sum_j s_j H_j``: Grad-CAM of the
    factorised activations (without the constant ``<m, w>``).

    ``extras``: ``"concepts"`` ``[B, k, K]`` (``W_j + m``, pytorch-grad-cam's concept
    embeddings), ``"concept_maps"`` ``[B, k, *spatial]`` (``H``, at the layer's
    resolution) and ``"concept_scores"`` ``[B, k]`` (``s``). For a layer followed by
    global average pooling and a linear classifier ``(U, b)``,
    ``Z s_j + <U_c, m> + b_c`` is the class score of the concept embedding, what the
    peer's ``computation_on_concepts`` reports.

    The factorization is scikit-learn's coordinate-descent NMF (the peer's), in torch
    on the model's device; its default random initialisation is drawn from torch's
    generator (``seed``), not NumPy's, so its concepts equal the peer's when started
    from the same matrices (as the tests do), not by default.

    Comparisons: the scores are linear in the gradient, so a Finer target gives
    ``s_j^c - gamma s_j^d``; DiffCAM weights do not apply.

    Options:
        components: number of concepts ``k`` (default 5, as pytorch-grad-cam's ``dff``).
        shared: concepts shared by the batch (True, the paper's) or per image.
        iterations, tol: the solver's limits (scikit-learn's 200 and 1e-4).
        seed: seed of the initialisation.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> e = camscope.explain(model, torch.randn(2, 3, 64, 64), method="dff", layer="layer3", components=4)
        >>> e.extras["concept_maps"].shape, e.extras["concept_scores"].shape
        (torch.Size([2, 4, 4, 4]), torch.Size([2, 4]))
    """

    name = "dff"
    channel_weights = False
    display_name = "Deep Feature Factorization"
    linear_in_gradient = True
    declared_options = (
        Option("components", int, 5, "number of concepts", positive=True),
        Option("shared", bool, True, "concepts shared by the batch (else per image)"),
        Option("iterations", int, 200, "at most this many solver sweeps", positive=True),
        Option("tol", float, 1e-4, "relative projected-gradient tolerance of the solver", min=0),
        Option("seed", int, 0, "seed of the random initialisation"),
    )

    def __call__(self, ctx: CamContext) -> CamResult:
        factors = deep_feature_factorization(
            ctx.activations,
            self.options["components"],
            shared=self.options["shared"],
            iterations=self.options["iterations"],
            tol=self.options["tol"],
            seed=self.options["seed"],
        )
        weights = ctx.require_gradients().mean(dim=ctx.spatial_dims)  # Grad-CAM's [B, K]
        scores = torch.einsum("bjk,bk->bj", factors.directions, weights.to(factors.concepts.dtype))
        raw = torch.einsum("bj,bj...->b...", scores, factors.maps)
        extras = {"concepts": factors.concepts, "concept_maps": factors.maps, "concept_scores": scores}
        return CamResult(raw=raw, extras=extras)
