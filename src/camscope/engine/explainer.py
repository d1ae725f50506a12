"""``explain`` and ``Explainer``: one forward, a backward down to the layer, a map."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from camscope.engine.augmentation import aug_smoothed
from camscope.engine.backward import check_second_derivative, in_place_failure, model_backward
from camscope.engine.capture import (
    LayerCapture,
    LayerSpec,
    default_layer,
    model_state,
    output_tensor,
    resolve_layers,
    to_channels_first,
    validate_inputs,
)
from camscope.engine.explanation import Explanation
from camscope.engine.inputs import BoundInputs
from camscope.engine.levels import LevelSpec, check_levels, combine_levels
from camscope.engine.maps import (
    MAP_ORDERS,
    aggregate_maps,
    feature_mask,
    final_maps,
    normalize_maps,
    scaled_maps,
    upsample,
)
from camscope.engine.method import CamContext, CamMethod, CamResult, PassHooks, get_method
from camscope.engine.projection import first_component_projection
from camscope.errors import CamscopeError
from camscope.targets.base import Target, as_target

__all__ = [
    "FUSIONS",
    "Explainer",
    "Explanation",
    "explain",
    "normalize_maps",
    "upsample",
]

#: How the maps of several layers are combined (``fuse=``).
FUSIONS = ("mean", "max", "product")

# Old private names, kept while other modules move to camscope.engine.maps.


class Explainer:
    """A reusable explainer: a model, layer(s) and a method.

    Args:
        model: any ``torch.nn.Module`` returning scores (a tensor, a tuple, a
            dict with ``logits``/``out``, or an object with ``.logits``), or
            what the target reads (a detector's list of dicts for
            :class:`camscope.BoxTarget`; see :meth:`camscope.targets.base.Target.read`).
        layer: a dotted name, a module, or a list of them; None picks a default
            (see :func:`camscope.engine.capture.default_layer`).
        method: a registered method name (``camscope.available_methods()``) or instance.
        fuse: how several layers are fused: ``"mean"``, ``"max"`` or ``"product"``
            of the normalised maps (None: the method's choice, else the mean;
            ``refinecam`` multiplies them).
        eval_mode: put the model in eval mode during the call (restored after). With
            ``eval_mode=False`` the model runs in the mode it is in: a BatchNorm layer in
            train mode then normalises with the batch's statistics and updates its
            running statistics (``running_mean``, ``running_var``, ``num_batches_tracked``)
            on every call, as any forward pass in train mode does; dropout is active too.
        layout: activation layout, ``"auto"``, ``"nchw"``, ``"nhwc"`` or ``"tokens"``.
        grid: the token grid ``(h, w)`` when it cannot be inferred.
        prefix_tokens: how many leading tokens (class, registers) to drop.
        map_order: how ``maps`` are made from the signed map: ``"relu-first"`` (ReLU at the
            layer's resolution, then upsampling, as the Grad-CAM paper and the peer libraries
            do) or ``"upsample-first"`` (camscope 0.1.0); see :func:`camscope.engine.maps.final_maps`.
            ``raw`` and S-CAMs (``scale=``) keep their signed values either way.
        levels: how a layer that returns a dict of feature levels (a feature pyramid) is
            explained: ``"smallest-grid"`` (default), ``"largest-grid"``, ``"each"`` or a
            function of the dict (see :mod:`camscope.engine.levels`).
        explained_input: for a model of several inputs (``inputs`` a tuple, called
            ``model(*inputs)``, or a dict, called ``model(**inputs)``): the index or key of
            the input to explain, the others held fixed (default: the first; see
            :mod:`camscope.engine.inputs`). The layer must lie on that input's path.
        eigen_smooth: replace the sum over channels ``sum_k w_k A_k`` by the projection of
            the weighted activations ``w_k A_k`` on their first principal component
            (pytorch-grad-cam's ``eigen_smooth``; channels centred, sign fixed so that the
            map correlates with ``sum_k w_k A_k``); for methods with weights.
        aug_smooth: average the maps over six augmentations of the inputs, flipped
            left-right or not and multiplied by 0.9, 1 or 1.1 (pytorch-grad-cam's
            ``aug_smooth``; see :mod:`camscope.engine.augmentation`); six times the cost.
        **options: options of the method.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10)
        >>> with camscope.Explainer(model, layer="layer4", method="gradcam") as explainer:
        ...     explanation = explainer(torch.randn(2, 3, 64, 64), target=[3, 5])
        >>> explanation.maps.shape, explanation.classes.tolist()
        (torch.Size([2, 64, 64]), [3, 5])
    """

    def __init__(
        self,
        model: nn.Module,
        layer: LayerSpec | None = None,
        method: str | CamMethod = "gradcam",
        *,
        fuse: str | None = None,
        eval_mode: bool = True,
        layout: str = "auto",
        grid: tuple[int, int] | None = None,
        prefix_tokens: int | None = None,
        map_order: str = "relu-first",
        levels: LevelSpec = "smallest-grid",
        explained_input: int | str | None = None,
        eigen_smooth: bool = False,
        aug_smooth: bool = False,
        **options: Any,
    ) -> None:
        if fuse is not None and fuse not in FUSIONS:
            raise CamscopeError(f"fuse must be one of {', '.join(map(repr, FUSIONS))}, got {fuse!r}")
        for flag, value in (("eigen_smooth", eigen_smooth), ("aug_smooth", aug_smooth)):
            if not isinstance(value, bool):
                raise CamscopeError(f"{flag} must be True or False, got {value!r}")
        if not isinstance(model, nn.Module):
            raise CamscopeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.method = get_method(method, **options)
        self.layer = layer
        self.fuse = fuse
        self.eval_mode = eval_mode
        self.layout = layout
        self.grid = grid
        self.prefix_tokens = prefix_tokens
        if map_order not in MAP_ORDERS:
            raise CamscopeError(f"map_order must be one of {', '.join(MAP_ORDERS)}, got {map_order!r}")
        self.map_order = map_order
        self.levels = check_levels(levels)
        self.explained_input = explained_input
        self.eigen_smooth = eigen_smooth
        self.aug_smooth = aug_smooth
        if layer is not None:
            resolve_layers(model, layer)  # fail early on a wrong name

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc: object) -> None:
        # Hooks live only inside a call; nothing is left to remove.
        return None

    def __call__(
        self, inputs: Any, target: Any = None, *, features: Tensor | None = None, scale: Any = None
    ) -> Explanation:
        """Explain a batch.

        Args:
            inputs: ``[B, C, H, W]`` (or ``[B, C, D, H, W]``) on the model's device; for a
                model of several inputs a tuple or dict of them (see ``explained_input``).
            target: None (predicted class), an int, one int per sample, or a
                :class:`~camscope.targets.base.Target`.
            features: a channel mask ``[K]`` or ``[B, K]`` (bool or float) that
                multiplies the weighted features before the sum (FS-CAMs).
            scale: a common intensity scale (S-CAMs): an ``Analysis`` from
                ``camscope.analyze`` (its default scale) or ``Analysis.scale(...)``;
                ``maps`` are then ``tanh(a * upsampled raw + b)``, signed, in (-1, 1).
        """
        bound = self._bind(inputs)
        x = validate_inputs(self.model, inputs if bound is None else bound.explained, check_channels=bound is None)
        wanted = as_target(target).prepare(self.model)
        rows, wanted = wanted.expand(partial(self._predict, x, wanted, bound))
        if rows is not None:
            x = x[rows.to(x.device)]
            bound = None if bound is None else bound.select(rows)
        # The default layer is traced on the first sample (the other inputs' first rows with it).
        forward = None if bound is None else partial(bound.select(torch.zeros(1, dtype=torch.long)).call, self.model)
        layer = self.layer if self.layer is not None else default_layer(self.model, x, forward)
        layers = resolve_layers(self.model, layer)
        if len(layers) > 1 and not self.method.reads_layer:
            raise CamscopeError(
                f"method {self.method.name!r} reads the attention of the model's blocks (choose them with blocks=), "
                "not a layer: give one layer (it only fixes the token grid) or none"
            )
        prepared = self.method.prepare_target(wanted, self.model)
        with model_state(self.model, self.eval_mode), torch.inference_mode(False):
            if bound is not None:
                # Autograd then marks what depends on the explained input (flags restored by model_state).
                for parameter in self.model.parameters():
                    parameter.requires_grad_(False)
            if self.aug_smooth:
                if bound is not None:
                    raise CamscopeError("aug_smooth augments one image tensor: it does not apply to several inputs")
                explanation = aug_smoothed(partial(self._explain_layers, layers=layers, features=features), x, prepared)
            else:
                explanation = self._explain_layers(x, prepared, layers, features, bound)
        if scale is not None:
            explanation.maps = scaled_maps(scale, explanation, x.shape[2:])
        return explanation

    def _bind(self, inputs: Any) -> BoundInputs | None:
        """The inputs of a model of several inputs (a tuple or a dict), with the explained one chosen."""
        if isinstance(inputs, (tuple, Mapping)):
            return BoundInputs.of(inputs, self.explained_input)
        if self.explained_input is not None:
            raise CamscopeError(
                "explained_input= picks one of several inputs, but inputs is one tensor: pass a tuple or a dict"
            )
        if isinstance(inputs, list):
            raise CamscopeError(
                "inputs is a list: pass one batch tensor [B, C, H, W] (torch.stack(images)), or a tuple or dict "
                "for a model of several inputs"
            )
        return None

    def _predict(self, inputs: Tensor, target: Target, bound: BoundInputs | None) -> Tensor:
        """The outputs (as the target reads them) of a clean forward pass, without autograd."""
        with model_state(self.model, self.eval_mode), torch.no_grad():
            return target.read(self._model_forward(inputs, bound)).detach()

    def _explain_layers(
        self,
        inputs: Tensor,
        target: Target,
        layers: list[tuple[str, nn.Module]],
        features: Tensor | None,
        bound: BoundInputs | None = None,
    ) -> Explanation:
        """One explanation of ``inputs`` at the layers, several layers fused."""
        per_layer = self._explain(inputs, layers, target, features, bound)
        if len(per_layer) == 1:
            return per_layer[0]
        return self._fused([str(e.layer) for e in per_layer], per_layer, inputs)

    def _explain(
        self,
        inputs: Tensor,
        layers: list[tuple[str, nn.Module]],
        target: Target,
        features: Tensor | None,
        bound: BoundInputs | None = None,
    ) -> list[Explanation]:
        method = self.method
        need_grad = method.uses_gradients
        source = None if bound is None else bound.name
        # Fused attention kernels have no second derivative: second-order methods record the composite one.
        kernels = sdpa_kernel(SDPBackend.MATH) if method.second_order else nullcontext()
        with LayerCapture(layers, need_grad=need_grad, model=self.model, source=source) as capture:
            # The method's own hooks (the attention methods') take part in this one forward pass.
            hooks = method.pass_hooks(self.model, inputs, self._forward_of(capture, target, bound))
            if hooks is not None and hooks.extra_rows:
                capture.batch_rows = inputs.shape[0]
            with kernels, hooks or nullcontext():
                logits, resolved, scores = self.forward_pass(
                    inputs, capture, target, need_grad, bound=bound, hooks=hooks
                )
            native = {key: t for name, _ in layers for key, t in capture.captured(name).items()}
            _check_batch(native, inputs.shape[0])
            gradients = self._gradients(scores, native, method, resolved.aggregate) if need_grad else {}
            # A snapshot: a method that runs other inputs through the hooks (gradients_at) must not change the
            # activations that the next layer's explanation reads.
            clean = dict(capture.activations)
            explanations = []
            for unit in self._units(layers, capture):
                activations = self._unit_tensor(clean, unit, capture, inputs)
                grads = None
                if need_grad:
                    components = next(iter(gradients.values())).shape[0]
                    grads = torch.stack(
                        [self._unit_tensor(_component(gradients, r), unit, capture, inputs) for r in range(components)]
                    )
                context = self._context(inputs, unit, capture, activations, logits, resolved, scores, bound)
                context.pass_hooks = hooks
                results = self._run_method(context, grads)
                # Checked with the map, in one host synchronisation: a method can turn NaN gradients into a
                # finite map (Eigen-Grad-CAM's projection gave zeros).
                finite_grads = None if grads is None else torch.isfinite(grads).all()
                explanations.append(self._assemble(results, context, resolved, inputs, unit, features, finite_grads))
        return explanations

    def _units(self, layers: list[tuple[str, nn.Module]], capture: LayerCapture) -> list[str]:
        """What is explained: each layer, or each level of a layer of feature levels with ``levels="each"``."""
        units: list[str] = []
        for name, _ in layers:
            if name in capture.levels and self.levels == "each":
                units.extend(f"{name}[{key}]" for key in capture.levels[name])
            else:
                units.append(name)
        return units

    def _unit_tensor(self, tensors: Mapping[str, Tensor], unit: str, capture: LayerCapture, inputs: Tensor) -> Tensor:
        """A unit's captured tensor (or its gradient) as ``[B, K, *spatial]``; feature levels brought to one grid."""
        if unit in capture.levels:
            levels = {key: tensors[f"{unit}[{key}]"] for key in capture.levels[unit]}
            return combine_levels(levels, self.levels, unit)
        return self.channels_first(tensors[unit], inputs, unit)

    def _context(
        self,
        inputs: Tensor,
        name: str,
        capture: LayerCapture,
        activations: Tensor,
        logits: Tensor,
        target: Target,
        scores: Tensor,
        bound: BoundInputs | None = None,
    ) -> CamContext:
        """What the method sees at one layer; gradients are filled in per score component.

        Second-order methods also get the layer's own output, still in the graph (not for feature levels).
        """
        layer_output = capture.activations.get(name) if self.method.second_order else None
        return CamContext(
            model=self.model,
            inputs=inputs,
            layer=name,
            activations=activations.detach(),
            gradients=None,
            outputs=logits.detach(),
            target=target,
            scores=(scores.mean(dim=1) if scores.ndim == 2 else scores).detach(),
            forward=self._forward_of(capture, target, bound),
            gradients_at=partial(self.gradients_at, name=name, capture=capture, target=target, bound=bound),
            activations_at=partial(self.activations_at, name=name, capture=capture, bound=bound),
            channels_first=partial(self.channels_first, inputs=inputs, name=name),
            layer_output=layer_output,
        )

    def _forward_of(self, capture: LayerCapture, target: Target, bound: BoundInputs | None) -> Any:
        """``CamContext.forward``: the model on other inputs, hooks silent, as ``target`` reads its outputs."""
        return partial(self.plain_forward, capture=capture, target=target, bound=bound)

    def forward_pass(
        self,
        inputs: Tensor,
        capture: LayerCapture,
        target: Target,
        need_grad: bool,
        *,
        bound: BoundInputs | None = None,
        hooks: PassHooks | None = None,
    ) -> tuple[Tensor, Target, Tensor]:
        """One forward pass: autograd off until the first captured layer when gradients are needed.

        ``hooks`` (a method's :class:`~camscope.engine.method.PassHooks`, already entered) get the
        outputs as the target reads them and give back the batch's rows.
        """
        outputs = self._hooked_forward(inputs, bound)
        capture.check_calls()
        logits = target.read(outputs)
        if hooks is not None:
            logits = hooks.outputs(logits, inputs.shape[0])
        resolved = target.resolve(logits.detach())
        with torch.set_grad_enabled(need_grad):
            scores = resolved(logits)
        if need_grad and not scores.requires_grad:
            # The model switched autograd off after the layer (an internal no_grad): run with autograd on.
            capture.reset()
            with torch.enable_grad():
                outputs = self._model_forward(inputs, bound)
                logits = resolved.read(outputs)
                if hooks is not None:
                    logits = hooks.outputs(logits, inputs.shape[0])
                scores = resolved(logits)
            capture.check_calls()
            if not scores.requires_grad:
                raise CamscopeError(
                    "the target score does not depend on the layer's activations through autograd "
                    "(the model may detach or run under no_grad): choose another layer or a gradient-free method"
                )
        return logits, resolved, scores

    def _hooked_forward(self, inputs: Tensor, bound: BoundInputs | None = None) -> Any:
        """The model's outputs without autograd below the captured layers (their hooks switch it on).

        With several inputs, autograd runs from the explained input, which requires grad, so that the
        hooks see which calls of a layer depend on it (the parameters' flags are off during the call).
        """
        if bound is not None:
            with torch.enable_grad():
                # A clone of the marked leaf, so that a model may change its input in place.
                return self._model_forward(inputs.detach().requires_grad_(True).clone(), bound)
        grad_mode = torch.is_grad_enabled()
        try:
            with torch.no_grad():
                return self._model_forward(inputs)
        finally:
            torch.set_grad_enabled(grad_mode)

    def _model_forward(self, inputs: Tensor, bound: BoundInputs | None = None) -> Any:
        try:
            return self.model(inputs) if bound is None else bound.call(self.model, inputs)
        except CamscopeError:
            raise
        except (RuntimeError, ValueError, AssertionError) as error:
            raise CamscopeError(
                f"the model failed on inputs of shape {list(inputs.shape)}: {error}. "
                "Check the image size and channels the model expects"
            ) from error

    def _gradients(
        self, scores: Tensor, native: dict[str, Tensor], method: CamMethod, aggregation: str = "mean-before-relu"
    ) -> dict[str, Tensor]:
        """``d score / d A`` per layer with a leading component axis: ``[R, B, ...]``.

        ``R = 1`` unless the target has component scores ``[B, R]`` and either the
        method's weights are not linear in the gradient or the components' maps are
        not averaged before the ReLU (a max, or a mean after the ReLU, needs each map).
        """
        names = list(native)
        tensors = [native[name] for name in names]
        shortcut = method.linear_in_gradient and aggregation == "mean-before-relu"
        create_graph = method.second_order
        if create_graph:
            check_second_derivative(scores, tensors, names, method.name)
        grads: list[Tensor | None]
        with model_backward(names):
            if scores.ndim == 1 or shortcut:
                total = scores.mean(dim=1).sum() if scores.ndim == 2 else scores.sum()
                grads = [
                    None if g is None else g.unsqueeze(0)
                    for g in torch.autograd.grad(total, tensors, allow_unused=True, create_graph=create_graph)
                ]
            else:
                grads = _component_gradients(scores, tensors, create_graph)
        components = 1 if scores.ndim == 1 or shortcut else scores.shape[1]
        return {
            name: torch.zeros_like(tensor).expand(components, *tensor.shape) if grad is None else grad
            for name, grad, tensor in zip(names, grads, tensors)
        }

    def channels_first(self, tensor: Tensor, inputs: Tensor, name: str) -> Tensor:
        """A captured tensor as ``[B, K, *spatial]`` under this explainer's layout settings."""
        return to_channels_first(tensor, inputs.shape, name, self.model, self.layout, self.grid, self.prefix_tokens)

    def _run_method(self, context: CamContext, grads: Tensor | None) -> list[CamResult]:
        """The method's result, once per score component of the gradients (``[R, B, K, ...]``, channels first)."""
        if grads is None:
            return [self.method(context)]
        results = []
        for component in grads:
            context.gradients = component
            results.append(self.method(context))
        return results

    def _assemble(
        self,
        results: list[CamResult],
        context: CamContext,
        target: Target,
        inputs: Tensor,
        name: str,
        features: Tensor | None,
        finite_grads: Tensor | None = None,
    ) -> Explanation:
        activations = context.activations
        raws: list[Tensor] = []
        weights_list: list[Tensor] = []
        contributions_list: list[Tensor] = []
        for result in results:
            if result.raw is not None:
                if features is not None or self.eigen_smooth:
                    given = "features=" if features is not None else "eigen_smooth=True"
                    raise CamscopeError(f"method {self.method.name!r} has no channel weights, so {given} cannot apply")
                raws.append(result.raw)
                continue
            if result.weights is None:
                raise CamscopeError(f"method {self.method.name!r} returned neither weights nor a map")
            weighted = result.weights * activations
            if features is not None:
                weighted = weighted * feature_mask(features, activations)
            contributions_list.append(weighted.sum(dim=context.spatial_dims))
            raws.append(first_component_projection(weighted) if self.eigen_smooth else weighted.sum(dim=1))
            if all(size == 1 for size in result.weights.shape[2:]):
                weights_list.append(result.weights.flatten(1))
        raw = aggregate_maps(torch.stack(raws), target.aggregate)
        weights = torch.stack(weights_list).mean(dim=0) if len(weights_list) == len(results) else None
        contributions = torch.stack(contributions_list).mean(dim=0) if contributions_list else None
        finite = torch.isfinite(raw).all()
        if not bool(finite if finite_grads is None else finite & finite_grads):  # the one sync of the check
            culprit = "scores" if not bool(torch.isfinite(context.scores).all()) else "activations or gradients"
            raise CamscopeError(
                f"the {self.method.name} map at layer {name!r} has NaN or infinite values, or its gradients do: "
                f"the model's {culprit} are not finite for these inputs (check the model on them, e.g. a division "
                "by zero or an overflow after the layer; a float16 model may need float32)"
            )
        maps = final_maps(raw, inputs.shape[2:], self.map_order)
        return Explanation(
            raw=raw.detach(),
            maps=maps.detach(),
            weights=None if weights is None else weights.detach(),
            contributions=None if contributions is None else contributions.detach(),
            logits=context.outputs,
            targets=target,
            scores=context.scores,
            method=self.method.name,
            layer=_read_from(results, name),
            activations=activations,
            options=dict(self.method.options),
            extras=_extras(results),
        )

    def plain_forward(
        self,
        inputs: Tensor,
        capture: LayerCapture,
        target: Target | None = None,
        *,
        bound: BoundInputs | None = None,
        grad: bool = False,
    ) -> Tensor:
        """The model's scores on other inputs (as ``target`` reads them), hooks silent; autograd only with ``grad``."""
        capture.enabled = False
        try:
            with torch.set_grad_enabled(grad):
                outputs = self._model_forward(inputs, bound)
                return output_tensor(outputs) if target is None else target.read(outputs)
        finally:
            capture.enabled = True

    def activations_at(
        self,
        inputs: Tensor,
        name: str,
        capture: LayerCapture,
        native: bool = False,
        *,
        bound: BoundInputs | None = None,
    ) -> Tensor:
        """Activations at one layer for other inputs (detached; channels first unless ``native``)."""
        capture.reset()
        self._hooked_forward(inputs, bound)
        capture.check_calls()
        if native and name in capture.activations:
            return capture.activations[name].detach()
        return self._unit_tensor(capture.activations, name, capture, inputs).detach()

    def gradients_at(
        self,
        inputs: Tensor,
        name: str,
        capture: LayerCapture,
        target: Target,
        *,
        bound: BoundInputs | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Activations and gradients at one layer for other inputs, the same resolved target (or ``target``)."""
        capture.reset()
        need_grad, capture.need_grad = capture.need_grad, True  # also for methods the engine gave no gradients
        try:
            outputs = self._hooked_forward(inputs, bound)
        finally:
            capture.need_grad = need_grad
        keys = [f"{name}[{key}]" for key in capture.levels[name]] if name in capture.levels else [name]
        with torch.enable_grad():
            scores = target(target.read(outputs))
            if scores.ndim == 2:
                scores = scores.mean(dim=1)
            tensors = [capture.activations[key] for key in keys]
            with model_backward([name]):
                found = torch.autograd.grad(scores.sum(), tensors, allow_unused=True)
        grads = {key: torch.zeros_like(t) if g is None else g for key, t, g in zip(keys, tensors, found)}
        activations = {key: t.detach() for key, t in zip(keys, tensors)}
        return (
            self._unit_tensor(activations, name, capture, inputs),
            self._unit_tensor(grads, name, capture, inputs),
        )

    def _fused(self, names: list[str], per_layer: list[Explanation], inputs: Tensor) -> Explanation:
        """One explanation of several layers: their normalised maps fused, their raw maps rescaled and averaged."""
        size = inputs.shape[2:]
        stacked = torch.stack([explanation.maps for explanation in per_layer])
        fuse = self.fuse or self.method.fusion or "mean"
        if fuse == "product":
            product = stacked.prod(dim=0)
            return self._fused_explanation(names, per_layer, product, normalize_maps(product))
        maps = stacked.mean(dim=0) if fuse == "mean" else stacked.max(dim=0).values
        raws = []
        for explanation in per_layer:
            up = upsample(explanation.raw, size)
            scale = up.flatten(1).abs().max(dim=1).values.clamp(min=torch.finfo(up.dtype).tiny)
            raws.append(up / scale.reshape(-1, *([1] * (up.ndim - 1))))
        return self._fused_explanation(names, per_layer, torch.stack(raws).mean(dim=0), normalize_maps(maps))

    @staticmethod
    def _fused_explanation(names: list[str], per_layer: list[Explanation], raw: Tensor, maps: Tensor) -> Explanation:
        first = per_layer[0]
        return Explanation(
            raw=raw,
            maps=maps,
            weights=None,
            contributions=None,
            logits=first.logits,
            targets=first.targets,
            scores=first.scores,
            method=first.method,
            layer=names,
            activations=None,
            layers=dict(zip(names, per_layer)),
            options=dict(first.options),
        )


def _read_from(results: list[CamResult], layer: str) -> str | list[str]:
    """The explanation's ``layer``: the layer, or the modules the method read (one name, or a list of several)."""
    read = results[0].read_from
    if not read:
        return layer
    return read[0] if len(read) == 1 else list(read)


def _extras(results: list[CamResult]) -> dict[str, Tensor]:
    """The methods' extras, detached; a method run once per score component gives their mean over the components."""
    if len(results) == 1:
        return {name: tensor.detach() for name, tensor in results[0].extras.items()}
    names = results[0].extras.keys()
    return {name: torch.stack([result.extras[name] for result in results]).mean(dim=0).detach() for name in names}


def _component(gradients: dict[str, Tensor], index: int) -> dict[str, Tensor]:
    """The gradients of score component ``index`` (``[R, B, ...]`` -> ``[B, ...]``) for every captured tensor."""
    return {key: grads[index] for key, grads in gradients.items()}


def _check_batch(captured: dict[str, Tensor], batch: int) -> None:
    """Every captured tensor has one row per input: a layer on regions (a detector's box head) has not."""
    for key, tensor in captured.items():
        if tensor.ndim == 0 or tensor.shape[0] != batch:
            rows = tensor.shape[0] if tensor.ndim else 0
            raise CamscopeError(
                f"layer {key!r} outputs {rows} rows for a batch of {batch} inputs: it works on regions or proposals "
                "(a detector's box head), not on whole inputs; choose a layer of the backbone"
            )


def _component_gradients(scores: Tensor, tensors: list[Tensor], create_graph: bool = False) -> list[Tensor | None]:
    """Gradients of each of the ``R`` score components, ``[R, B, ...]``, in one batched backward."""
    batch, components = scores.shape
    eye = torch.eye(components, dtype=scores.dtype, device=scores.device)
    grad_outputs = eye[:, None, :].expand(components, batch, components)
    try:
        grads = torch.autograd.grad(
            scores,
            tensors,
            grad_outputs=grad_outputs,
            is_grads_batched=True,
            allow_unused=True,
            retain_graph=True,
            create_graph=create_graph,
        )
    except RuntimeError as error:
        if in_place_failure(error):  # the model's own backward fails: no batching helps
            raise
        # Some operators have no batched backward: one backward per component.
        per_component = [
            torch.autograd.grad(
                scores[:, r].sum(), tensors, allow_unused=True, retain_graph=True, create_graph=create_graph
            )
            for r in range(components)
        ]
        stacked: list[Tensor | None] = []
        for i in range(len(tensors)):
            present = [g[i] for g in per_component if g[i] is not None]
            stacked.append(torch.stack(present) if len(present) == components else None)
        return stacked
    return list(grads)


def explain(
    model: nn.Module,
    inputs: Tensor,
    method: str | CamMethod = "gradcam",
    layer: LayerSpec | None = None,
    target: Any = None,
    *,
    features: Tensor | None = None,
    scale: Any = None,
    **options: Any,
) -> Explanation:
    """Explain a batch with one method at one or more layers.

    Args:
        model: the network.
        inputs: ``[B, C, H, W]`` (or ``[B, C, D, H, W]``) on the model's device.
        method: a method name (see ``camscope.available_methods()``) or instance.
        layer: dotted name(s) or module(s); None picks a default.
        target: None (predicted class), an int, one int per sample, or a Target.
        features: channel mask for FS-CAMs (see :meth:`Explainer.__call__`).
        scale: common intensity scale for S-CAMs (see :meth:`Explainer.__call__`).
        **options: Explainer options (``fuse``, ``eval_mode``, ``layout``,
            ``grid``, ``prefix_tokens``) and the method's options. ``eval_mode=False``
            keeps the model's own mode: a BatchNorm layer in train mode then updates its
            running statistics on every call (see :class:`Explainer`).

    Returns:
        An :class:`Explanation`.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10)
        >>> explanation = camscope.explain(model, torch.randn(2, 3, 64, 64), method="gradcam", target=3)
        >>> explanation.raw.shape, explanation.maps.shape, explanation.weights.shape
        (torch.Size([2, 2, 2]), torch.Size([2, 64, 64]), torch.Size([2, 512]))
    """
    return Explainer(model, layer=layer, method=method, **options)(
        inputs, target=target, features=features, scale=scale
    )
