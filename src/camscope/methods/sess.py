"""SESS: saliency enhancing with scaling and sliding, around any camscope method.

Tursun, Denman, Sridharan & Fookes, "SESS: Saliency Enhancing with Scaling and
Sliding", ECCV 2022, arXiv:2207.01769. The image is resized to several scales
(its shorter side to each size ``s``), a square window slides over each scaled
image, and a base method explains every patch. Each patch's map, rescaled to
[0, 1], is weighted by the patch's score divided by the highest patch score of
the image (the channel-wise weight), pasted back where the patch came from and
resized to the image; the maps are fused by a spatial weighted average (each
pixel averages the values above ``theta`` that it received) or a maximum, and
smoothed by an 11 x 11 Gaussian (sigma 5).

The patches of all images of a batch are explained together, ``batch_size``
patches per pass: the crops at one window position, one per image, are scored
with the batch's resolved target, so every target that scores a whole image
works. Pasting a patch's map into its scaled image and resizing that image is a
linear map, computed as ``R_h[:, rows] @ map @ R_w[:, cols]^T`` with the
bilinear resizing matrices ``R`` (no full-size canvas per patch).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.engine.maps import final_maps
from camscope.engine.method import CamContext, CamMethod, CamResult, get_method, method_class, register_method
from camscope.errors import CamscopeError
from camscope.options import Option
from camscope.targets.base import Target
from camscope.targets.detection import BoxTarget, OnBox
from camscope.targets.segmentation import OnRegion, SegmentationTarget

__all__ = ["SESS", "gaussian_blur", "window_starts"]

_NOT_PATCHES = ("sess", "dff")
_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _check_base(name: object) -> None:
    cls = method_class(str(name))
    if cls.name in _NOT_PATCHES:
        raise CamscopeError(f"SESS cannot run {cls.name!r} on its patches: choose a CAM method such as 'gradcam'")


def _check_scales(scales: Sequence[Any]) -> None:
    if isinstance(scales, str) or not scales or not all(isinstance(s, int) and not isinstance(s, bool) for s in scales):
        raise CamscopeError(f"scales must be a non-empty list of ints (sizes of the shorter side), got {scales!r}")
    if min(scales) < 1:
        raise CamscopeError(f"scales must be positive sizes, got {list(scales)}")


def _check_ratio(ratio: float) -> None:
    if not ratio < 1:
        raise CamscopeError(f"pre_filter_ratio must be in [0, 1) (the share of patches left out), got {ratio}")


def window_starts(length: int, step: int, window: int) -> list[int]:
    """The starts of the windows that cover ``length`` pixels; the last one is shifted back inside.

    Example:
        >>> window_starts(10, 4, 4), window_starts(4, 4, 4)
        ([0, 4, 6], [0])
    """
    starts = []
    for start in range(0, length, step):
        if start + window >= length:
            starts.append(max(length - window, 0))
            break
        starts.append(start)
    return starts


def gaussian_blur(maps: Tensor, size: int = 11, sigma: float = 5.0) -> Tensor:
    """A separable Gaussian blur of ``[B, *spatial]`` maps, borders reflected without repeating the edge.

    The kernel is ``exp(-(i - (size - 1) / 2)^2 / (2 sigma^2))``, normalised, along each
    spatial axis; the border rule is OpenCV's default (``BORDER_REFLECT_101``), for
    any size (for ``[B, H, W]``, OpenCV's ``GaussianBlur(map, (size, size), sigma)``).

    Example:
        >>> import torch
        >>> gaussian_blur(torch.ones(1, 3, 4)).allclose(torch.ones(1, 3, 4))
        True
    """
    half = (size - 1) / 2
    offsets = torch.arange(size, dtype=maps.dtype, device=maps.device) - half
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    for dim in range(1, maps.ndim):
        length = maps.shape[dim]
        index = _reflect_101(torch.arange(-(size // 2), length + size // 2, device=maps.device), length)
        padded = maps.index_select(dim, index)
        windows = padded.unfold(dim, size, 1)  # [..., length, ..., size]
        maps = (windows * kernel).sum(dim=-1)
    return maps


def _reflect_101(index: Tensor, length: int) -> Tensor:
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    index = index.remainder(period)
    return torch.where(index >= length, period - index, index)


def _resize_matrix(source: int, target: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[target, source]``: bilinear resizing along one axis (``align_corners=False``, no antialiasing)."""
    eye = torch.eye(source, dtype=dtype, device=device).unsqueeze(0)
    return F.interpolate(eye, size=target, mode="linear", align_corners=False)[0].T


@dataclass
class _Scale:
    """One scale: the scaled size and the windows' starts along each axis."""

    size: tuple[int, ...]
    starts: list[list[int]]

    @property
    def corners(self) -> list[tuple[int, ...]]:
        return list(itertools.product(*self.starts))


class _Tiled(Target):
    """A resolved target of ``B`` rows, scoring a batch of ``k * B`` crops (crop ``i * B + b`` is of image ``b``)."""

    def __init__(self, inner: Target, batch: int) -> None:
        self.inner = inner
        self.batch = batch
        self.aggregate = inner.aggregate

    def read(self, outputs: Any) -> Tensor:
        return self.inner.read(outputs)

    def _tiles(self, outputs: Tensor) -> list[Tensor]:
        if outputs.shape[0] % self.batch:
            raise CamscopeError(f"{outputs.shape[0]} crops do not tile a batch of {self.batch} images")
        return list(outputs.split(self.batch))

    def __call__(self, outputs: Tensor) -> Tensor:
        return torch.cat([self.inner(tile) for tile in self._tiles(outputs)])

    def baseline_scores(self, outputs: Tensor) -> Tensor:
        return torch.cat([self.inner.baseline_scores(tile) for tile in self._tiles(outputs)])

    def classes(self) -> Tensor | None:
        return self.inner.classes()


def _refuse_regions(target: Target) -> None:
    inner = getattr(target, "inner", target)
    if isinstance(inner, (BoxTarget, OnBox, SegmentationTarget, OnRegion)):
        raise CamscopeError(
            f"SESS explains crops of the image, but a {type(inner).__name__} refers to places in the whole image: "
            "use a target of the whole image's scores, or another method"
        )


@register_method
class SESS(CamMethod):
    r"""SESS (Tursun et al. 2022): a base method on scaled and sliding patches, fused.

    Paper: "SESS: Saliency Enhancing with Scaling and Sliding", arXiv:2207.01769.
    For each scale ``s`` (the image's shorter side resized to ``s``, the other in
    proportion) and window position ``p``: ``M_p`` = the base method's map of the patch (rescaled to
    [0, 1]), ``w_p = y_p / max_q y_q`` with ``y_p = max(0, target(softmax(f(patch))))``,
    ``C_p`` = ``w_p M_p`` pasted at its place in the scaled image and resized to
    the input. Fusion: ``S = sum_p C_p 1[C_p > theta] / sum_p 1[C_p > theta]``
    (``pool="mean"``, 0 where no patch counts) or ``max_p C_p``; then the Gaussian
    blur. ``raw`` is ``S`` at the input's resolution (non-negative), ``maps`` it
    rescaled. The ``pre_filter_ratio`` lowest-scoring patches of each image are left
    out before their maps are computed (the union over the batch is computed).

    Defaults are the paper's and pytorch-grad-cam 1.5.7's: twelve scales from the
    window size in steps of ``round(2/7 window)`` (224, 288, ..., 928 for 224 px),
    the window the shorter side of the input, the step the window, no pre-filter,
    ``theta = 0``, mean pooling, smoothing, softmax scores: well over a hundred
    patches per 224 px image, each with the base method's cost. Its numbers equal
    pytorch-grad-cam's ``SESS`` (which follows the authors' code) for the same base
    method; the differences are camscope's: the images of a batch are explained
    together, and a constant patch map is 0 rather than divided by ``1e-7``.

    ``layer=`` is the base method's layer; the base method sees the patches with
    the whole image's resolved target (its predicted class), and a target of
    several components gives each patch the mean of its components. Targets that
    point at places in the image (boxes, segmentation regions) are refused;
    ``softmax_scores=False`` weights patches by the target's raw score (clipped at
    0), for targets that are not class scores. Comparisons: those of the base
    method (``base="gradcam"`` with a Finer target gives the fused Finer-CAMs);
    SESS itself has no channel weights. Signals and volumes are scaled and cropped
    along every axis in the same way (hypercube windows, linear and trilinear
    resizing, the blur along each axis). A model of several inputs is explained one
    sample at a time (its other inputs are paired with every crop).

    Options:
        base: the method run on every patch (default ``"gradcam"``).
        base_options: options of the base method.
        scales, num_scales, scale_step_ratio, window_size, step_size, pre_filter_ratio,
        theta, pool, smooth, softmax_scores, batch_size: as pytorch-grad-cam's ``SESS``.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> e = camscope.explain(model, torch.randn(1, 3, 64, 64), method="sess", layer="layer3", num_scales=2)
        >>> e.raw.shape, float(e.maps.max())
        (torch.Size([1, 64, 64]), 1.0)
    """

    name = "sess"
    channel_weights = False
    display_name = "SESS"
    uses_gradients = False
    declared_options = (
        Option("base", str, "gradcam", "the method run on every patch", check=_check_base),
        Option("base_options", dict, None, "options of the base method"),
        Option("scales", Sequence, None, "sizes of the shorter side (None: num_scales sizes)", check=_check_scales),
        Option("num_scales", int, 12, "number of scales when scales is None", positive=True),
        Option("scale_step_ratio", float, 2.0 / 7.0, "step between scales, as a share of the window", min=0),
        Option("window_size", int, None, "side of the square window (None: the input's shorter side)", positive=True),
        Option("step_size", int, None, "stride of the window (None: the window size)", positive=True),
        Option("pre_filter_ratio", float, 0.0, "share of lowest-scoring patches left out", min=0, check=_check_ratio),
        Option("theta", float, 0.0, "values at most theta are left out of the mean"),
        Option("pool", str, "mean", "fusion of the patch maps", choices=("mean", "max")),
        Option("smooth", bool, True, "Gaussian blur of the fused map (11 x 11, sigma 5)"),
        Option("softmax_scores", bool, True, "weight patches by the target on the softmax of the outputs"),
        Option("batch_size", int, 32, "patches per forward pass", positive=True),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.base = get_method(self.options["base"], **dict(self.options["base_options"] or {}))

    def prepare_target(self, target: Target, model: nn.Module) -> Target:
        _refuse_regions(target)
        return self.base.prepare_target(target, model)

    def _scales(self, shape: tuple[int, ...]) -> tuple[int, list[_Scale]]:
        window = self.options["window_size"] or min(shape)
        step = self.options["step_size"] or window
        sizes = self.options["scales"]
        if sizes is None:
            stride = round(window * self.options["scale_step_ratio"])
            sizes = [window + stride * i for i in range(self.options["num_scales"])]
        scales = []
        for size in sizes:
            if size < window:
                raise CamscopeError(f"every scale must be at least the window size {window}, got {size}")
            # The shorter side becomes ``size``, the others in proportion, rounded down (torchvision's resize).
            short = shape.index(min(shape))
            scaled = tuple(
                size if axis == short else int(size * length / shape[short]) for axis, length in enumerate(shape)
            )
            scales.append(_Scale(scaled, [window_starts(length, step, window) for length in scaled]))
        return window, scales

    def _patches(self, inputs: Tensor, scale: _Scale, window: int) -> Tensor:
        """``[P, B, C, *window]``: the crops of every window position of one scale.

        Images are resized as torchvision's ``resize`` does (bilinear, antialiased);
        signals and volumes by linear and trilinear interpolation.
        """
        work = inputs if inputs.dtype in (torch.float32, torch.float64) else inputs.float()
        dims = inputs.ndim - 2
        mode = _MODES[dims]
        scaled = F.interpolate(work, size=scale.size, mode=mode, align_corners=False, antialias=mode == "bilinear")
        span = torch.arange(window, device=inputs.device)
        corners = torch.tensor(scale.corners, device=inputs.device)
        index: tuple[slice | Tensor, ...] = (slice(None), slice(None)) + tuple(
            (corners[:, axis, None] + span).reshape(-1, *[window if a == axis else 1 for a in range(dims)])
            for axis in range(dims)
        )
        return scaled[index].movedim(2, 0).to(inputs.dtype)

    def _chunks(self, patches: Tensor, keep: Tensor | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """``(positions, crops)`` of at most ``batch_size`` crops (whole positions, every image at each)."""
        positions = torch.arange(patches.shape[0], device=patches.device)
        if keep is not None:
            positions = positions[keep]
        if positions.numel() == 0:
            return
        per_chunk = max(1, self.options["batch_size"] // patches.shape[1])
        for chosen in positions.split(per_chunk):
            yield chosen, patches[chosen].flatten(0, 1).contiguous()

    def _score(self, target: _Tiled, outputs: Tensor) -> Tensor:
        if self.options["softmax_scores"] and outputs.ndim < 2:
            raise CamscopeError(
                f"SESS weights patches by the target on the softmax of the outputs, but the outputs have shape "
                f"{list(outputs.shape)}, not [batch, classes]: pass softmax_scores=False"
            )
        values = outputs.float().softmax(dim=1) if self.options["softmax_scores"] else outputs
        scores = target(values.to(outputs.dtype))
        return (scores.mean(dim=1) if scores.ndim == 2 else scores).clamp(min=0)

    def _patch_maps(self, ctx: CamContext, target: _Tiled, crops: Tensor, outputs: Tensor) -> Tensor:
        """The base method's maps of ``crops``, rescaled to [0, 1] at the crop's size."""
        if self.base.uses_gradients:
            activations, gradients = ctx.gradients_at(crops, target=target)
        else:
            assert ctx.activations_at is not None
            activations, gradients = ctx.activations_at(crops), None
        patch_ctx = replace(
            ctx,
            inputs=crops,
            activations=activations,
            gradients=gradients,
            outputs=outputs,
            target=target,
            scores=self._plain_scores(target, outputs),
            gradients_at=partial(ctx.gradients_at, target=target),
        )
        result = self.base(patch_ctx)
        return final_maps(result.signed_map(activations), crops.shape[2:])

    @staticmethod
    def _plain_scores(target: Target, outputs: Tensor) -> Tensor:
        scores = target(outputs)
        return scores.mean(dim=1) if scores.ndim == 2 else scores

    def __call__(self, ctx: CamContext) -> CamResult:
        inputs = ctx.inputs
        batch = inputs.shape[0]
        window, scales = self._scales(tuple(inputs.shape[2:]))
        target = _Tiled(ctx.target, batch)
        outputs, scores = self._all_scores(ctx, target, scales, window)
        keep = self._kept(scores)
        top = scores.amax(dim=0)
        weights = torch.where(
            top > 0, scores / torch.where(top > 0, top, torch.ones_like(top)), torch.ones_like(scores)
        )
        fused, finite = self._fuse(ctx, target, scales, window, outputs, weights, keep)
        if not bool(finite & torch.isfinite(scores).all()):
            raise CamscopeError(
                "the SESS map has NaN or infinite values: the model's scores or the base method's patch maps are not "
                "finite for these inputs (check the model on them; a float16 model may need float32)"
            )
        if self.options["smooth"]:
            fused = gaussian_blur(fused)
        return CamResult(raw=fused.to(inputs.dtype))

    def _all_scores(
        self, ctx: CamContext, target: _Tiled, scales: list[_Scale], window: int
    ) -> tuple[list[Tensor], Tensor]:
        """The outputs of every crop (per scale, ``[P * B, ...]``) and the scores ``[P_total, B]``."""
        outputs, scores = [], []
        for scale in scales:
            patches = self._patches(ctx.inputs, scale, window)
            found = [ctx.forward(crops) for _, crops in self._chunks(patches)]
            outputs.append(torch.cat(found))
            scores.append(torch.cat([self._score(target, out) for out in found]).reshape(-1, ctx.inputs.shape[0]))
        return outputs, torch.cat(scores)

    def _kept(self, scores: Tensor) -> Tensor:
        """``[P, B]`` bool: each image's highest-scoring patches, all but its ``pre_filter_ratio`` lowest."""
        total = scores.shape[0]
        dropped = int(total * self.options["pre_filter_ratio"])
        order = torch.argsort(scores, dim=0, stable=True)
        rank = torch.empty_like(order).scatter_(
            0, order, torch.arange(total, device=scores.device)[:, None].expand_as(order)
        )
        return rank >= dropped

    def _fuse(
        self,
        ctx: CamContext,
        target: _Tiled,
        scales: list[_Scale],
        window: int,
        outputs: list[Tensor],
        weights: Tensor,
        keep: Tensor,
    ) -> tuple[Tensor, Tensor]:
        inputs = ctx.inputs
        batch, shape = inputs.shape[0], tuple(inputs.shape[2:])
        dtype = torch.promote_types(inputs.dtype, torch.float32)
        total = torch.zeros(batch, *shape, dtype=dtype, device=inputs.device)
        counts = torch.zeros_like(total)
        finite = torch.ones((), dtype=torch.bool, device=inputs.device)
        first = 0
        for scale, scale_outputs in zip(scales, outputs):
            patches = self._patches(inputs, scale, window)
            count = patches.shape[0]
            scale_keep, scale_weights = keep[first : first + count], weights[first : first + count]
            first += count
            resizing = [_resize_matrix(a, b, dtype, inputs.device) for a, b in zip(scale.size, shape)]
            corners = torch.tensor(scale.corners, device=inputs.device)
            for positions, crops in self._chunks(patches, scale_keep.any(dim=1)):
                rows = positions[:, None] * batch + torch.arange(batch, device=inputs.device)
                maps = self._patch_maps(ctx, target, crops, scale_outputs[rows.flatten()])
                maps = maps.to(dtype).reshape(len(positions), batch, *[window] * len(shape))
                finite = finite & torch.isfinite(maps).all()
                factor = (scale_weights[positions] * scale_keep[positions]).to(dtype)
                placed = _place(maps * factor.reshape(*factor.shape, *[1] * len(shape)), corners[positions], resizing)
                total, counts = self._pool(total, counts, placed, scale_keep[positions])
        if self.options["pool"] == "max":
            return total, finite
        return torch.where(counts > 0, total / counts.clamp(min=1), torch.zeros_like(total)), finite

    def _pool(self, total: Tensor, counts: Tensor, placed: Tensor, kept: Tensor) -> tuple[Tensor, Tensor]:
        if self.options["pool"] == "max":
            return torch.maximum(total, placed.amax(dim=0)), counts
        counted = (placed > self.options["theta"]) & kept.reshape(*kept.shape, *[1] * (placed.ndim - 2))
        return total + torch.where(counted, placed, torch.zeros_like(placed)).sum(dim=0), counts + counted.sum(dim=0)


def _place(maps: Tensor, corners: Tensor, resizing: list[Tensor]) -> Tensor:
    """``[P, B, *size]``: each ``[P, B, *window]`` map pasted at its corner of the scaled input, resized to the input.

    Along each axis, ``resizing[axis]`` (``[size, scaled size]``) restricted to the
    window's columns maps the window to the input: one batched matrix product per axis.
    """
    window = maps.shape[2]
    span = torch.arange(window, device=maps.device)
    dims = maps.ndim - 2
    for axis, matrix in enumerate(resizing):
        chosen = matrix[:, corners[:, axis, None] + span].permute(1, 2, 0)  # [P, window, size]
        moved = maps.movedim(2 + axis, -1)  # [P, B, ..., window]
        resized = moved @ chosen.reshape(chosen.shape[0], *[1] * (dims - 1), window, -1)
        maps = resized.movedim(-1, 2 + axis)
    return maps
