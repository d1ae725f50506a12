"""FullGrad: the full-gradient saliency map of a network with biases.

Srinivas & Fleuret, "Full-Gradient Representation for Neural Network
Visualization", NeurIPS 2019, arXiv:1905.00780. For a network of ReLUs and
layers with biases (convolutions, BatchNorm in eval mode, linear layers), the
output decomposes exactly into an input term and one term per bias
("completeness"):

``f(x) = sum(x * df/dx) + sum_l sum(b_l * df/dz_l)``

where ``z_l`` is the output of layer ``l`` and ``b_l`` its bias, broadcast over
``z_l``'s positions. The FullGrad map (the paper's Eq. 5) aggregates the terms
that have a spatial extent:

``S(x) = psi(x * df/dx) + sum_l sum_{c in channels of l} psi(b_{l,c} * df/dz_{l,c})``

with ``psi = bilinear upsampling to the input o rescaling to [0, 1] o abs``,
applied to each channel of each term.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.backward import input_gradient
from camscope.engine.maps import upsample
from camscope.engine.method import CamContext, CamMethod, CamResult, register_method
from camscope.errors import CamscopeError
from camscope.locking import register_owned_hook

__all__ = ["FullGrad", "bias_layers", "layer_bias", "rescaled_channels"]


def _frozen_batch_norm() -> tuple[type[nn.Module], ...]:
    """torchvision's FrozenBatchNorm2d (detection backbones), when torchvision is installed."""
    try:
        from torchvision.ops.misc import FrozenBatchNorm2d
    except ImportError:  # pragma: no cover - torchvision is a dependency of the model zoo
        return ()
    return (FrozenBatchNorm2d,)


# The public classes of torch's convolutions and BatchNorms (their lazy forms become these once built).
_CONVOLUTIONS: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_NORMS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    *_frozen_batch_norm(),
)


def bias_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose bias FullGrad attributes: convolutions with a bias and BatchNorm layers.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
        >>> [name for name, _ in bias_layers(model)]
        ['1', '3']
    """
    return [
        (name, module)
        for name, module in model.named_modules()
        if (isinstance(module, _CONVOLUTIONS) and module.bias is not None) or isinstance(module, _NORMS)
    ]


def layer_bias(name: str, module: nn.Module) -> Tensor:
    """The bias ``[K]`` a layer adds to each output channel.

    A convolution's ``bias``; a BatchNorm's, as an affine map in eval mode,
    ``beta - mu * gamma / sqrt(var + eps)`` (``gamma = 1``, ``beta = 0`` without
    affine parameters), the bias the authors' code uses.

    Raises:
        CamscopeError: for a BatchNorm that normalises with the batch's statistics
            (training mode, or no running statistics): it is not affine, so it has no bias.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> norm = nn.BatchNorm1d(2, eps=0.0).eval()
        >>> norm.load_state_dict({**norm.state_dict(), "running_mean": torch.ones(2), "running_var": torch.full((2,), 4.0),
        ...                       "bias": torch.full((2,), 3.0)})
        <All keys matched successfully>
        >>> layer_bias("norm", norm).tolist()
        [2.5, 2.5]
    """
    if isinstance(module, _CONVOLUTIONS):
        assert isinstance(module.bias, Tensor)
        return module.bias.detach()
    mean, var = getattr(module, "running_mean", None), getattr(module, "running_var", None)
    if getattr(module, "training", False) or not isinstance(mean, Tensor) or not isinstance(var, Tensor):
        raise CamscopeError(
            f"FullGrad needs the BatchNorm layer {name!r} to use its running statistics (an affine map with a "
            "bias): explain in eval mode (eval_mode=True, the default), with BatchNorm layers that track them"
        )
    eps = float(getattr(module, "eps", 1e-5))
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    scale = (var.detach() + eps).rsqrt()
    if isinstance(weight, Tensor):
        scale = scale * weight.detach()
    shift = -mean.detach() * scale
    return shift + bias.detach() if isinstance(bias, Tensor) else shift


def rescaled_channels(term: Tensor) -> Tensor:
    """``sum_c rescale(abs(term_c))``: each channel's absolute values min-max scaled to [0, 1], summed over channels.

    ``term`` is ``[B, K, *spatial]``; a channel whose values are all equal contributes 0
    (no division by zero, no epsilon).

    Example:
        >>> import torch
        >>> rescaled_channels(torch.tensor([[[[-2.0, 1.0, 0.0]], [[5.0, 5.0, 5.0]]]])).tolist()
        [[[1.0, 0.5, 0.0]]]
    """
    magnitude = term.abs()
    low, high = torch.aminmax(magnitude.flatten(2), dim=2)
    span = high - low
    shape = (*span.shape, *([1] * (term.ndim - 2)))
    safe = torch.where(span > 0, span, torch.ones_like(span)).reshape(shape)
    scaled = torch.where(span.reshape(shape) > 0, (magnitude - low.reshape(shape)) / safe, torch.zeros_like(magnitude))
    return scaled.sum(dim=1)


class _Terms:
    """The terms of one FullGrad pass: their psi-maps summed on the input's grid, and each term's plain sum."""

    def __init__(self, size: tuple[int, ...], dtype: torch.dtype) -> None:
        self.size = size
        self.dtype = dtype
        self.maps: list[Tensor] = []
        self.sums: dict[int, Tensor] = {}

    def add(self, order: int, term: Tensor) -> None:
        term = term.to(self.dtype)
        self.maps.append(upsample(rescaled_channels(term), self.size))
        self.sums[order] = term.flatten(1).sum(dim=1)  # not finite if any value is not: checked once, at the end

    def bias_hook(self, order: int, bias: Tensor) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            self.add(order, grad * bias.to(grad.dtype).reshape(1, -1, *([1] * (grad.ndim - 2))))

        return hook


@contextmanager
def _bias_gradients(model: nn.Module, terms: _Terms, spatial: int) -> Iterator[None]:
    """Forward hooks that ask, for each call of a bias layer with a spatial output, for ``df/dz`` times its bias.

    The gradient arrives through a tensor hook on the layer's output, registered
    before any later in-place operation changes it (``ReLU(inplace=True)``): autograd
    then gives the gradient with respect to the output as the layer produced it.
    """
    calls = [0]

    def forward_hook(name: str, module: nn.Module) -> Callable[..., None]:
        def hook(_m: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor) and output.requires_grad and output.ndim == spatial + 2:
                calls[0] += 1
                output.register_hook(terms.bias_hook(calls[0], layer_bias(name, module)))

        return hook

    handles = [register_owned_hook(module, forward_hook(name, module)) for name, module in bias_layers(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@register_method
class FullGrad(CamMethod):
    r"""FullGrad (Srinivas & Fleuret 2019): input-gradient and bias-gradient terms of every layer, rescaled and summed.

    Paper: "Full-Gradient Representation for Neural Network Visualization",
    arXiv:1905.00780. ``S(x) = psi(x * dy/dx) + sum_l sum_c psi(b_{l,c} * dy/dz_{l,c})``
    with ``psi = upsample o rescale to [0, 1] o abs`` per channel (Eq. 5); ``y`` is
    the target's score, ``z_l`` the output of a convolution with a bias or of a
    BatchNorm layer (bias ``beta - mu gamma / sqrt(var + eps)``), over every such
    layer of the model with a spatial output (1-D, 2-D or 3-D).

    FullGrad is not a CAM of one layer: ``layer=`` does not change its map. The
    engine still records that layer (the default layer when none is given) for
    ``Explanation.activations`` and ``Explanation.layer``; ``raw`` is the map at
    the input's resolution (non-negative), and ``extras["term_sums"]`` ``[B, 1 + L]``
    holds the plain sum of each term before ``psi`` (the input term first, then
    each bias layer in the order of the forward pass): with the biases of the
    non-spatial layers (the linear head), they add up to the score (completeness).

    Choices the paper leaves open: each colour channel of the input term is
    rescaled on its own, like the channels of the bias terms (pytorch-grad-cam
    1.5.7 does the same; the authors' code rescales all channels of a term together,
    unlike Eq. 5); upsampling is bilinear with ``align_corners=False`` (the
    authors' code: ``True``); a constant channel contributes 0 (pytorch-grad-cam
    divides by ``max + 1e-7``). Rescaling each channel on its own makes a bias's
    value irrelevant to the map unless it is 0 (``|b_c g_c|`` rescales like
    ``|g_c|``); it matters for ``term_sums``. Unlike pytorch-grad-cam, every
    convolution and BatchNorm type counts (the peer: ``Conv2d`` and ``BatchNorm2d``
    with affine parameters only: 1-D and 3-D models, and a BatchNorm without
    affine parameters, whose bias ``-mu / sqrt(var + eps)`` is not 0, lose terms),
    each bias is paired with its own layer's gradient (the peer pairs the modules'
    registration order with the order the gradients arrive), a shared module
    counts once per call, and a BatchNorm without running statistics is refused
    rather than given a wrong bias.

    Comparisons: the score is any target's, so Finer (``y_c - gamma y_d``) gives the
    FullGrad of the comparison score (``psi`` is not linear: it is not a difference of
    two maps); there are no channel weights, so no DiffCAM weights. One forward and one
    backward pass to the input besides the engine's forward pass.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> e = camscope.explain(model, torch.randn(2, 3, 64, 64), method="fullgrad", target=3)
        >>> e.raw.shape, e.maps.shape, e.extras["term_sums"].shape
        (torch.Size([2, 64, 64]), torch.Size([2, 64, 64]), torch.Size([2, 21]))
    """

    name = "fullgrad"
    channel_weights = False
    display_name = "FullGrad"
    uses_gradients = False

    def __call__(self, ctx: CamContext) -> CamResult:
        inputs = ctx.inputs.detach().clone().requires_grad_(True)
        spatial = inputs.ndim - 2
        terms = _Terms(tuple(inputs.shape[2:]), torch.promote_types(inputs.dtype, torch.float32))
        with _bias_gradients(ctx.model, terms, spatial):
            outputs = ctx.forward(inputs.clone(), grad=True)  # a copy: the model may change its input in place
            gradient = input_gradient(ctx.target(outputs), inputs, "FullGrad")
        terms.add(0, gradient * inputs.detach())
        saliency = torch.stack(terms.maps).sum(dim=0)
        sums = torch.stack([terms.sums[order] for order in sorted(terms.sums)], dim=1)
        if not bool(torch.isfinite(sums).all()):  # a rescaled channel hides NaN: the sums show it
            raise CamscopeError(
                "the FullGrad map has NaN or infinite terms: the model's scores or gradients are not finite for these "
                "inputs (check the model on them, e.g. a division by zero or an overflow; a float16 model may need "
                "float32)"
            )
        return CamResult(raw=saliency.to(inputs.dtype), extras={"term_sums": sums.to(inputs.dtype)})
