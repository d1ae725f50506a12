"""CAM methods: each computes channel (or pixel) weights, or a signed map.

A method receives a :class:`CamContext` with the captured activations
``A`` (``[B, K, *spatial]``) and, when it uses them, the gradients
``G = d score / d A`` of the target score. It returns weights broadcastable to
``A`` (``[B, K, 1, 1]`` for channel weights, ``[B, K, h, w]`` for pixel-wise
weights); the engine forms the signed map ``M = sum_k w_k * A_k``. Projection
methods without weights return the signed map directly.

New methods register with :func:`register_method`; the built-in ones live in
:mod:`camscope.methods`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from camscope.errors import CamscopeError
from camscope.options import Option, resolve_options
from camscope.targets.base import Target

__all__ = [
    "CamContext",
    "CamMethod",
    "CamResult",
    "PassHooks",
    "available_methods",
    "canonical_method_name",
    "describe_options",
    "display_name",
    "get_method",
    "method_class",
    "register_method",
]


@dataclass
class CamContext:
    """Everything a method may use for one batch at one layer.

    Attributes:
        model: the network (in eval mode, hooks installed for this call only).
        inputs: the input batch ``[B, C, H, W]`` (or ``[B, C, D, H, W]``).
        layer: the layer's dotted name.
        activations: ``A``, ``[B, K, *spatial]``, detached.
        gradients: ``d score / d A`` with the same shape, or None.
        outputs: the model's score tensor on the clean inputs, detached.
        target: the resolved target.
        scores: the target's scores on the clean inputs, detached (``[B]``).
        forward: runs the model on a batch with the capture hooks disabled
            and returns its score tensor (used by perturbation methods), without
            autograd; ``forward(x, grad=True)`` records autograd from ``x`` (a tensor
            that requires grad) to the scores, for methods that differentiate down to
            the input (FullGrad, guided backpropagation).
        gradients_at: recomputes ``(activations, gradients)`` at this layer for
            other inputs and the same target (used by smoothed methods), also for
            methods without ``uses_gradients``; ``gradients_at(x, target=t)`` scores
            them with another resolved target ``t`` (crops of the inputs in a batch
            of another size, as SESS runs them).
        options: method options given to ``explain``.
        activations_at: the activations at this layer for other inputs, one
            forward pass without autograd: ``activations_at(x)`` gives
            ``[N, K, *spatial]`` like ``activations``, ``activations_at(x, native=True)``
            the layer's output as the model produced it (e.g. ``[N, T, K]``
            tokens with the class token; used by DiffCAM for reference inputs).
        layer_output: for second-order methods, the layer's own output (e.g. ``[B, T, K]``
            tokens), the leaf of the gradients' graph: ``gradients`` can be differentiated
            with respect to it again.
        channels_first: brings a tensor shaped like the layer's own output (e.g.
            ``[B, T, K]`` tokens) to ``[B, K, *spatial]`` as ``activations`` are
            (used by methods that differentiate the layer's output themselves).
        pass_hooks: what the method's :meth:`CamMethod.pass_hooks` captured during the
            engine's forward pass (None where the method has none, or for a context made
            without the engine's pass, such as a dataset analysis's).
    """

    model: nn.Module
    inputs: Tensor
    layer: str
    activations: Tensor
    gradients: Tensor | None
    outputs: Tensor
    target: Target
    scores: Tensor
    forward: Callable[..., Tensor]
    gradients_at: Callable[..., tuple[Tensor, Tensor]]
    options: dict[str, Any] = field(default_factory=dict)
    activations_at: Callable[..., Tensor] | None = None
    channels_first: Callable[[Tensor], Tensor] | None = None
    layer_output: Tensor | None = None
    pass_hooks: PassHooks | None = None

    @property
    def spatial_dims(self) -> tuple[int, ...]:
        return tuple(range(2, self.activations.ndim))

    def require_gradients(self) -> Tensor:
        """The gradients ``G``, which the engine computes for every method with ``uses_gradients``."""
        if self.gradients is None:
            raise CamscopeError(f"no gradients were computed at layer {self.layer!r}: the method needs them")
        return self.gradients

    def expand(self, weights: Tensor) -> Tensor:
        """``[B, K]`` channel weights as ``[B, K, 1, ...]``, broadcastable to A."""
        return weights.reshape(*weights.shape, *([1] * len(self.spatial_dims)))


@dataclass
class CamResult:
    """What a method returns: ``weights`` broadcastable to A, or a signed ``raw`` map.

    ``read_from`` names the modules the map was read from where they are not the
    explainer's layer (the attention methods: the attention modules of the blocks); it
    becomes the explanation's ``layer``.

    ``extras`` holds what a method computes beside its map, by name (Guided Grad-CAM's
    pixel-level product, Deep Feature Factorization's concepts); the engine passes them
    on in :attr:`camscope.Explanation.extras`.
    """

    weights: Tensor | None = None
    raw: Tensor | None = None
    read_from: list[str] | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def signed_map(self, activations: Tensor) -> Tensor:
        """The signed map: ``raw``, or ``M = sum_k w_k A_k`` of the weights and ``activations`` ``[B, K, ...]``."""
        if self.raw is not None:
            return self.raw
        if self.weights is None:
            raise CamscopeError("a method returned neither weights nor a map")
        return (self.weights * activations).sum(dim=1)


class PassHooks:
    """What a method adds to the engine's own forward pass (:meth:`CamMethod.pass_hooks`).

    The engine enters it right before its forward pass (inside its own capture, under
    the model's lock, in the calling thread) and leaves it right after, on every path:
    a subclass installs its hooks in ``__enter__`` and removes them in ``__exit__``. The
    engine then hands it the outputs of the pass as the target reads them
    (:meth:`outputs`), and the method finds this object again in ``CamContext.pass_hooks``,
    so what it needs from a forward pass costs none of its own.

    ``extra_rows``: the hooks append rows of their own after the batch's (LeGrad reads
    each block through the model's head as extra rows); the engine's capture then keeps
    the batch's rows, and :meth:`outputs` must return them.
    """

    extra_rows: ClassVar[bool] = False

    def __enter__(self) -> PassHooks:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def outputs(self, outputs: Tensor, batch: int) -> Tensor:
        """The outputs of the engine's pass (as the target reads them, with their graph) -> the batch's ``batch`` rows."""
        del batch  # the default keeps every row
        return outputs


class CamMethod:
    """Base class of CAM methods.

    Class attributes:
        name: the registry name (``method="..."``).
        display_name: the name as people write it in papers and figures (``"Grad-CAM++"``).
        declared_options: the method's options (:class:`camscope.options.Option`):
            ``__init__`` validates the given ones and fills the defaults, so
            ``self.options[name]`` always holds a valid value.
        uses_gradients: whether the engine must compute ``d score / d A``.
        linear_in_gradient: the weights are linear in G, so the weights of an
            average of scores equal the average of the weights; the engine then
            back-propagates the averaged score once.
        second_order: the engine keeps the graph of the gradients (``create_graph``) and
            gives the method ``CamContext.layer_output``, so that it can take Hessian-vector
            products (ShapleyCAM).
        fusion: how the maps of several layers are combined when the user gives
            no ``fuse=`` (None: their mean; RefineCAM: ``"product"``).
        aggregates_components: the method makes the map of each component of a comparison
            target (``[B, T]`` scores, Finer-CAM's ``T`` references) and aggregates them itself,
            from one pass (the attention methods); a gradient-free ``finer-*`` method without
            it runs once per component for the aggregations after the ReLU.
        reads_layer: whether the map is read at the explainer's layer. The attention
            methods read the attention of the blocks (the layer only fixes the token
            grid), so several layers are refused for them.
        channel_weights: whether the map is a weighting of the layer's channels,
            ``M = sum_k w_k A_k`` (``CamResult.weights``, per channel or per position as
            HiResCAM's), with the method's default options, so that each channel's
            contribution ``sum_ij w_k A_k^ij`` (``Explanation.contributions``) is defined:
            what the importance of integrated feature analysis is made of (``camscope
            analyze`` takes only these methods). Eigen-CAM, FullGrad and the attention
            methods, among others, make their maps another way.

    A subclass that overrides :meth:`option_names` without declaring options
    (the older way) still gets those names accepted, unchecked and without defaults.

    Example:
        >>> from camscope.options import Option
        >>> class ScaledGradCAM(CamMethod):
        ...     name = "scaled-gradcam"
        ...     declared_options = (Option("scale", float, 1.0, "multiplies the weights", positive=True),)
        ...     def __call__(self, ctx):
        ...         weights = ctx.require_gradients().mean(dim=ctx.spatial_dims, keepdim=True)
        ...         return CamResult(weights=self.options["scale"] * weights)
        >>> ScaledGradCAM().options, ScaledGradCAM(scale=2).options
        ({'scale': 1.0}, {'scale': 2.0})
    """

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    uses_gradients: ClassVar[bool] = True
    linear_in_gradient: ClassVar[bool] = False
    second_order: ClassVar[bool] = False
    fusion: ClassVar[str | None] = None
    aggregates_components: ClassVar[bool] = False
    reads_layer: ClassVar[bool] = True
    channel_weights: ClassVar[bool] = True
    declared_options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, **options: Any) -> None:
        declared = {option.name for option in self.declared_options}
        legacy = tuple(name for name in self.option_names() if name not in declared)
        self.options: dict[str, Any] = resolve_options(f"method {self.name!r}", self.declared_options, options, legacy)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The names of the declared options."""
        return tuple(option.name for option in cls.declared_options)

    def prepare_target(self, target: Target, model: nn.Module) -> Target:
        """The target this method explains, given the user's (before any forward pass).

        The identity; methods that change what is explained (the ``finer-*``
        shortcuts compare the class with similar classes) wrap it here.
        """
        del model  # the identity needs no model; overrides may read it
        return target

    def pass_hooks(self, model: nn.Module, inputs: Tensor, forward: Callable[[Tensor], Tensor]) -> PassHooks | None:
        """Hooks this method adds to the engine's forward pass of ``inputs`` (None: none, the default).

        ``forward`` runs the model on a batch with the engine's hooks silent and returns
        what the target reads (``CamContext.forward``), e.g. to trace which modules run.
        """
        del model, inputs, forward  # no hooks by default; overrides read them
        return None

    def __call__(self, ctx: CamContext) -> CamResult:  # pragma: no cover - abstract
        raise NotImplementedError


_REGISTRY: dict[str, type[CamMethod]] = {}


def _registry() -> dict[str, type[CamMethod]]:
    """The registry, with the built-in methods in it.

    The built-in methods use the engine, so the engine cannot import them: they
    register when their package is first imported, here on the first lookup
    (as a plugin would), whatever the caller imported before.
    """
    importlib.import_module("camscope.methods")
    return _REGISTRY


def register_method(cls: type[CamMethod]) -> type[CamMethod]:
    """Class decorator that makes a method available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name")
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> dict[str, type[CamMethod]]:
    """Registered methods by name."""
    return dict(sorted(_registry().items()))


_ALIASES = {"gradcamplusplus": "gradcampp", "smoothgradcamplusplus": "smoothgradcampp"}


def _key(name: str) -> str:
    """A method name compared without case and punctuation (``++`` reads ``pp``)."""
    text = str(name).lower().replace("++", "pp")
    key = "".join(ch for ch in text if ch.isalnum())
    return _ALIASES.get(key, key)


def canonical_method_name(name: str) -> str:
    """The registered name of a method, whatever its spelling: case, ``-``, ``_``, spaces and ``++`` forgiven.

    Example:
        >>> canonical_method_name("GradCAM"), canonical_method_name("Grad-CAM++"), canonical_method_name("Finer_GradCAM")
        ('gradcam', 'gradcampp', 'finer-gradcam')
    """
    return method_class(name).name


def method_class(name: str) -> type[CamMethod]:
    """The registered method class of a name (case, punctuation and common spellings forgiven)."""
    key = _key(name)
    found = [cls for registered, cls in _registry().items() if _key(registered) == key]
    if not found:
        import difflib

        close = difflib.get_close_matches(str(name).lower().replace("_", "-"), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CamscopeError(f"unknown method {name!r}{hint} (available: {', '.join(sorted(_REGISTRY))})")
    return found[0]


def display_name(method: str | type[CamMethod] | CamMethod) -> str:
    """The method as people write it (``"Grad-CAM++"`` for ``gradcampp``); unknown names are returned as given.

    Example:
        >>> import camscope
        >>> display_name("gradcampp"), display_name("finer-gradcam"), display_name("my-own")
        ('Grad-CAM++', 'Finer-CAM (Grad-CAM)', 'my-own')
    """
    if isinstance(method, str):
        try:
            cls = method_class(method)
        except CamscopeError:
            return method
    else:
        cls = method if isinstance(method, type) else type(method)
    return cls.display_name or cls.name


def get_method(method: str | CamMethod, **options: Any) -> CamMethod:
    """A method instance from a name (with options) or an instance."""
    if isinstance(method, CamMethod):
        if options:
            raise CamscopeError("options were given with a method instance: pass them to its constructor")
        return method
    return method_class(method)(**options)


def describe_options(method: str | type[CamMethod] | CamMethod) -> list[Option]:
    """The declared options of a method (a registered name, a method class or an instance).

    Example:
        >>> import camscope
        >>> [(option.name, option.default) for option in describe_options("smoothgradcampp")]
        [('samples', 4), ('std', 0.3), ('generator', None)]
    """
    if isinstance(method, str):
        cls = method_class(method)
    elif isinstance(method, CamMethod):
        cls = type(method)
    elif isinstance(method, type) and issubclass(method, CamMethod):
        cls = method
    else:
        raise CamscopeError(f"describe_options takes a method name, class or instance, not {type(method).__name__}")
    return list(cls.declared_options)
