"""Sanity check by cascading model randomisation (Adebayo et al., NeurIPS 2018).

A map that explains the model must change when the model's weights are destroyed. The
layers are randomised one after the other from the output down (each step keeps the
earlier randomisations: a *cascade*); after each step the maps are recomputed for the
same inputs and classes and compared with the original maps by the Spearman rank
correlation and the structural similarity (SSIM).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.engine.capture import model_lock, model_state, register_owned_hook
from camscope.engine.explainer import Explanation, explain
from camscope.engine.method import CamMethod, get_method
from camscope.errors import CamscopeError
from camscope.metrics.common import MetricResult, clean_pass, prepare_maps
from camscope.metrics.registry import register_metric
from camscope.targets.base import FrozenTarget, as_target

__all__ = ["cascade_layers", "sanity_check", "spearman", "ssim"]


def _average_ranks(values: Tensor) -> Tensor:
    """Ranks 1..n per row, ties sharing their average rank (``scipy.stats.rankdata``)."""
    count = values.shape[1]
    order = values.argsort(dim=1, stable=True)
    ordered = values.gather(1, order)
    index = torch.arange(count, device=values.device).expand_as(ordered)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, index, 0).cummax(dim=1).values
    last = torch.where(ends, index, count).flip(1).cummin(dim=1).values.flip(1)
    average = (first + last).double() / 2 + 1
    return torch.empty_like(average).scatter_(1, order, average)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each pair of maps ``[B, ...]`` (average ranks for ties; NaN for a constant map)."""
    ra, rb = _average_ranks(a.flatten(1).double()), _average_ranks(b.flatten(1).double())
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    denominator = ra.norm(dim=1) * rb.norm(dim=1)
    rho = (ra * rb).sum(dim=1) / denominator.clamp(min=torch.finfo(torch.float64).tiny)
    return torch.where(denominator > 0, rho, torch.full_like(rho, float("nan"))).float()


def ssim(
    a: Tensor, b: Tensor, *, data_range: float = 1.0, win_size: int = 7, k1: float = 0.01, k2: float = 0.03
) -> Tensor:
    """Mean structural similarity of each pair of maps ``[B, H, W]``.

    The defaults of ``skimage.metrics.structural_similarity`` (uniform 7x7 window,
    sample covariance, ``K1 = 0.01``, ``K2 = 0.03``, the border of half a window left
    out of the mean), with ``data_range = 1`` for maps in [0, 1].
    """
    if min(a.shape[-2:]) < win_size:
        raise CamscopeError(f"SSIM needs maps of at least {win_size} x {win_size} pixels, got {list(a.shape[-2:])}")
    x, y = a.double()[:, None], b.double()[:, None]
    mean = lambda t: F.avg_pool2d(t, win_size, stride=1)  # noqa: E731 - the windows inside the image
    ux, uy = mean(x), mean(y)
    scale = win_size**2 / (win_size**2 - 1)
    vx = scale * (mean(x * x) - ux * ux)
    vy = scale * (mean(y * y) - uy * uy)
    vxy = scale * (mean(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1).float()


def cascade_layers(model: nn.Module, inputs: Tensor, group: str = "leaf") -> list[str]:
    """Names of the layers to randomise, from the output down (reverse order of execution).

    ``group="leaf"``: every module with parameters of its own (convolutions, linear and
    normalisation layers); ``"block"``: the model's direct children that hold parameters.
    """
    if group == "leaf":
        candidates = {name: m for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}
    elif group == "block":
        candidates = {name: m for name, m in model.named_children() if any(True for _ in m.parameters())}
    else:
        raise CamscopeError(f"group must be 'leaf' or 'block', got {group!r}")
    if not candidates:
        raise CamscopeError("the model has no layers with parameters to randomise")
    seen: list[str] = []
    with model_lock(model):
        handles = [
            register_owned_hook(module, lambda _m, _i, _o, name=name: seen.append(name) if name not in seen else None)
            for name, module in candidates.items()
        ]
        try:
            with model_state(model, True), torch.no_grad():
                model(inputs[:1])
        finally:
            for handle in handles:
                handle.remove()
    unused = [name for name in candidates if name not in seen]
    return list(reversed(seen)) + unused


def _randomise(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw each own parameter from a Gaussian with the original tensor's mean and standard deviation."""
    with torch.no_grad():
        for parameter in module.parameters(recurse=True):
            mean = parameter.detach().double().mean()
            std = (
                parameter.detach().double().std() if parameter.numel() > 1 else parameter.detach().double().abs().mean()
            )
            std = std if float(std) > 0 else torch.tensor(1.0, dtype=torch.float64)
            draw = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.copy_((mean + std * draw).to(parameter))


MethodSpec = str | CamMethod | Callable[[nn.Module, Tensor, Any], Tensor]


@register_metric("sanity_check", kind="explainer", aliases=("sanity",))
def sanity_check(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation | None = None,
    target: Any = None,
    *,
    method: MethodSpec = "gradcam",
    layer: Any = None,
    options: dict[str, Any] | None = None,
    layers: Sequence[str] | None = None,
    group: str = "leaf",
    seed: int = 0,
    threshold: float = 0.5,
) -> MetricResult:
    r"""Cascading randomisation sanity check (Adebayo et al. 2018) with a verdict.

    The model is copied (the original is never modified). Layers are randomised from
    the top down, cumulatively; each parameter tensor is redrawn from a Gaussian with
    its original mean and standard deviation (a scale-preserving re-initialisation, so
    activations neither vanish nor explode; the paper redraws from a truncated normal;
    buffers such as BatchNorm statistics are kept). After each step the maps are
    recomputed with the same method, layer and *classes* (the target resolved on the
    original model), and compared with the original maps:

    * Spearman rank correlation of the maps (average ranks for ties);
    * SSIM (skimage's defaults, ``data_range = 1``) of the maps scaled to [0, 1].

    Verdict (a camscope convention; the paper judges the curves by eye): a sample
    *passes* when, after the whole cascade, its Spearman correlation is below
    ``threshold``; ``params["verdict"]`` is ``"pass"`` when the batch mean is, and
    ``params["first_below"]`` names the first layer whose randomisation brought the
    mean below it.

    Args:
        model: the network.
        inputs: ``[B, C, H, W]`` (maps of at least 7 x 7 pixels are needed for SSIM).
        maps: the original maps (computed with ``method`` when None).
        target: what is explained (see :mod:`camscope.metrics`).
        method: a camscope method name or instance (run at ``layer`` with ``options``),
            or ``callable(model, inputs, target) -> maps [B, H, W]``.
        layer: the layer of the method (None: camscope's default).
        options: options of the method.
        layers: the cascade, top first, by module name (default: :func:`cascade_layers`).
        group: granularity of the default cascade, ``"leaf"`` or ``"block"``.
        seed: seed of the randomisation.
        threshold: Spearman correlation below which a map counts as changed.

    Returns:
        :class:`MetricResult` with ``spearman`` and ``ssim`` after the full cascade
        (lower is better), ``passed`` (1.0 or 0.0), and curves ``spearman`` and ``ssim``
        ``[B, L]`` over the cascade steps 1..L (``params["layers"]`` names them).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> r = camscope.metrics.sanity_check(model, torch.randn(2, 3, 64, 64), method="gradcam", layer="layer4", group="block")
        >>> r.params["layers"][:2], r.curves["spearman"].shape
        (['fc', 'layer4'], torch.Size([2, 7]))
    """
    if isinstance(method, (str, CamMethod)) and not (target is None and isinstance(maps, Explanation)):
        # Methods that change what is explained (finer-*: the class against similar classes)
        # are resolved on the original model too, so every copy compares the same classes.
        instance = method if isinstance(method, CamMethod) else get_method(method, **dict(options or {}))
        target = instance.prepare_target(as_target(target), model)
    _, resolved = clean_pass(model, inputs, target, maps)
    frozen = resolved if isinstance(resolved, FrozenTarget) else FrozenTarget(resolved)
    options = dict(options or {})

    def compute(network: nn.Module) -> Tensor:
        if callable(method) and not isinstance(method, (str, CamMethod)):
            result = method(network, inputs, frozen)
            return prepare_maps(result, inputs.shape[2:], normalize=True)
        explanation = explain(network, inputs, method, layer=layer, target=frozen, **options)
        return explanation.maps.detach()

    original = (
        compute(model) if maps is None else prepare_maps(maps, inputs.shape[2:], normalize=True).to(inputs.device)
    )
    names = list(layers) if layers is not None else cascade_layers(model, inputs, group)
    copy_ = copy.deepcopy(model)
    modules = dict(copy_.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise CamscopeError(
            f"no such layers to randomise: {missing}; see camscope.metrics.cascade_layers(model, inputs)"
        )
    generator = torch.Generator().manual_seed(int(seed))
    rho, sim = [], []
    for name in names:
        _randomise(modules[name], generator)
        randomised = compute(copy_)
        rho.append(spearman(original, randomised))
        sim.append(ssim(original, randomised))
    rho_curve, ssim_curve = torch.stack(rho, dim=1), torch.stack(sim, dim=1)
    mean_curve = rho_curve.nanmean(dim=0)
    below = [i for i, value in enumerate(mean_curve.tolist()) if value < threshold]
    final = rho_curve[:, -1]
    steps = torch.arange(1, len(names) + 1, dtype=torch.float32)
    return MetricResult(
        name="sanity_check",
        values={"spearman": final, "ssim": ssim_curve[:, -1], "passed": (final < threshold).float()},
        curves={"spearman": rho_curve, "ssim": ssim_curve},
        steps={"spearman": steps, "ssim": steps},
        headline="spearman",
        higher_is_better={"spearman": False, "ssim": False, "passed": True},
        params={
            "layers": names,
            "method": method
            if isinstance(method, str)
            else getattr(method, "name", getattr(method, "__name__", "custom")),
            "seed": seed,
            "threshold": threshold,
            "verdict": "pass" if float(final.nanmean()) < threshold else "fail",
            "first_below": names[below[0]] if below else None,
        },
    )
