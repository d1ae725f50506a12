"""Faithfulness by perturbation: deletion and insertion (RISE), average drop and increase in
confidence (Grad-CAM++), grad-cam's confidence change and absolute drop on the explanation map,
and Finer-CAM's relative confidence drop.

All metrics run the model on perturbed copies of the batch in chunks of ``batch_size``
images (``"auto"``: the model's fastest, :mod:`camscope.metrics.batching`), on the inputs'
device, with the model in eval mode and autograd off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.explainer import Explanation
from camscope.errors import CamscopeError
from camscope.metrics.batching import BatchSize
from camscope.metrics.common import (
    MetricResult,
    SubstrateSpec,
    check_fractions,
    clean_pass,
    make_scorer,
    pixel_count,
    prepare_maps,
    rank_pixels,
    score_perturbed,
    substrate,
)
from camscope.metrics.registry import register_metric
from camscope.metrics.removal import RemovalSteps
from camscope.targets.base import Target

__all__ = [
    "average_drop",
    "confidence_change",
    "deletion",
    "drop_in_confidence",
    "increase_in_confidence",
    "insertion",
    "relative_drop",
]

ScoreSpec = str | Callable[[Tensor, Target], Tensor]


def _spec_name(spec: Any) -> str:
    """How a result's params record a score, substrate or fill: its name, or ``"custom"`` for a callable or tensor."""
    return spec if isinstance(spec, str) else "custom"


def _replace_top(replacement: Tensor, images: Tensor, ranks: Tensor, counts: Tensor, shape: Sequence[int]) -> Tensor:
    """For each count ``k`` of ``counts`` ``[t]``: the images with their ``k`` top-ranked pixels from ``replacement``.

    ``images`` and ``replacement`` are ``[n, C, H*W]`` and ``ranks`` ``[n, H*W]`` (0 = top);
    the result is ``[t * n, *shape]``, ``shape`` an image's ``(C, H, W)``.
    """
    top = ranks[None, :, None, :] < counts[:, None, None, None]  # [t, n, 1, H*W]
    return torch.where(top, replacement, images).reshape(-1, *shape)


def _causal(
    kind: str,
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any,
    step: int | None,
    substrate_spec: SubstrateSpec,
    score: ScoreSpec,
    batch_size: BatchSize,
    blur_kernel: int,
    blur_sigma: float,
) -> MetricResult:
    logits, resolved = clean_pass(model, inputs, target, maps)
    maps = prepare_maps(maps, inputs.shape[2:]).to(inputs.device)
    scorer = make_scorer(resolved, score)
    pixels = maps[0].numel()
    if step is None:
        step = inputs.shape[-1]
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise CamscopeError(f"step must be a positive number of pixels, got {step!r}")
    counts = torch.tensor([*range(0, pixels, step), pixels], device=inputs.device)
    fractions = counts.double() / pixels
    ranks = rank_pixels(maps)  # 0 = most salient
    base = substrate(inputs, substrate_spec, blur_kernel=blur_kernel, blur_sigma=blur_sigma)
    flat_inputs, flat_base = inputs.flatten(2), base.flatten(2)
    deleting = kind == "deletion"
    # Deletion starts from the clean image, insertion ends with it: that point needs no pass.
    perturbed = counts[1:] if deleting else counts[:-1]

    def make_inputs(t: Tensor, rows: slice) -> Tensor:
        chosen = (flat_base[rows], flat_inputs[rows]) if deleting else (flat_inputs[rows], flat_base[rows])
        return _replace_top(*chosen, ranks[rows], perturbed[t], inputs.shape[1:])

    scores = score_perturbed(model, scorer, logits, make_inputs, len(perturbed), batch_size, like=inputs).T  # [B, T-1]
    clean = scorer(logits).float()[:, None]
    curve = torch.cat([clean, scores], dim=1) if deleting else torch.cat([scores, clean], dim=1)
    auc = torch.trapezoid(curve.double(), fractions.to(curve.device), dim=1).float()
    return MetricResult(
        name=kind,
        values={"auc": auc},
        curves={"curve": curve},
        steps={"curve": fractions.float().cpu()},
        headline="auc",
        higher_is_better={"auc": not deleting},
        params={
            "step": step,
            "substrate": _spec_name(substrate_spec),
            "score": _spec_name(score),
            "blur_kernel": blur_kernel,
            "blur_sigma": blur_sigma,
        },
        auc_of_mean={"auc_of_mean_curve": "curve"},
    )


@register_metric("deletion", kind="model")
def deletion(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any = None,
    *,
    step: int | None = None,
    substrate: SubstrateSpec = "zero",
    score: ScoreSpec = "probability",
    batch_size: BatchSize = "auto",
    blur_kernel: int = 11,
    blur_sigma: float = 5.0,
) -> MetricResult:
    r"""Deletion (Petsiuk et al., RISE, BMVC 2018): remove the most salient pixels first.

    Pixels are ranked by the map (ties in raster order); after each ``step`` pixels
    the removed ones are replaced by the substrate and the target's probability is
    recorded. The score is the area under this curve against the fraction removed,
    by the trapezoid rule (lower is better):

    .. math::
        \mathrm{AUC} = \sum_t \tfrac{1}{2}(s_t + s_{t+1})(f_{t+1} - f_t),\quad f_t = \tfrac{\min(t \cdot step,\ HW)}{HW}

    Protocol (RISE's defaults): substrate zero (for normalised inputs, the dataset
    mean colour), ``step`` = the image width (224 pixels per step at 224 px, i.e.
    224 steps), softmax probability of the target class. The last step may be
    shorter; abscissae are the actual fractions, as in torchcam 0.5.0's
    ``DeletionInsertionMetric`` (RISE's code assumes equal steps; both agree when
    ``step`` divides ``H*W``).

    Args:
        model: the classifier.
        inputs: ``[B, C, H, W]`` on the model's device.
        maps: ``[B, H, W]`` maps (or an Explanation); resized to the inputs.
        target: what is scored (see :mod:`camscope.metrics`).
        step: pixels removed per step; None: the image width.
        substrate: ``"zero"``, ``"blur"`` (RISE's Gaussian blur, ``blur_kernel`` 11,
            ``blur_sigma`` 5), ``"mean"``, a tensor or ``callable(inputs)``.
        score: ``"probability"``, ``"logit"`` or ``callable(outputs, target)``.
        batch_size: perturbed images per forward pass, or ``"auto"`` (the model's fastest,
            :mod:`camscope.metrics.batching`).
        blur_kernel: size of RISE's blur kernel.
        blur_sigma: its standard deviation.

    Returns:
        :class:`MetricResult` with ``auc`` per sample, the curve ``curve`` ``[B, T]``
        over ``steps["curve"]`` (fractions removed), and in :meth:`~MetricResult.summary`
        also ``auc_of_mean_curve`` (RISE's dataset number; equal to the mean AUC
        because all images share the abscissae).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> x = torch.randn(2, 3, 32, 32)
        >>> e = camscope.explain(model, x, "gradcam", layer="layer3")
        >>> r = camscope.metrics.deletion(model, x, e, step=64)
        >>> r["auc"].shape, r.curves["curve"].shape
        (torch.Size([2]), torch.Size([2, 17]))
    """
    return _causal("deletion", model, inputs, maps, target, step, substrate, score, batch_size, blur_kernel, blur_sigma)


@register_metric("insertion", kind="model")
def insertion(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any = None,
    *,
    step: int | None = None,
    substrate: SubstrateSpec = "blur",
    score: ScoreSpec = "probability",
    batch_size: BatchSize = "auto",
    blur_kernel: int = 11,
    blur_sigma: float = 5.0,
) -> MetricResult:
    """Insertion (RISE): start from the substrate and insert the most salient pixels first.

    The mirror of :func:`deletion` (higher is better); RISE starts from a blurred
    copy of the image (kernel 11, sigma 5, RISE's kernel construction and zero padding),
    which is the default substrate here. Arguments and result as in :func:`deletion`.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> x = torch.randn(1, 3, 32, 32)
        >>> r = camscope.metrics.insertion(model, x, torch.rand(1, 32, 32), step=128)
        >>> r.curves["curve"].shape
        torch.Size([1, 9])
    """
    return _causal(
        "insertion", model, inputs, maps, target, step, substrate, score, batch_size, blur_kernel, blur_sigma
    )


def _explanation_map_pass(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any,
    score: ScoreSpec,
    substrate_spec: SubstrateSpec,
    batch_size: BatchSize,
    normalize: bool = True,
) -> tuple[Tensor, Tensor]:
    """The clean scores ``Y`` and the scores ``O`` of the explanation maps ``L x + (1 - L) b``."""
    logits, resolved = clean_pass(model, inputs, target, maps)
    maps = prepare_maps(maps, inputs.shape[2:], normalize=normalize).to(inputs.device)
    scorer = make_scorer(resolved, score)
    weight = maps[:, None]
    if isinstance(substrate_spec, str) and substrate_spec == "zero":
        masked = weight * inputs
    else:
        masked = weight * inputs + (1 - weight) * substrate(inputs, substrate_spec)
    scores = score_perturbed(model, scorer, logits, lambda _, rows: masked[rows], 1, batch_size, like=inputs)[0]
    return scorer(logits).float(), scores


def _drop_result(name: str, clean: Tensor, masked: Tensor, params: dict[str, Any]) -> MetricResult:
    drop = (clean - masked).clamp(min=0) / clean.clamp(min=torch.finfo(torch.float32).tiny)
    increase = (masked > clean).float()
    return MetricResult(
        name=name,
        values={"drop": drop, "increase": increase, "score": clean, "masked_score": masked},
        headline="drop" if name == "average_drop" else "increase",
        higher_is_better={"drop": False, "increase": True, "score": True, "masked_score": True},
        params=params,
    )


@register_metric("average_drop", kind="model", aliases=("ad", "avg_drop"))
def average_drop(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any = None,
    *,
    score: ScoreSpec = "probability",
    substrate: SubstrateSpec = "zero",
    batch_size: BatchSize = "auto",
) -> MetricResult:
    r"""Average drop (Chattopadhyay et al., Grad-CAM++, WACV 2018).

    The model sees the *explanation map* ``E = L * x`` (the map, ReLU'd and min-max
    scaled to [0, 1] per image, times the input) and the relative drop of the target's
    confidence is recorded (lower is better):

    .. math::
        \mathrm{drop}_i = \frac{\max(0,\ Y_i^c - O_i^c)}{Y_i^c}

    The paper reports ``100 * mean(drop)`` in percent; values here are fractions.
    Peers: torchcam 0.5.0's ``ClassificationMetric`` computes the same (with
    ``Y + 1e-7`` in the denominator); grad-cam 1.5.7's ``DropInConfidence`` returns
    the absolute drop ``max(0, Y - O)``, *not* divided by ``Y`` (:func:`drop_in_confidence`).

    Args:
        model: the classifier.
        inputs: ``[B, C, H, W]`` (normalised, as the model takes them).
        maps: ``[B, H, W]`` maps or an Explanation.
        target: what is scored (see :mod:`camscope.metrics`).
        score: ``"probability"`` (softmax, the paper's confidence), ``"logit"`` or a callable.
        substrate: what the map fades to: ``"zero"`` (the paper: ``E = L * x``), or
            ``"blur"``/``"mean"``/a tensor ``b`` for ``E = L x + (1 - L) b``.
        batch_size: images per forward pass, or ``"auto"`` (:mod:`camscope.metrics.batching`).

    Returns:
        :class:`MetricResult` with ``drop`` (headline), ``increase`` (see
        :func:`increase_in_confidence`), ``score`` (``Y``) and ``masked_score`` (``O``).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> x = torch.randn(2, 3, 32, 32)
        >>> r = camscope.metrics.average_drop(model, x, torch.rand(2, 32, 32))
        >>> bool(((r["drop"] >= 0) & (r["drop"] <= 1)).all())
        True
    """
    clean, masked = _explanation_map_pass(model, inputs, maps, target, score, substrate, batch_size)
    return _drop_result("average_drop", clean, masked, _map_params(score, substrate))


@register_metric("increase_in_confidence", kind="model", aliases=("ic",))
def increase_in_confidence(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any = None,
    *,
    score: ScoreSpec = "probability",
    substrate: SubstrateSpec = "zero",
    batch_size: BatchSize = "auto",
) -> MetricResult:
    r"""Increase in confidence (Grad-CAM++): 1 where the explanation map alone scores higher.

    .. math::
        \mathrm{increase}_i = \mathbb{1}[Y_i^c < O_i^c]

    with ``O`` the score on ``E = L * x`` as in :func:`average_drop` (same arguments and
    result; the headline is ``increase``, higher is better; the paper reports the
    percentage of images). grad-cam 1.5.7's ``IncreaseInConfidence`` and torchcam's
    ``ClassificationMetric`` agree with this definition.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> r = camscope.metrics.increase_in_confidence(model, torch.randn(2, 3, 32, 32), torch.rand(2, 32, 32))
        >>> sorted(set(r["increase"].tolist())) <= [0.0, 1.0]
        True
    """
    clean, masked = _explanation_map_pass(model, inputs, maps, target, score, substrate, batch_size)
    return _drop_result("increase_in_confidence", clean, masked, _map_params(score, substrate))


def _change_result(name: str, clean: Tensor, masked: Tensor, params: dict[str, Any]) -> MetricResult:
    change = masked - clean
    return MetricResult(
        name=name,
        values={"change": change, "drop": (-change).clamp(min=0), "score": clean, "masked_score": masked},
        headline="change" if name == "confidence_change" else "drop",
        higher_is_better={"change": True, "drop": False, "score": True, "masked_score": True},
        params=params,
    )


@register_metric("confidence_change", kind="model", aliases=("cam_mult_image",))
def confidence_change(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any = None,
    *,
    score: ScoreSpec = "probability",
    substrate: SubstrateSpec = "zero",
    normalize: bool = True,
    batch_size: BatchSize = "auto",
) -> MetricResult:
    r"""Confidence change on the explanation map: the score of ``L * x`` minus the score of ``x``.

    .. math::
        \mathrm{change}_i = O_i^c - Y_i^c,\qquad \mathrm{drop}_i = \max(0,\ Y_i^c - O_i^c)

    with ``Y`` the target's score on the image and ``O`` its score on the explanation map
    ``E = L * x`` (as :func:`average_drop`: the map ReLU'd and min-max scaled per image).
    Higher ``change`` is better: the map kept what the model needs.

    This is grad-cam 1.5.7's ``CamMultImageConfidenceChange`` (``change``) and its
    ``DropInConfidence`` (``drop``, the *absolute* drop; :func:`average_drop` divides it by
    ``Y`` as the Grad-CAM++ paper does; :func:`drop_in_confidence` heads with it); its
    ``IncreaseInConfidence`` is :func:`increase_in_confidence`. grad-cam multiplies by the
    map as given (its maps are already scaled to [0, 1]): ``normalize=False`` does too.

    Args:
        model: the classifier.
        inputs: ``[B, C, H, W]`` (normalised, as the model takes them).
        maps: ``[B, H, W]`` maps or an Explanation.
        target: what is scored (see :mod:`camscope.metrics`).
        score: ``"probability"`` (softmax; grad-cam's ``ClassifierOutputSoftmaxTarget``),
            ``"logit"`` (its ``ClassifierOutputTarget``) or a callable.
        substrate: what the map fades to (as in :func:`average_drop`).
        normalize: ReLU and min-max scale the maps per image (True), or use them as given.
        batch_size: images per forward pass, or ``"auto"`` (:mod:`camscope.metrics.batching`).

    Returns:
        :class:`MetricResult` with ``change`` (headline), ``drop``, ``score`` (``Y``) and
        ``masked_score`` (``O``).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> r = camscope.metrics.confidence_change(model, torch.randn(2, 3, 32, 32), torch.rand(2, 32, 32))
        >>> torch.allclose(r["change"], r["masked_score"] - r["score"]), bool((r["drop"] >= 0).all())
        (True, True)
    """
    clean, masked = _explanation_map_pass(model, inputs, maps, target, score, substrate, batch_size, normalize)
    return _change_result("confidence_change", clean, masked, _map_params(score, substrate, normalize=normalize))


@register_metric("drop_in_confidence", kind="model")
def drop_in_confidence(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any = None,
    *,
    score: ScoreSpec = "probability",
    substrate: SubstrateSpec = "zero",
    normalize: bool = True,
    batch_size: BatchSize = "auto",
) -> MetricResult:
    r"""Absolute drop in confidence on the explanation map (grad-cam 1.5.7's ``DropInConfidence``).

    .. math::
        \mathrm{drop}_i = \max(0,\ Y_i^c - O_i^c)

    lower is better; :func:`confidence_change`'s result with ``drop`` as its headline (same
    arguments). Not divided by ``Y``: :func:`average_drop` is the paper's relative drop.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> r = camscope.metrics.drop_in_confidence(model, torch.randn(2, 3, 32, 32), torch.rand(2, 32, 32))
        >>> r.headline, torch.equal(r["drop"], (r["score"] - r["masked_score"]).clamp(min=0))
        ('drop', True)
    """
    clean, masked = _explanation_map_pass(model, inputs, maps, target, score, substrate, batch_size, normalize)
    return _change_result("drop_in_confidence", clean, masked, _map_params(score, substrate, normalize=normalize))


def _map_params(score: ScoreSpec, substrate_spec: SubstrateSpec, **extra: Any) -> dict[str, Any]:
    """The params of the explanation-map metrics: the score's and the substrate's names, then ``extra``."""
    return {"score": _spec_name(score), "substrate": _spec_name(substrate_spec), **extra}


@register_metric("relative_drop", kind="model", aliases=("rd",))
def relative_drop(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any = None,
    *,
    fractions: Sequence[float] = (0.05, 0.1),
    versus: Any = None,
    fill: SubstrateSpec | str = "zero",
    noise: float = 0.01,
    seed: int = 0,
    batch_size: BatchSize = "auto",
) -> MetricResult:
    r"""Relative confidence drop RD@p of Finer-CAM (Zhang et al. 2025, Eq. 10).

    Mask the ``floor(p * H * W)`` most activated pixels and compare the drop of the
    target class's probability with the drop of the most similar class's:

    .. math::
        \mathrm{RD} = (p^c - p^c_\star) - (p^d - p^d_\star)

    where ``p`` are softmax probabilities before and ``p_star`` after masking. Higher is
    better: the masked pixels were evidence for ``c`` rather than for ``d``. The paper
    reports RD@0.05 and RD@0.1 (the defaults).

    Choices the paper leaves open, and the alternatives offered:
        * ``d``: by default the class with the highest clean logit other than ``c``
          (the 2nd predicted class when ``c`` is the predicted one, as in the paper);
          ``versus`` gives one class for all samples or one per sample.
        * How masked pixels are filled (``fill``): ``"zero"`` (default: zeros of the
          normalised input, i.e. the dataset mean colour, as deletion's substrate),
          ``"blur"`` (RISE's blur), ``"mean"`` (each image's channel means), ``"road"``
          (ROAD's noisy linear imputation, ``noise``, seeded by ``seed`` as in
          :func:`~camscope.metrics.road`), a tensor, or
          ``callable(inputs)``.
        * Ties in the map are broken in raster order.

    Args:
        model: the classifier (its outputs are class logits).
        inputs: ``[B, C, H, W]``.
        maps: ``[B, H, W]`` maps or an Explanation.
        target: the explained class ``c`` (see :mod:`camscope.metrics`); a
            :class:`~camscope.targets.base.ClassDifference` explains its first class.
        fractions: the masked fractions ``p``.
        versus: the reference class ``d`` (None: the most similar class).
        fill: how masked pixels are filled.
        noise: noise of the ``"road"`` fill.
        seed: seed of the ``"road"`` fill.
        batch_size: images per forward pass, or ``"auto"`` (:mod:`camscope.metrics.batching`).

    Returns:
        :class:`MetricResult` with ``rd@p`` for each ``p`` (headline: the first),
        ``drop_target@p`` (``p^c - p^c_star``) and ``drop_versus@p``; the curve ``rd``
        ``[B, P]`` over ``fractions``.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> r = camscope.metrics.relative_drop(model, torch.randn(2, 3, 32, 32), torch.rand(2, 32, 32))
        >>> sorted(r.values)
        ['drop_target@0.05', 'drop_target@0.1', 'drop_versus@0.05', 'drop_versus@0.1', 'rd@0.05', 'rd@0.1']
    """
    values = check_fractions(fractions, "fractions")
    logits, resolved = clean_pass(model, inputs, target, maps)
    pair = _class_pair(logits, resolved, versus)  # [B, 2]: c and d
    maps = prepare_maps(maps, inputs.shape[2:]).to(inputs.device)
    pixels = maps[0].numel()
    ranks = rank_pixels(maps)
    counts = torch.tensor([pixel_count(pixels, p) for p in values], device=inputs.device)

    def scorer(outputs: Tensor) -> Tensor:
        return torch.softmax(outputs.float(), dim=1).gather(1, pair.to(outputs.device))

    road_fill = isinstance(fill, str) and fill == "road"
    flat_base = None if road_fill else substrate(inputs, fill).flatten(2)
    flat_inputs = inputs.flatten(2)
    imputed = RemovalSteps(inputs, ranks, [("morf", int(c)) for c in counts.tolist()], noise=noise, seed=seed)

    def make_inputs(t: Tensor, rows: slice) -> Tensor:
        if flat_base is None:
            return imputed(t, rows)
        return _replace_top(flat_base[rows], flat_inputs[rows], ranks[rows], counts[t], inputs.shape[1:])

    masked = score_perturbed(model, scorer, logits, make_inputs, len(values), batch_size, like=inputs)  # [P, B, 2]
    drops = scorer(logits)[None] - masked  # [P, B, 2]
    return _relative_drop_result(values, drops, fill, versus)


def _class_pair(logits: Tensor, resolved: Target, versus: Any) -> Tensor:
    """``[B, 2]``: the explained class ``c`` and the reference class ``d`` of every sample."""
    classes = resolved.classes()
    if classes is None:
        raise CamscopeError(f"relative_drop needs a class target (the explained class c), got {resolved!r}")
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise CamscopeError(f"relative_drop needs class logits [batch, classes >= 2], got {list(logits.shape)}")
    classes = classes.to(logits.device)
    if versus is None:
        others = logits.detach().clone().float()
        others.scatter_(1, classes[:, None], float("-inf"))
        return torch.stack([classes, others.argmax(dim=1)], dim=1)
    from camscope.targets.base import ClassTarget

    reference = ClassTarget(versus).resolve(logits).classes()
    if reference is None:
        raise CamscopeError(f"versus must name classes, got {versus!r}")
    reference = reference.to(logits.device)
    if bool((reference == classes).any()):
        raise CamscopeError("versus must differ from the explained class for every sample")
    return torch.stack([classes, reference], dim=1)


def _relative_drop_result(values: list[float], drops: Tensor, fill: Any, versus: Any) -> MetricResult:
    """RD@p and the two drops from ``drops`` ``[P, B, 2]`` (``p - p_star`` of ``c`` and ``d``)."""
    rd = drops[..., 0] - drops[..., 1]  # [P, B]
    out: dict[str, Tensor] = {}
    higher: dict[str, bool] = {}
    for i, p in enumerate(values):
        out[f"rd@{p:g}"] = rd[i]
        higher[f"rd@{p:g}"] = True
    for i, p in enumerate(values):
        out[f"drop_target@{p:g}"] = drops[i, :, 0]
        out[f"drop_versus@{p:g}"] = drops[i, :, 1]
        higher[f"drop_target@{p:g}"] = True
        higher[f"drop_versus@{p:g}"] = False
    return MetricResult(
        name="relative_drop",
        values=out,
        curves={"rd": rd.T.contiguous()},
        steps={"rd": torch.tensor(values)},
        headline=f"rd@{values[0]:g}",
        higher_is_better=higher,
        params={
            "fractions": values,
            "fill": _spec_name(fill),
            "versus": "most-similar" if versus is None else "given",
        },
    )
