"""Layer embeddings: one vector per input at one layer, from a forward hook that stops the pass there.

The embedding of an input at a layer with activations ``A`` is the spatial
mean ``z = mean_ij A(x)`` (``[K]``; for token layers the mean of the patch
tokens) or, with ``embedding="cls"``, the class token (token 0 of the layer's
output). DiffCAM and its reference banks compare inputs by these vectors.

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> embed(resnet18().eval(), torch.randn(2, 3, 64, 64), "layer4").shape
    torch.Size([2, 512])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.capture import (
    LayerSpec,
    default_layer,
    model_state,
    register_owned_hook,
    resolve_layers,
    to_channels_first,
    validate_inputs,
)
from camscope.errors import CamscopeError

__all__ = ["EMBEDDINGS", "LayerEmbedder", "check_embedding", "embed", "embedding_layer", "embedding_of"]

#: The embeddings a layer gives: the spatial (or patch-token) mean, or the class token.
EMBEDDINGS = ("mean", "cls")


class _StopForward(BaseException):
    """Ends a forward pass once the layer has run (a BaseException, so models' ``except Exception`` let it through)."""


def embedding_of(
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
    if grid.dtype in (torch.float16, torch.bfloat16):  # a half-precision sum over positions would round the mean
        return grid.float().mean(dim=tuple(range(2, grid.ndim)))
    return grid.mean(dim=tuple(range(2, grid.ndim)))


class LayerEmbedder:
    """A forward hook that turns a batch into embeddings at one layer (no autograd).

    With ``stop_early`` the forward pass ends once the layer has run (nothing
    after it is computed), from the second batch on: the first batch runs the
    whole model to check that the layer runs exactly once (a shared module,
    called twice in one pass, is refused as :func:`camscope.explain` refuses
    it). In a full pass the layer passes a clone of its output downstream, so
    in-place operations after it (``ReLU(inplace=True)``, ``out += identity``)
    cannot rewrite the embedding. Use as a context manager (the hook is removed on exit).
    """

    def __init__(
        self, model: nn.Module, layer: str, module: nn.Module, embedding: str, layout: dict[str, Any], stop_early: bool
    ) -> None:
        self.model, self.layer, self.module = model, layer, module
        self.embedding, self.layout, self.stop_early = embedding, layout, stop_early
        self._output: Tensor | None = None
        self._handle: Any = None
        self._calls = 0
        self._checked = False

    def __enter__(self) -> LayerEmbedder:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            tensor = output if isinstance(output, Tensor) else output[0] if isinstance(output, (tuple, list)) else None
            if not isinstance(tensor, Tensor):
                raise CamscopeError(f"layer {self.layer!r} returns {type(output).__name__}, not a tensor")
            self._calls += 1
            if self.stop_early and self._checked:
                if self._output is None:
                    self._output = tensor.detach()
                raise _StopForward
            # A clone downstream: in-place ops after the layer must not rewrite the embedding
            # (an output container that cannot be rebuilt keeps the original: the embedding is a copy then).
            if isinstance(output, Tensor):
                downstream = tensor.clone()
            elif type(output) in (tuple, list):
                downstream = type(output)([tensor.clone(), *output[1:]])
            else:
                downstream = None
            if self._output is None:
                self._output = tensor.detach() if downstream is not None else tensor.detach().clone()
            return downstream

        self._handle = register_owned_hook(self.module, hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __call__(self, inputs: Tensor) -> Tensor:
        self._output, self._calls = None, 0
        try:
            with torch.no_grad():
                self.model(inputs)
        except _StopForward:
            pass
        if self._output is None:
            raise CamscopeError(
                f"layer {self.layer!r} did not run in the forward pass: choose a layer that the model uses"
            )
        if self._calls > 1:
            raise CamscopeError(
                f"layer {self.layer!r} ran {self._calls} times in one forward pass (a shared module): "
                "choose a layer that runs once, such as its parent block"
            )
        self._checked = True
        return embedding_of(self._output, inputs.shape, self.layer, self.model, self.embedding, self.layout)


def embedding_layer(model: nn.Module, layer: LayerSpec | None, sample: Tensor) -> tuple[str, nn.Module]:
    """The one layer ``(name, module)`` that ``layer`` names (default: the model's default layer for ``sample``)."""
    spec = layer if layer is not None else default_layer(model, sample)
    resolved = resolve_layers(model, spec)
    if len(resolved) != 1:
        raise CamscopeError(f"a reference bank holds one layer's embeddings; got {len(resolved)} layers")
    return resolved[0]


def check_embedding(embedding: str) -> str:
    """``embedding`` itself when it is one of :data:`EMBEDDINGS`; else a :class:`CamscopeError`."""
    if embedding not in EMBEDDINGS:
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
        layout: as in :class:`camscope.Explainer`.
        grid: as in :class:`camscope.Explainer`.
        prefix_tokens: as in :class:`camscope.Explainer`.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> embed(resnet18().eval(), torch.randn(3, 3, 64, 64), "layer4").shape
        torch.Size([3, 512])
    """
    inputs = validate_inputs(model, inputs)
    name, module = embedding_layer(model, layer, inputs[:1])
    layout_options = dict(layout=layout, grid=grid, prefix_tokens=prefix_tokens)
    with (
        model_state(model),
        LayerEmbedder(model, name, module, check_embedding(embedding), layout_options, True) as run,
    ):
        return torch.cat([run(inputs[i : i + batch_size]) for i in range(0, inputs.shape[0], batch_size)])
