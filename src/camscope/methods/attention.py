"""The attention of vision transformers, as the attention methods read it (``rollout``, ``gradrollout``, ``legrad``).

Each block of a vision transformer mixes its ``N`` tokens with attention probabilities

    A_h = softmax(q_h k_h^T * s)          (s = 1 / sqrt(d), one matrix [N, N] per head h)
    o_h = A_h v_h                          (the heads' output, before the output projection)

Most implementations never materialise ``A`` (``scaled_dot_product_attention``,
``nn.MultiheadAttention(need_weights=False)``). Forward hooks here capture the queries,
keys and values of each block and :meth:`BlockAttention.probabilities` recomputes ``A`` in
torch; the gradient of a score ``S`` with respect to ``A`` needs no materialised ``A`` in the
model either, because ``o_h = A_h v_h`` gives it exactly:

    dS/dA_h = (dS/do_h) v_h^T              (:meth:`BlockAttention.gradient`)

so the model's own (fused) attention runs unchanged and only ``dS/do`` is taken by autograd.

Supported attention modules (self-attention of batch-first tokens ``[B, N, C]``, without
attention masks, dropout inactive):

* ``torch.nn.MultiheadAttention`` with ``batch_first=True`` and one packed input projection
  (torchvision's ``VisionTransformer``, open_clip's ViT image towers);
* timm's ``Attention`` (``timm.layers.Attention``: ViT, DeiT, ViTs with register tokens),
  fused or not, with or without q/k normalisation;
* transformers' ``CLIPAttention`` (the CLIP image tower; eager or SDPA attention).

Any other attention module (relative positions, rotary embeddings, windowed attention, cross-
attention poolers) is not read: a model whose forward pass runs none of the supported modules
gets a :class:`~camscope.errors.CamscopeError` that names the modules it has. A cross-attention
call of a supported module (an attention pooler's query) is not a block; it stays part of the
model's head.

Example:
    >>> import torch
    >>> from torchvision.models import VisionTransformer
    >>> model = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32).eval()
    >>> x = torch.randn(1, 3, 32, 32)
    >>> names = attention_layers(model, x)
    >>> names
    ['encoder.layers.encoder_layer_0.self_attention', 'encoder.layers.encoder_layer_1.self_attention']
    >>> with AttentionCapture(model, names, want={"qk"}) as capture, torch.no_grad():
    ...     _ = model(x)
    >>> capture.records[0].probabilities().shape  # [B, heads, N, N]: a class token and 16 patches
    torch.Size([1, 2, 17, 17])
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.engine.capture import model_lock, register_owned_hook, to_channels_first
from camscope.engine.maps import aggregate_maps
from camscope.engine.method import CamContext, CamMethod, PassHooks
from camscope.errors import CamscopeError
from camscope.locking import owned_by_this_thread
from camscope.options import Option
from camscope.targets.base import Target

__all__ = [
    "BLOCKS",
    "SUPPORTED_ATTENTION",
    "AttentionCapture",
    "AttentionMethod",
    "AttentionPass",
    "BlockAttention",
    "attention_layers",
    "block_name",
    "common_tokens",
    "explained_scores",
    "gradients_from",
    "head_pooling",
    "readout_weights",
    "select_blocks",
    "token_layout",
]

#: What the attention methods read, in words (error messages and docs).
SUPPORTED_ATTENTION = (
    "torch.nn.MultiheadAttention with batch_first=True (torchvision and open_clip ViTs), timm's Attention "
    "(ViT, DeiT, register tokens) and transformers' CLIPAttention (CLIP image towers)"
)

# The most prefix tokens (class, registers) a token layout may have, as the engine's token reshaping.
_MAX_PREFIX = 32


def _check_blocks(value: Any) -> None:
    if isinstance(value, int):
        if value < 1:
            raise CamscopeError(f"blocks={value}: give at least 1 (the last N blocks), or None for all")
        return
    if isinstance(value, str) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise CamscopeError(f"blocks must be an int N (the last N blocks) or a list of block indices, got {value!r}")
    if len(value) == 0:
        raise CamscopeError("blocks is an empty list: give block indices, or None for all blocks")


#: The option every attention method shares: which blocks' attention it reads.
BLOCKS = Option(
    "blocks",
    (int, Sequence),
    None,
    "the transformer blocks read: None for all, N for the last N, or a list of block indices (0 = first)",
    check=_check_blocks,
)


@dataclass
class BlockAttention:
    """What the attention of one block gave in one forward pass.

    Attributes:
        name: the attention module's dotted name.
        heads: the number of heads ``H``.
        scale: ``s`` in ``softmax(q k^T * s)``.
        queries, keys, values: ``[B, H, N, d]``, detached (those that were asked for).
        handle: a tensor of the model's graph whose gradient gives ``dS/do`` (when asked for).
        to_heads: turns ``dS/d handle`` into ``dS/do`` as ``[B, H, N, d]``.
    """

    name: str
    heads: int = 0
    scale: float = 1.0
    queries: Tensor | None = None
    keys: Tensor | None = None
    values: Tensor | None = None
    handle: Tensor | None = None
    to_heads: Callable[[Tensor], Tensor] | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the attention is computed in: float32 for half-precision models, else the model's."""
        present = next((t for t in (self.queries, self.values) if t is not None), None)
        if present is None:
            raise CamscopeError(f"the attention of {self.name!r} did not run in the forward pass")
        return _work_dtype(present.dtype)

    @property
    def tokens(self) -> int:
        """``N``, the number of tokens."""
        present = next((t for t in (self.queries, self.values) if t is not None), None)
        if present is None:
            raise CamscopeError(f"the attention of {self.name!r} did not run in the forward pass")
        return int(present.shape[2])

    def require_handle(self) -> Tensor:
        """The tensor whose gradient gives ``dS/do`` (captured with ``want={"grad"}``)."""
        if self.handle is None:
            raise CamscopeError(f"the output of the attention {self.name!r} was not captured")
        return self.handle

    def probabilities(self, dtype: torch.dtype | None = None) -> Tensor:
        """``A = softmax(q k^T * s)``, ``[B, H, N, N]``."""
        if self.queries is None or self.keys is None:
            raise CamscopeError(f"the queries and keys of {self.name!r} were not captured")
        dtype = dtype or _work_dtype(self.queries.dtype)
        logits = (self.queries.to(dtype) * self.scale) @ self.keys.to(dtype).transpose(-2, -1)
        return logits.softmax(dim=-1)

    def gradient(self, grad: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """``dS/dA_h = (dS/do_h) v_h^T``, ``[B, H, N, N]``, from ``grad = dS/d handle``."""
        if self.values is None or self.to_heads is None:
            raise CamscopeError(f"the values and the output of {self.name!r} were not captured")
        dtype = dtype or _work_dtype(self.values.dtype)
        return self.to_heads(grad).to(dtype) @ self.values.to(dtype).transpose(-2, -1)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision models (softmax and products of attention), else the model's dtype."""
    return torch.promote_types(dtype, torch.float32)


def _keep(record: BlockAttention, field_name: str, tensor: Tensor) -> None:
    """Store a captured query, key or value tensor, detached, in the block's record."""
    setattr(record, field_name, tensor.detach())


def _split_heads(tensor: Tensor, heads: int) -> Tensor:
    """``[B, N, H * d]`` as ``[B, H, N, d]``."""
    batch, tokens, width = tensor.shape
    return tensor.reshape(batch, tokens, heads, width // heads).transpose(1, 2)


def _part(module: nn.Module, name: str) -> nn.Module:
    """The submodule ``name`` of an attention module (the structure its adapter reads)."""
    part = getattr(module, name, None)
    if not isinstance(part, nn.Module):
        raise CamscopeError(f"the attention module {type(module).__name__} has no submodule {name!r} to read")
    return part


def _value(module: nn.Module, name: str) -> Any:
    """A plain attribute of a module (a head count, a scale, a pooling name)."""
    return getattr(module, name, None)


def _refuse_masks(name: str, masks: Iterable[Any]) -> None:
    if any(mask is not None and mask is not False for mask in masks):
        raise CamscopeError(
            f"the attention {name!r} was called with an attention mask or causal attention: the attention methods "
            "read unmasked self-attention of image tokens (a ViT image tower)"
        )


def _refuse_dropout(name: str, module: nn.Module, rate: float) -> None:
    if module.training and rate > 0:
        raise CamscopeError(
            f"the attention {name!r} is in training mode with dropout {rate}: attention maps need it off; "
            "explain with eval_mode=True (the default)"
        )


class _Adapter:
    """How one kind of attention module is read: its checks and its hooks."""

    kind: ClassVar[str] = ""

    def matches(self, module: nn.Module) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def is_self_attention(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        # a kind whose modules only ever attend to their own input; kinds that may cross-attend read the call
        del args, kwargs
        return True

    def install(
        self, name: str, module: nn.Module, record: BlockAttention, want: frozenset[str]
    ) -> list[torch.utils.hooks.RemovableHandle]:  # pragma: no cover - abstract
        raise NotImplementedError


def _mha_argument(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, key: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(key, default)


class _MultiheadAttention(_Adapter):
    """``nn.MultiheadAttention``: q, k, v recomputed from its input with its packed projection."""

    kind = "torch.nn.MultiheadAttention"

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, nn.MultiheadAttention)

    def is_self_attention(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        query = _mha_argument(args, kwargs, 0, "query")
        return query is _mha_argument(args, kwargs, 1, "key") and query is _mha_argument(args, kwargs, 2, "value")

    def install(
        self, name: str, module: nn.Module, record: BlockAttention, want: frozenset[str]
    ) -> list[torch.utils.hooks.RemovableHandle]:
        assert isinstance(module, nn.MultiheadAttention)
        if not module.batch_first:
            raise CamscopeError(
                f"{name!r} is an nn.MultiheadAttention with batch_first=False (sequence-first tokens), which the "
                "attention methods do not read: build the model with batch_first=True"
            )
        if module.in_proj_weight is None or module.bias_k is not None or module.add_zero_attn:
            raise CamscopeError(
                f"{name!r} is an nn.MultiheadAttention with separate key/value sizes, added key/value biases or "
                "zero attention, which the attention methods do not read"
            )
        _refuse_dropout(name, module, module.dropout)
        record.heads = module.num_heads
        record.scale = (module.embed_dim // module.num_heads) ** -0.5

        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            _refuse_masks(
                name,
                [
                    _mha_argument(args, kwargs, 3, "key_padding_mask"),
                    _mha_argument(args, kwargs, 5, "attn_mask"),
                    _mha_argument(args, kwargs, 7, "is_causal", False),
                ],
            )
            x = _mha_argument(args, kwargs, 0, "query").detach()
            width, bias = module.embed_dim, module.in_proj_bias
            with torch.no_grad():
                if "qk" in want:
                    both = F.linear(x, module.in_proj_weight[: 2 * width], None if bias is None else bias[: 2 * width])
                    queries, keys = both.chunk(2, dim=-1)
                    record.queries, record.keys = _split_heads(queries, record.heads), _split_heads(keys, record.heads)
                if "v" in want:
                    values = F.linear(
                        x, module.in_proj_weight[2 * width :], None if bias is None else bias[2 * width :]
                    )
                    record.values = _split_heads(values, record.heads)
            if "grad" not in want:
                return None
            # The output is o W_o^T + b, so dS/do = (dS/d output) W_o; downstream gets a copy (in-place safety).
            record.handle = output[0]
            weight = module.out_proj.weight.detach()
            record.to_heads = lambda grad: _split_heads(grad @ weight.to(grad.dtype), record.heads)
            return (output[0].clone(), *output[1:])

        return [module.register_forward_hook(owned_by_this_thread(hook), with_kwargs=True)]


def _timm_attention() -> type[nn.Module] | None:
    """timm's ``Attention`` class when timm is imported (a model cannot hold one otherwise)."""
    attention = sys.modules.get("timm.layers.attention")
    return getattr(attention, "Attention", None)


class _TimmAttention(_Adapter):
    """timm's ``Attention``: q and k after ``q_norm``/``k_norm``, v from ``qkv``, o entering ``norm``."""

    kind = "timm.layers.Attention"

    def matches(self, module: nn.Module) -> bool:
        cls = _timm_attention()
        return cls is not None and isinstance(module, cls) and type(module).forward is cls.forward

    def install(
        self, name: str, module: nn.Module, record: BlockAttention, want: frozenset[str]
    ) -> list[torch.utils.hooks.RemovableHandle]:
        _refuse_dropout(name, module, float(_value(_part(module, "attn_drop"), "p")))
        record.heads, record.scale = int(_value(module, "num_heads")), float(_value(module, "scale"))

        def check(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            _refuse_masks(name, [_mha_argument(args, kwargs, 1, "attn_mask"), kwargs.get("is_causal", False)])

        def values(_m: nn.Module, _args: Any, output: Tensor) -> None:
            batch, tokens, _ = output.shape
            record.values = output.detach().reshape(batch, tokens, 3, record.heads, -1)[:, :, 2].transpose(1, 2)

        def handle(_m: nn.Module, args: tuple[Any, ...]) -> Any:
            record.handle, record.to_heads = args[0], lambda grad: _split_heads(grad, record.heads)
            return (args[0].clone(), *args[1:])

        handles = [module.register_forward_pre_hook(owned_by_this_thread(check), with_kwargs=True)]
        if "qk" in want:
            handles.append(
                register_owned_hook(_part(module, "q_norm"), lambda _m, _i, out: _keep(record, "queries", out))
            )
            handles.append(register_owned_hook(_part(module, "k_norm"), lambda _m, _i, out: _keep(record, "keys", out)))
        if "v" in want:
            handles.append(register_owned_hook(_part(module, "qkv"), values))
        if "grad" in want:
            handles.append(_part(module, "norm").register_forward_pre_hook(owned_by_this_thread(handle)))
        return handles


_HF_CLIP_ATTENTION = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2")


class _CLIPAttention(_Adapter):
    """transformers' ``CLIPAttention``: q, k, v from its projections, o entering ``out_proj``."""

    kind = "transformers CLIPAttention"

    def matches(self, module: nn.Module) -> bool:
        kind = type(module)
        return kind.__name__ in _HF_CLIP_ATTENTION and kind.__module__.startswith("transformers.models.clip.")

    def install(
        self, name: str, module: nn.Module, record: BlockAttention, want: frozenset[str]
    ) -> list[torch.utils.hooks.RemovableHandle]:
        _refuse_dropout(name, module, float(_value(module, "dropout") or 0.0))
        record.heads, record.scale = int(_value(module, "num_heads")), float(_value(module, "scale"))

        def check(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            masks = [
                _mha_argument(args, kwargs, 1, "attention_mask"),
                _mha_argument(args, kwargs, 2, "causal_attention_mask"),
            ]
            _refuse_masks(name, masks)

        def keep(field_name: str) -> Callable[[nn.Module, Any, Tensor], None]:
            return lambda _m, _i, out: _keep(record, field_name, _split_heads(out, record.heads))

        def handle(_m: nn.Module, args: tuple[Any, ...]) -> Any:
            record.handle, record.to_heads = args[0], lambda grad: _split_heads(grad, record.heads)
            return (args[0].clone(), *args[1:])

        handles = [module.register_forward_pre_hook(owned_by_this_thread(check), with_kwargs=True)]
        if "qk" in want:
            handles.append(register_owned_hook(_part(module, "q_proj"), keep("queries")))
            handles.append(register_owned_hook(_part(module, "k_proj"), keep("keys")))
        if "v" in want:
            handles.append(register_owned_hook(_part(module, "v_proj"), keep("values")))
        if "grad" in want:
            handles.append(_part(module, "out_proj").register_forward_pre_hook(owned_by_this_thread(handle)))
        return handles


_ADAPTERS: tuple[_Adapter, ...] = (_MultiheadAttention(), _TimmAttention(), _CLIPAttention())


def _adapter(module: nn.Module) -> _Adapter | None:
    return next((adapter for adapter in _ADAPTERS if adapter.matches(module)), None)


def _no_attention_error(model: nn.Module) -> CamscopeError:
    others = [
        f"{type(module).__name__} ({name})"
        for name, module in model.named_modules()
        if ("attention" in type(module).__name__.lower() or "attn" in type(module).__name__.lower())
        and _adapter(module) is None
    ]
    found = f"; its attention modules are not supported: {', '.join(others[:4])}" if others else ""
    return CamscopeError(
        f"the attention methods read the self-attention of a vision transformer, and the forward pass of this "
        f"{type(model).__name__} runs no supported attention module{found}. Supported: {SUPPORTED_ATTENTION}; "
        "for other models use a CAM method such as gradcam"
    )


_LAYER_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], list[str]]] = weakref.WeakKeyDictionary()


def attention_layers(model: nn.Module, inputs: Tensor, forward: Callable[[Tensor], object] | None = None) -> list[str]:
    """The supported self-attention modules that the model's forward pass runs, in execution order.

    One traced forward pass without autograd, cached per model and input shape: of the first
    sample with ``model``, or of ``inputs`` with ``forward`` (a method's ``ctx.forward``, which
    also calls a model of several inputs with its other inputs).

    Raises:
        CamscopeError: when none runs (the message names the model's unsupported attention
            modules), or one runs twice in a pass (a shared module).
    """
    candidates = {name: module for name, module in model.named_modules() if name and _adapter(module) is not None}
    if not candidates:
        raise _no_attention_error(model)
    with model_lock(model):
        cache = _LAYER_CACHE.setdefault(model, {})
        key = tuple(inputs.shape[1:])
        if key not in cache:
            run = forward if forward is not None else (lambda x: model(x[:1]))
            cache[key] = _trace(model, lambda: run(inputs), candidates)
        return list(cache[key])


def _trace(model: nn.Module, run: Callable[[], object], candidates: dict[str, nn.Module]) -> list[str]:
    calls: list[tuple[str, bool]] = []

    def hook(name: str, adapter: _Adapter) -> Callable[..., None]:
        return lambda _m, args, kwargs: calls.append((name, adapter.is_self_attention(args, kwargs)))

    handles = []
    try:
        for name, module in candidates.items():
            adapter = _adapter(module)
            assert adapter is not None
            handles.append(
                module.register_forward_pre_hook(owned_by_this_thread(hook(name, adapter)), with_kwargs=True)
            )
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    names = [name for name, is_self in calls if is_self]
    if not names:
        raise _no_attention_error(model)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise CamscopeError(
            f"the attention {repeated[0]!r} runs {names.count(repeated[0])} times in one forward pass (a shared "
            "module): the attention methods need one attention module per block"
        )
    return names


def select_blocks(count: int, blocks: int | Sequence[int] | None) -> list[int]:
    """The indices of the chosen blocks among ``count``: all (None), the last ``N``, or the listed ones.

    Example:
        >>> select_blocks(12, None)[-2:], select_blocks(12, 4), select_blocks(12, [0, -1])
        ([10, 11], [8, 9, 10, 11], [0, 11])
    """
    if blocks is None:
        return list(range(count))
    if isinstance(blocks, int):
        if blocks > count:
            raise CamscopeError(f"blocks={blocks}, but the model has {count} attention blocks")
        return list(range(count - blocks, count))
    chosen = []
    for index in blocks:
        if not -count <= index < count:
            raise CamscopeError(f"block {index} is out of range for a model with {count} attention blocks")
        chosen.append(index % count)
    if len(set(chosen)) != len(chosen):
        raise CamscopeError(f"blocks={list(blocks)} names a block twice")
    return sorted(chosen)


@dataclass
class AttentionCapture:
    """Hooks that capture the attention of some blocks during the forward passes inside the context.

    ``want`` says what each :class:`BlockAttention` gets: ``"qk"`` (queries and keys),
    ``"v"`` (values) and ``"grad"`` (the handle for ``dS/do``; downstream then runs on a copy of
    the attention output, so in-place operations after the attention cannot change it). Hooks
    act only in the thread that entered the context, hold the model's lock, and are removed on
    exit, exceptions included.
    """

    model: nn.Module
    names: list[str]
    want: set[str] | frozenset[str] = frozenset({"qk"})
    records: list[BlockAttention] = field(default_factory=list, init=False)
    _handles: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list, init=False)

    def __enter__(self) -> AttentionCapture:
        model_lock(self.model).acquire()
        try:
            modules = dict(self.model.named_modules())
            for name in self.names:
                adapter = _adapter(modules[name])
                assert adapter is not None
                record = BlockAttention(name)
                self._handles.extend(adapter.install(name, modules[name], record, frozenset(self.want)))
                self.records.append(record)
        except BaseException:
            self.__exit__()
            raise
        return self

    def complete(self) -> list[BlockAttention]:
        """The records, each checked to hold what was asked for (after the forward pass)."""
        fields = {"qk": ("queries", "keys"), "v": ("values",), "grad": ("handle",)}
        for record in self.records:
            for wanted in self.want:
                if any(getattr(record, name) is None for name in fields[wanted]):
                    raise CamscopeError(f"the attention {record.name!r} did not run in the forward pass")
        return self.records

    def __exit__(self, *exc: object) -> None:
        try:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
        finally:
            model_lock(self.model).release()


_TOKEN_ARGUMENTS = ("hidden_states", "x", "q_x", "input")


def _leaf(tensor: Tensor) -> Tensor:
    """A copy of the tokens that starts a new graph (a leaf requiring grad, copied so in-place ops stay legal)."""
    return tensor.detach().requires_grad_(True).clone()


@contextmanager
def gradients_from(model: nn.Module, blocks: Sequence[str], every_block: bool = False) -> Iterator[None]:
    """Autograd off for the forward passes inside, switched on where the first of ``blocks`` takes its tokens.

    Nothing below the first block is recorded; the pass may run under ``no_grad`` (a method's
    ``ctx.forward``, which reads the outputs as the target does and calls a model of several
    inputs with the others): the hook switches autograd on until that ``no_grad`` ends, so the
    outputs it returns carry the graph. With ``every_block``, each block's input tokens
    start a graph of their own: a score read from one block's tokens then depends, through
    autograd, only on that block (LeGrad differentiates each block's score with respect to that
    block's attention, so one backward of the sum of all blocks' scores gives every block its own
    gradient). Grad mode is restored on exit; hooks act only in this thread and are removed.
    """
    modules = dict(model.named_modules())

    def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        torch.set_grad_enabled(True)
        if args and isinstance(args[0], Tensor):
            return (_leaf(args[0]), *args[1:]), kwargs
        key = next((k for k in _TOKEN_ARGUMENTS if isinstance(kwargs.get(k), Tensor)), None)
        if key is None:
            raise CamscopeError(
                f"the block {_m.__class__.__name__} takes no token tensor the attention methods can read"
            )
        return args, {**kwargs, key: _leaf(kwargs[key])}

    chosen = list(blocks) if every_block else list(blocks[:1])
    handles = [modules[name].register_forward_pre_hook(owned_by_this_thread(hook), with_kwargs=True) for name in chosen]
    try:
        with torch.no_grad():
            yield
    finally:
        for handle in handles:
            handle.remove()


def block_name(attention: str) -> str:
    """The block around an attention module: its parent (``blocks.3`` for ``blocks.3.attn``)."""
    parent = attention.rpartition(".")[0]
    if not parent:
        raise CamscopeError(f"the attention {attention!r} is not inside a block: the attention methods read blocks")
    return parent


def token_layout(ctx: CamContext, tokens: int) -> tuple[int, int, int]:
    """``(prefix, gh, gw)``: the prefix tokens (class, registers) and the patch grid of ``tokens`` tokens.

    The grid of the explainer's layer is used when it fits (so ``grid=`` and ``prefix_tokens=``
    given to ``explain`` apply), else it is inferred as the engine infers token grids.
    """
    if ctx.activations.ndim == 4:
        gh, gw = (int(size) for size in ctx.activations.shape[-2:])
        if 0 <= tokens - gh * gw <= _MAX_PREFIX:
            return tokens - gh * gw, gh, gw
    empty = torch.empty(1, tokens, 1, device="meta")
    grid = to_channels_first(empty, ctx.inputs.shape, "attention tokens", ctx.model, layout="tokens")
    gh, gw = int(grid.shape[-2]), int(grid.shape[-1])
    return tokens - gh * gw, gh, gw


def common_tokens(records: Sequence[BlockAttention]) -> int:
    """The token count ``N`` shared by the captured blocks."""
    counts = sorted({record.tokens for record in records})
    if len(counts) != 1:
        raise CamscopeError(
            f"the attention blocks see different numbers of tokens ({counts}): the attention methods need the same "
            "tokens in every block (no token merging or pruning)"
        )
    return counts[0]


def head_pooling(model: nn.Module, prefix: int) -> str:
    """How the model's head reads the last block's tokens: ``"token"`` (the class token), ``"mean"`` (of the patch tokens) or another way.

    torchvision and transformers' CLIP read the class token; timm and open_clip say how
    (``global_pool`` / ``pool_type``); another model is taken to read its class token when it
    has prefix tokens, else the mean of its tokens.
    """
    return _known_pooling(model) or ("token" if prefix > 0 else "mean")


def _known_pooling(model: nn.Module) -> str:
    for module in model.modules():
        kind, home = type(module).__name__, type(module).__module__
        pool = _value(module, "global_pool")
        if home.startswith("timm.") and isinstance(pool, str):
            if _value(module, "attn_pool") is not None:
                return "attention pooling (global_pool='map')"
            return {"token": "token", "avg": "mean"}.get(pool, f"global_pool={pool!r}")
        if home.startswith("open_clip.") and kind == "VisionTransformer":
            if _value(module, "attn_pool") is not None:
                return "attention pooling"
            pool = str(_value(module, "pool_type"))
            return {"tok": "token", "avg": "mean"}.get(pool, f"pool_type={pool!r}")
        if home.startswith("torchvision.") and kind == "VisionTransformer":
            return "token"
        if home.startswith("transformers.models.clip.") and kind == "CLIPVisionTransformer":
            return "token"
    return ""


def readout_weights(model: nn.Module, prefix: int, tokens: int, method: str) -> Tensor:
    """The tokens the model's head reads (:func:`head_pooling`), as weights ``[N]``: the class token, or the mean of the patch tokens.

    Raises:
        CamscopeError: for a head that pools otherwise (attention pooling, max pooling).
    """
    pooling = head_pooling(model, prefix)
    weights = torch.zeros(tokens)
    if pooling == "token":
        weights[0] = 1.0
    elif pooling == "mean":
        weights[prefix:] = 1.0 / (tokens - prefix)
    else:
        raise CamscopeError(
            f"{method} follows the tokens that the model's head reads, the class token or the mean of the patch "
            f"tokens; this model's head uses {pooling}: use legrad, which reads each block through the model's head"
        )
    return weights


def explained_scores(target: Target, outputs: Tensor) -> list[Tensor]:
    """The scores ``[B]`` to explain: the target's, or the mean of its ``T`` components (one per aggregated map).

    A comparison target with ``[B, T]`` components and the mean before the ReLU gives one
    score, their mean (its gradient is the mean of their gradients); the other aggregations
    give one score per component, whose maps :meth:`AttentionMethod.combine` joins.
    """
    scores = target(outputs)
    if scores.ndim == 1:
        return [scores]
    if scores.shape[1] == 1 or target.aggregate == "mean-before-relu":
        return [scores.mean(dim=1)]
    return list(scores.unbind(dim=1))


class AttentionPass(PassHooks):
    """An attention method's hooks in one forward pass, and what they captured.

    ``names`` are the model's attention modules in execution order, ``chosen`` those read
    (``blocks=``); ``contexts`` the method's hooks, an :class:`AttentionCapture` first,
    entered in order and left in reverse on every path (an error passes through them, so a
    context may explain it). :meth:`outputs` keeps the outputs of the pass with their graph.
    """

    def __init__(self, names: list[str], chosen: list[str], contexts: Sequence[AbstractContextManager[Any]]) -> None:
        self.names, self.chosen = names, chosen
        self.contexts = list(contexts)
        self.graph_outputs: Tensor | None = None
        self._stack = ExitStack()

    def __enter__(self) -> AttentionPass:
        with ExitStack() as stack:
            for context in self.contexts:
                stack.enter_context(context)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def outputs(self, outputs: Tensor, batch: int) -> Tensor:
        del batch  # every row: the attention maps are read for the whole pass
        self.graph_outputs = outputs
        return outputs

    def records(self) -> list[BlockAttention]:
        """The captured blocks, each checked (:meth:`AttentionCapture.complete`)."""
        capture = self.contexts[0]
        assert isinstance(capture, AttentionCapture)
        return capture.complete()

    def require_outputs(self) -> Tensor:
        """The outputs of the pass (as the target reads them), with their graph."""
        if self.graph_outputs is None:
            raise CamscopeError("the forward pass of the attention method gave no outputs")
        return self.graph_outputs


class AttentionMethod(CamMethod):
    """Base class of the methods that read the attention of vision transformers.

    Their hooks (:meth:`hooks`) take part in the engine's one forward pass
    (:meth:`pass_hooks`), so a map costs that pass (and one backward where gradients are
    needed); a context made without the engine's pass (a dataset analysis) runs a pass of
    its own. The engine computes no gradients for them, and its layer only fixes the token
    grid. They return the signed map ``[B, gh, gw]`` over the patch grid, read from the
    chosen blocks' attention modules (the explanation's ``layer``).
    """

    uses_gradients = False
    aggregates_components = True
    reads_layer = False
    channel_weights = False
    declared_options: ClassVar[tuple[Option, ...]] = (BLOCKS,)

    #: The kind of :class:`AttentionPass` the method's hooks make.
    pass_type: ClassVar[type[AttentionPass]] = AttentionPass

    def hooks(
        self, model: nn.Module, names: list[str], chosen: list[str]
    ) -> list[AbstractContextManager[Any]]:  # pragma: no cover - abstract
        """The context managers that capture what the method reads of the ``chosen`` attention modules."""
        raise NotImplementedError

    def pass_hooks(self, model: nn.Module, inputs: Tensor, forward: Callable[[Tensor], Tensor]) -> AttentionPass:
        names = attention_layers(model, inputs, forward)
        chosen = [names[i] for i in select_blocks(len(names), self.options["blocks"])]
        return self.pass_type(names, chosen, self.hooks(model, names, chosen))

    def captured(self, ctx: CamContext) -> AttentionPass:
        """What the engine's pass captured, or, for a context without it, a forward pass of ``ctx.inputs`` of its own."""
        if isinstance(ctx.pass_hooks, AttentionPass):
            return ctx.pass_hooks
        hooks = self.pass_hooks(ctx.model, ctx.inputs, ctx.forward)
        with hooks:
            hooks.outputs(ctx.forward(ctx.inputs), ctx.inputs.shape[0])
        return hooks

    @staticmethod
    def combine(maps: list[Tensor], target: Target) -> Tensor:
        """One map from the maps of the explained scores (:func:`explained_scores`), by the target's aggregation."""
        return aggregate_maps(torch.stack(maps), target.aggregate)
