"""Capture engine: layers, hooks, activation layouts and model state.

Activations come from forward hooks that exist only during one call. Gradients
are taken with ``torch.autograd.grad`` of the target score with respect to the
captured activations only: the forward pass runs without autograd up to the
first captured layer, whose output becomes a leaf that requires grad, so no
graph is recorded below the layer, no backward runs below it and no parameter
gradient is ever computed.
"""

from __future__ import annotations

import difflib
import math
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import torch
from torch import Tensor, nn

from camscope.errors import CamscopeError
from camscope.locking import model_lock, owned_by_this_thread, register_owned_hook
from camscope.models.fingerprint import version_counter
from camscope.targets.outputs import output_tensor

__all__ = [
    "LayerCapture",
    "LayerSpec",
    "candidate_layers",
    "default_layer",
    "model_lock",
    "model_state",
    "output_tensor",
    "register_owned_hook",
    "resolve_layers",
    "split_output",
    "to_channels_first",
    "validate_inputs",
]

LayerSpec = str | nn.Module | Sequence[str | nn.Module]

# At most this many prefix tokens (class, distillation, register tokens) are looked for.
_MAX_PREFIX_TOKENS = 32


def _layer_list(layer: LayerSpec) -> list[str | nn.Module]:
    if isinstance(layer, (str, nn.Module)):
        return [layer]
    layers = list(layer) if isinstance(layer, (list, tuple)) else None
    if layers is None or any(not isinstance(item, (str, nn.Module)) for item in layers):
        shown = layer if layers is None else next(i for i in layers if not isinstance(i, (str, nn.Module)))
        raise CamscopeError(
            f"a layer is a dotted module name (str) or a module of the model, got {type(shown).__name__} {shown!r}: "
            "pass e.g. layer='layer4' or layer=model.layer4 (`camscope layers MODEL` lists the names)"
        )
    if not layers:
        raise CamscopeError("an empty list of layers was given: name at least one layer")
    return layers


def resolve_layers(model: nn.Module, layer: LayerSpec) -> list[tuple[str, nn.Module]]:
    """Resolve dotted names or module objects to ``(name, module)`` pairs.

    Raises:
        CamscopeError: for an unknown name (with the closest names) or a module
            that is not part of the model.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> [name for name, _ in resolve_layers(model, ["0", model[1]])]
        ['0', '1']
    """
    named = dict(model.named_modules())
    by_id = {id(module): name for name, module in named.items()}
    resolved = []
    for item in _layer_list(layer):
        if isinstance(item, nn.Module):
            if id(item) not in by_id:
                raise CamscopeError(
                    f"the layer module {type(item).__name__} is not a submodule of the model: "
                    "pass a module of this model, or its dotted name"
                )
            resolved.append((by_id[id(item)] or "<model>", item))
            continue
        if item not in named or item == "":
            close = difflib.get_close_matches(item, [n for n in named if n], n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise CamscopeError(f"unknown layer {item!r}{hint} (`camscope layers MODEL` lists the layers)")
        resolved.append((item, named[item]))
    return resolved


Forward = Callable[[Tensor], Any]


def _trace_shapes(
    model: nn.Module, inputs: Tensor, forward: Forward | None = None
) -> list[tuple[str, tuple[int, ...]]]:
    """Run one sample and list ``(name, output shape)`` in the order modules finish."""
    with model_lock(model):
        return [(name, shape) for name, shape, _, _ in _trace_locked(model, inputs, forward or model)]


_TensorKey = tuple[int, int]  # a tensor's id and version counter: the same tensor, not modified in place since


def _tensor_key(tensor: Tensor) -> _TensorKey:
    return id(tensor), version_counter(tensor)


def _trace_locked(
    model: nn.Module, inputs: Tensor, forward: Forward, identities: bool = False
) -> list[tuple[str, tuple[int, ...], _TensorKey | None, bool]]:
    """``(name, output shape, output key, no-op)`` per module call, in the order modules finish.

    With ``identities``, the output's key (:func:`_tensor_key`) is recorded and ``no-op`` says
    whether the output is one of the module's inputs, unchanged (a pre-hook records the inputs' keys).
    """
    order: list[tuple[str, tuple[int, ...], _TensorKey | None, bool]] = []
    entered: dict[str, list[_TensorKey]] = {}
    alive: list[Tensor] = []  # outputs are kept until the trace ends, so that no two share an id
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def enter(_m: nn.Module, args: Any, name: str = name) -> None:
            entered[name] = [_tensor_key(a) for a in args if isinstance(a, Tensor)]

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, (tuple, list)) and out:
                out = out[0]
            if isinstance(out, Tensor):
                key = _tensor_key(out) if identities else None
                if identities:
                    alive.append(out)
                order.append((name, tuple(out.shape), key, key is not None and key in entered.get(name, [])))

        if identities:
            handles.append(module.register_forward_pre_hook(owned_by_this_thread(enter)))
        handles.append(register_owned_hook(module, hook))
    try:
        with torch.no_grad(), model_state(model):
            forward(inputs[:1])
    finally:
        for handle in handles:
            handle.remove()
    return order


_DEFAULT_LAYER_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = weakref.WeakKeyDictionary()


def candidate_layers(
    model: nn.Module, inputs: Tensor, forward: Forward | None = None, *, all_layers: bool = True
) -> list[tuple[str, tuple[int, ...]]]:
    """Layers whose output has a spatial grid or tokens, with their output shapes.

    Each name appears once, with the shape of its last call, in execution order.
    ``forward`` runs the model on a batch (default ``model``; a model of several
    inputs runs with the others held fixed). ``all_layers=False`` leaves out the
    names that add no map of their own: no-op modules, whose output is their input
    unchanged (``nn.Identity``, dropout in eval mode), and modules whose output is the
    very tensor, unchanged since, that an enclosing module returns (timm's ``bn1.act``
    inside ``bn1``): the enclosing name gives the same map. The model's default layer
    is always listed.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Identity(), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
        >>> [name for name, _ in candidate_layers(model, torch.zeros(1, 3, 8, 8))]
        ['0', '1', '2']
        >>> candidate_layers(model, torch.zeros(1, 3, 8, 8), all_layers=False)
        [('0', (1, 4, 6, 6)), ('2', (1, 4, 6, 6))]
    """
    with model_lock(model):
        traced = _trace_locked(model, inputs, forward or model, identities=not all_layers)
    hidden = set() if all_layers else _repeated_names(model, traced, signal=inputs.ndim == 3)
    seen: dict[str, tuple[int, ...]] = {}
    for name, shape, _, _ in traced:
        if len(shape) >= 3 and name not in hidden:
            seen.pop(name, None)
            seen[name] = shape
    return list(seen.items())


def _repeated_names(
    model: nn.Module, traced: list[tuple[str, tuple[int, ...], _TensorKey | None, bool]], signal: bool
) -> set[str]:
    """The no-op modules and the modules whose output an enclosing module returns unchanged (not the default)."""
    last = {name: key for name, _, key, _ in traced}
    hidden = set()
    for name, _, key, no_op in traced:
        parts = name.split(".")
        enclosing = (".".join(parts[:cut]) for cut in range(1, len(parts)))
        if no_op or any(last.get(outer) == key for outer in enclosing):
            hidden.add(name)
    with suppress(CamscopeError):  # no layer with a grid or tokens: nothing is listed anyway
        hidden.discard(_choose_default(model, [(name, shape) for name, shape, _, _ in traced], signal=signal))
    return hidden


def default_layer(model: nn.Module, inputs: Tensor, forward: Forward | None = None) -> str:
    """A sensible layer to explain.

    A model that names its layer in a ``cam_layer`` attribute (camscope's shipped
    models) gets that layer. CNNs: the last module whose output still has a spatial grid (the last
    convolutional stage; the outermost module when several end on the same
    tensor). Token models (ViT, DeiT, DINO): the first normalisation of the
    last transformer block, because with class-token pooling the patch tokens
    at a block's output get no gradient. The choice is cached per model and
    input shape.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> default_layer(resnet18(num_classes=10), torch.zeros(1, 3, 64, 64))
        'layer4'
    """
    named = getattr(model, "cam_layer", None)
    if isinstance(named, str) and named in dict(model.named_modules()):  # a detector's head is not the layer to explain
        return named
    with model_lock(model):
        cache = _DEFAULT_LAYER_CACHE.setdefault(model, {})
        key = tuple(inputs.shape[1:])
        if key in cache and forward is None:
            return cache[key]
        choice = _choose_default(model, _trace_shapes(model, inputs, forward), signal=inputs.ndim == 3)
        if forward is not None:  # another input's shape may change the choice: not cached
            return choice
        cache[key] = choice
        return choice


def _choose_default(model: nn.Module, order: list[tuple[str, tuple[int, ...]]], signal: bool = False) -> str:
    grid_ranks = (3,) if signal else (4, 5)
    last_grid = max(
        (i for i, (_, shape) in enumerate(order) if len(shape) in grid_ranks and math.prod(shape[2:]) > 1), default=-1
    )
    last_tokens = -1 if signal else max((i for i, (_, shape) in enumerate(order) if len(shape) == 3), default=-1)
    if last_grid < 0 and last_tokens < 0:
        raise CamscopeError(
            "no layer of this model outputs a spatial grid or tokens: pass layer=NAME "
            "(`camscope layers MODEL` lists candidates)"
        )
    if last_grid > last_tokens:
        choice = order[last_grid][0]
    else:
        choice = _token_default(model, [name for name, shape in order[: last_tokens + 1] if len(shape) == 3])
    return choice


def _token_default(model: nn.Module, token_layers: list[str]) -> str:
    """The first LayerNorm inside the last block of a token model."""
    named = dict(model.named_modules())
    last = token_layers[-1]
    # Walk the token layers backwards to the last block: a child of a ModuleList/Sequential.
    for name in reversed(token_layers):
        parent, _, index = name.rpartition(".")
        if index.isdigit() and isinstance(named.get(parent), (nn.ModuleList, nn.Sequential)):
            for sub_name, sub in named[name].named_modules():
                if isinstance(sub, nn.LayerNorm):
                    return f"{name}.{sub_name}" if sub_name else name
            return name
    return last


def _has_parameters(model: nn.Module) -> bool:
    return next(model.parameters(), None) is not None


def _parameter_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's parameters (the first floating one)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def _first_conv(model: nn.Module) -> nn.Module | None:
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module
        if isinstance(module, nn.Linear):
            return None
    return None


def validate_inputs(model: nn.Module, inputs: Any, check_channels: bool = True) -> Tensor:
    """Check the model and the input batch before any forward pass.

    Inputs are ``[B, C, H, W]`` images, ``[B, C, D, H, W]`` volumes, or
    ``[B, C, T]`` signals when the model's first convolution is a ``Conv1d``
    (maps then run over time). An empty batch (``B = 0``) is refused, and the
    inputs' dtype must be the dtype of the model's parameters (nothing is cast).
    ``check_channels=False`` skips the channel check (one input of a model of several,
    whose first convolution may belong to another input's branch).

    Raises:
        CamscopeError: for a model without parameters, a non-tensor, a wrong
            rank, an empty batch, NaN or infinite values, or a channel count
            that the model's first convolution does not take.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> validate_inputs(nn.Conv2d(3, 4, 3), torch.zeros(3, 8, 8))
        Traceback (most recent call last):
        ...
        camscope.errors.CamscopeError: inputs must be a batch [B, C, H, W] (or [B, C, D, H, W] for volumes), got shape [3, 8, 8] (a single image: use x.unsqueeze(0))
    """
    if not isinstance(model, nn.Module):
        raise CamscopeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not _has_parameters(model):
        raise CamscopeError(
            "the model has no parameters: camscope explains trained networks; "
            "check that you passed the model and not a wrapper or a function"
        )
    if not isinstance(inputs, Tensor):
        raise CamscopeError(f"inputs must be a torch.Tensor batch [B, C, H, W], got {type(inputs).__name__}")
    conv = _first_conv(model)
    _check_rank(inputs, conv)
    if inputs.shape[0] == 0:
        raise CamscopeError(f"inputs are an empty batch (shape {list(inputs.shape)}): pass at least one sample")
    if not inputs.is_floating_point():
        raise CamscopeError(f"inputs must be floating point (normalised images), got dtype {inputs.dtype}")
    dtype = _parameter_dtype(model)
    if dtype is not None and inputs.dtype != dtype:
        raise CamscopeError(
            f"inputs are {inputs.dtype} but the model's parameters are {dtype}: camscope does not cast silently; "
            f"convert one to the other (inputs.to({dtype}) or model.to({inputs.dtype}))"
        )
    if not bool(torch.isfinite(inputs).all()):
        raise CamscopeError("inputs contain NaN or infinite values: check the preprocessing and the image files")
    channels = conv.in_channels if isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) else None
    if check_channels and channels is not None and inputs.shape[1] != channels:
        raise CamscopeError(
            f"the model's first convolution takes {channels} channels but the inputs have {inputs.shape[1]} "
            f"(shape {list(inputs.shape)}): convert the images (e.g. grayscale to RGB) or check the channel axis"
        )
    return inputs


def _check_rank(inputs: Tensor, conv: nn.Module | None) -> None:
    """Images and volumes for every model; ``[B, C, T]`` signals for a model whose first convolution is 1-D."""
    signal = isinstance(conv, nn.Conv1d)
    if inputs.ndim in (4, 5) or (signal and inputs.ndim == 3):
        return
    if signal:
        fix = " (a single signal: use x.unsqueeze(0))" if inputs.ndim == 2 else ""
        raise CamscopeError(
            f"the model's first convolution is 1-D: inputs must be a batch [B, C, T], "
            f"got shape {list(inputs.shape)}{fix}"
        )
    fix = " (a single image: use x.unsqueeze(0))" if inputs.ndim == 3 else ""
    raise CamscopeError(
        f"inputs must be a batch [B, C, H, W] (or [B, C, D, H, W] for volumes), got shape {list(inputs.shape)}{fix}"
    )


@contextmanager
def model_state(model: nn.Module, eval_mode: bool = True) -> Iterator[None]:
    """Put the model in eval mode for the duration; restore every module's mode and every requires_grad flag.

    Holds the model's lock (:func:`model_lock`) for the whole duration, so that
    concurrent calls on one model never see each other's modes.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.BatchNorm1d(2)).train()
        >>> with model_state(model):
        ...     inside = model.training
        >>> inside, model.training
        (False, True)
    """
    with model_lock(model):
        training = [(module, module.training) for module in model.modules()]
        flags = [(param, param.requires_grad) for param in model.parameters()]
        try:
            if eval_mode:
                model.eval()
            yield
        finally:
            for module, mode in training:
                if module.training != mode:
                    module.training = mode
            for param, flag in flags:
                if param.requires_grad != flag:
                    param.requires_grad_(flag)


def _num_prefix_tokens(model: nn.Module) -> int | None:
    """timm's count of class, distillation and register tokens, where the model has it."""
    value = getattr(model, "num_prefix_tokens", None)
    return value if isinstance(value, int) else None


def _token_grid(tokens: int, height: int, width: int, prefix: int | None) -> tuple[int, int, int] | None:
    """``(prefix, gh, gw)`` such that ``tokens - prefix = gh * gw`` matches the input's aspect ratio."""
    prefixes = [prefix] if prefix is not None else range(min(tokens, _MAX_PREFIX_TOKENS + 1))
    for p in prefixes:
        count = tokens - p
        if count <= 0:
            continue
        for gh in range(1, count + 1):
            if count % gh:
                continue
            gw = count // gh
            # One integer stride on both axes; a partial patch at the border is dropped (floor).
            stride = height // gh
            if stride >= 1 and width // gw == stride and height - gh * stride < stride and width - gw * stride < stride:
                return p, gh, gw
    return None


def to_channels_first(
    activations: Tensor,
    input_shape: Sequence[int],
    layer_name: str,
    model: nn.Module | None = None,
    layout: str = "auto",
    grid: tuple[int, int] | None = None,
    prefix_tokens: int | None = None,
) -> Tensor:
    """Bring a layer's output to ``[B, K, *spatial]``.

    Args:
        activations: the layer output: ``[B, K, h, w]`` (CNN), ``[B, K, d, h, w]``
            (3-D CNN), ``[B, N, K]`` tokens (ViT; prefix tokens are dropped), or
            ``[B, h, w, K]`` channels-last (Swin).
        input_shape: the input batch shape, used to infer the token grid.
        layer_name: for error messages.
        model: to read ``num_prefix_tokens`` (timm) when present.
        layout: ``"auto"``, ``"nchw"``, ``"nhwc"`` or ``"tokens"``.
        grid: the token grid ``(h, w)`` when it cannot be inferred.
        prefix_tokens: how many leading tokens to drop (class, registers).

    Example:
        >>> import torch
        >>> tokens = torch.zeros(2, 1 + 4 * 4, 8)  # a class token and a 4 x 4 grid of patches, 8 channels
        >>> to_channels_first(tokens, (2, 3, 64, 64), "blocks.0").shape
        torch.Size([2, 8, 4, 4])
    """
    if len(input_shape) == 3:
        # 1-D signals [B, C, T]: the layer's output is [B, K, t].
        if activations.ndim != 3 or layout not in ("auto", "nchw"):
            raise CamscopeError(
                f"layer {layer_name!r} outputs shape {list(activations.shape)} for 1-D signal inputs: "
                "choose a Conv1d stage whose output is [B, K, t] (layout 'auto' or 'nchw')"
            )
        return activations
    height, width = int(input_shape[-2]), int(input_shape[-1])
    if layout == "auto":
        if activations.ndim == 3:
            layout = "tokens"
        elif activations.ndim == 4 and _looks_channels_last(activations.shape, height, width):
            layout = "nhwc"
        else:
            layout = "nchw"
    if layout == "nchw":
        if activations.ndim not in (4, 5):
            raise CamscopeError(
                f"layer {layer_name!r} outputs shape {list(activations.shape)}, not a [B, K, h, w] grid: "
                "choose a convolutional layer, or pass layout='tokens' / 'nhwc'"
            )
        return activations
    if layout == "nhwc":
        if activations.ndim != 4:
            raise CamscopeError(
                f"layout='nhwc' needs a 4-D output, layer {layer_name!r} gives {list(activations.shape)}"
            )
        return activations.permute(0, 3, 1, 2)
    if layout != "tokens":
        raise CamscopeError(f"unknown layout {layout!r}: use 'auto', 'nchw', 'nhwc' or 'tokens'")
    if activations.ndim != 3:
        raise CamscopeError(
            f"layout='tokens' needs [B, N, K] outputs, layer {layer_name!r} gives {list(activations.shape)}"
        )
    batch, tokens, channels = activations.shape
    prefix = prefix_tokens if prefix_tokens is not None else (_num_prefix_tokens(model) if model is not None else None)
    if grid is not None:
        gh, gw = grid
        prefix = tokens - gh * gw if prefix is None else prefix
        found = (prefix, gh, gw) if prefix >= 0 and tokens - prefix == gh * gw else None
    else:
        found = _token_grid(tokens, height, width, prefix)
    if found is None:
        raise CamscopeError(
            f"layer {layer_name!r} outputs {tokens} tokens, which do not form a patch grid for an input of "
            f"{height}x{width} (after dropping {prefix if prefix is not None else 'up to 32'} prefix tokens): "
            "pass grid=(h, w) and prefix_tokens=N, or choose a layer with spatial tokens"
        )
    prefix, gh, gw = found
    return activations[:, prefix:].transpose(1, 2).reshape(batch, channels, gh, gw)


def _looks_channels_last(shape: Sequence[int], height: int, width: int) -> bool:
    """``[B, h, w, K]``: dims 1-2 form a downsampled grid of the input and dims 2-3 do not."""

    def is_grid(h: int, w: int) -> bool:
        return h > 0 and w > 0 and height % h == 0 and width % w == 0 and height // h == width // w

    return is_grid(shape[1], shape[2]) and not is_grid(shape[2], shape[3])


class LayerCapture:
    """Forward hooks that record the outputs of some layers during one pass.

    With ``need_grad``, autograd is switched on at the first captured layer and
    each captured output becomes a tensor that requires grad. In both modes the
    layer passes a clone downstream, so that in-place operations after the
    layer (``ReLU(inplace=True)``, ``relu_()``, ``out += identity``) cannot
    change the captured values: every method sees the layer's output as the
    layer produced it.

    ``batch_rows`` (set by the engine when a method's pass hooks append rows of
    their own after the batch's, see :class:`camscope.engine.method.PassHooks`):
    only the first ``batch_rows`` rows of an output are recorded (without
    ``need_grad``); the whole output still goes downstream.

    Use as a context manager; hooks are removed on exit, exceptions included.
    The hooks act only on forward passes of the thread that entered the
    context, and the model's lock (:func:`model_lock`, found from
    ``model``, else from the first layer) is held while they are installed.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True))
        >>> with LayerCapture(resolve_layers(model, "0"), need_grad=False) as capture:
        ...     _ = model(torch.randn(1, 3, 8, 8))
        >>> bool((capture.activations["0"] < 0).any())  # recorded before the in-place ReLU
        True
    """

    def __init__(
        self,
        layers: list[tuple[str, nn.Module]],
        need_grad: bool,
        model: nn.Module | None = None,
        source: str | None = None,
    ) -> None:
        self.layers = layers
        self._lock = model_lock(model if model is not None else layers[0][1]) if layers else None
        self.need_grad = need_grad
        self.source = source
        self.activations: dict[str, Tensor] = {}
        self.levels: dict[str, list[str]] = {}
        self.calls: dict[str, int] = {}
        self.unreached: dict[str, int] = {}
        self.enabled = True
        self.batch_rows: int | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> LayerCapture:
        if self._lock is not None:
            self._lock.acquire()
        try:
            for name, module in self.layers:
                self._handles.append(register_owned_hook(module, self._hook(name)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
        finally:
            if self._lock is not None:
                self._lock.release()

    def reset(self) -> None:
        self.activations.clear()
        self.calls.clear()
        self.unreached.clear()

    def _record(self, key: str, tensor: Tensor) -> Tensor:
        """Store one captured tensor; return the clone that goes downstream."""
        if not self.need_grad:
            self.activations[key] = tensor.detach() if self.batch_rows is None else tensor[: self.batch_rows].detach()
            return tensor.clone()
        if not tensor.requires_grad:
            torch.set_grad_enabled(True)
            tensor = tensor.detach().requires_grad_(True)
        self.activations[key] = tensor
        return tensor.clone()

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if not self.enabled:
                return None
            if isinstance(output, Mapping) and output and all(isinstance(v, Tensor) for v in output.values()):
                tensors = dict(output)
            else:
                tensor, rebuild = split_output(output, name)
                tensors = {"": tensor}
            if self.source is not None and not any(t.requires_grad for t in tensors.values()):
                # With several inputs, only calls that depend on the explained input count (autograd marks them).
                self.unreached[name] = self.unreached.get(name, 0) + 1
                return None
            self.calls[name] = self.calls.get(name, 0) + 1
            if "" in tensors:
                return rebuild(self._record(name, tensors[""]))
            self.levels[name] = [str(key) for key in tensors]
            downstream = {key: self._record(f"{name}[{key}]", t) for key, t in tensors.items()}
            return type(output)(downstream) if type(output) in (dict, OrderedDict) else downstream

        return hook

    def check_calls(self) -> None:
        """Every layer ran exactly once (with several inputs: once on the explained input's path)."""
        for name, _ in self.layers:
            count = self.calls.get(name, 0)
            if count == 0 and self.unreached.get(name, 0):
                raise CamscopeError(
                    f"layer {name!r} is not reached from the explained {self.source}: its output does not depend "
                    "on that input; choose a layer on that input's path, or explain another input (explained_input=)"
                )
            if count == 0:
                raise CamscopeError(
                    f"layer {name!r} did not run in the forward pass: choose a layer that the model uses"
                )
            if count > 1:
                raise CamscopeError(
                    f"layer {name!r} ran {count} times in one forward pass (a shared module): "
                    "choose a layer that runs once, such as its parent block"
                )

    def captured(self, name: str) -> dict[str, Tensor]:
        """The tensors captured for one layer: ``{name: tensor}``, or one entry per level ``name[key]``."""
        keys = [f"{name}[{key}]" for key in self.levels[name]] if name in self.levels else [name]
        return {key: self.activations[key] for key in keys}


def split_output(output: Any, name: str) -> tuple[Tensor, Callable[[Tensor], Any]]:
    """The activation tensor of a layer's output, and a function that puts a replacement back.

    A forward hook returns ``rebuild(new_tensor)`` to replace the layer's output:
    a tensor as it is, a tuple ``(hidden_states, *extras)`` (Hugging Face layers)
    with its first element replaced.

    Example:
        >>> import torch
        >>> tensor, rebuild = split_output((torch.zeros(2), "extra"), "block")
        >>> rebuild(torch.ones(2))
        (tensor([1., 1.]), 'extra')
    """
    if isinstance(output, Tensor):
        return output, lambda tensor: tensor
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        # Hugging Face layers return (hidden_states, *extras).
        return output[0], lambda tensor: (tensor, *output[1:])
    if isinstance(output, Mapping):
        raise CamscopeError(
            f"layer {name!r} returns a dict of feature levels ({', '.join(map(str, output))}), not one tensor: "
            "this needs one tensor; name the module of one level instead (e.g. backbone.fpn.layer_blocks.0)"
        )
    raise CamscopeError(
        f"layer {name!r} returns {type(output).__name__}, not a tensor: choose a layer whose output is a tensor"
    )


# Old private name, kept while other modules move to ``split_output``.
