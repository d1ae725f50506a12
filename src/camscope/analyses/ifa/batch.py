"""One batch of an integrated feature analysis: the explained map and the Eq. 4 and Eq. 3 contributions.

Per batch: one forward pass and one backward down to the layer (two gradients in
one batched backward when the explained class is the predicted one and a
sample's label differs); with all classes, chunks of classes in batched
backwards (``is_grads_batched``). :class:`BatchPass` returns a
:class:`BatchResult` that :meth:`camscope.analyses.ifa.Analysis.update` adds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.engine.backward import in_place_failure, model_backward
from camscope.engine.capture import LayerCapture, model_state
from camscope.engine.explainer import Explainer
from camscope.engine.method import CamContext, CamMethod, CamResult
from camscope.errors import CamscopeError
from camscope.methods.gradient import CAM, GradCAM, HiResCAM
from camscope.targets.base import ClassTarget, Target

__all__ = ["BatchPass", "BatchResult"]

#: Budget (elements) for the gradients of one chunk of classes in Eq. 3.
_CHUNK_ELEMENTS = 1 << 25


_CONTEXT_FIELDS = {item.name for item in fields(CamContext)}


class _NeedsPerClassLoopError(Exception):
    """A method asked for extra forward passes inside the batched Eq. 3 computation."""


def _no_extra_passes(*_: Any) -> Any:
    raise _NeedsPerClassLoopError


def _class_gradients(logits: Tensor, activations: Tensor, rows: Tensor, retain_graph: bool) -> Tensor:
    """``d logits[b, rows[r, b]] / d activations`` for each row r: ``[R, B, ...]`` in one batched backward."""
    one_hot = F.one_hot(rows, logits.shape[1]).to(logits.dtype)  # [R, B, C]
    if rows.shape[0] == 1:
        (grads,) = torch.autograd.grad(logits, activations, one_hot[0], retain_graph=retain_graph, allow_unused=True)
        grads = torch.zeros_like(activations) if grads is None else grads
        return grads.unsqueeze(0)
    try:
        (grads,) = torch.autograd.grad(
            logits, activations, one_hot, retain_graph=retain_graph, is_grads_batched=True, allow_unused=True
        )
    except RuntimeError as error:
        if in_place_failure(error):  # the model's own backward fails: no batching helps
            raise
        # Some operators have no batched backward: one backward per row.
        grads = torch.stack([_class_gradients(logits, activations, row[None], retain_graph=True)[0] for row in rows])
    if grads is None:
        return torch.zeros(rows.shape[0], *activations.shape, dtype=activations.dtype, device=activations.device)
    return grads


@dataclass
class BatchResult:
    raw: Tensor
    contributions: Tensor | None
    classes: Tensor
    labels: Tensor
    predictions: Tensor
    all_sum: Tensor | None
    num_classes: int
    num_features: int


class BatchPass:
    """One method at one layer over batches: the explained map, Eq. 4 and Eq. 3 contributions."""

    def __init__(self, explainer: Explainer, name: str, module: nn.Module, all_classes: bool, class_chunk: int | None):
        self.explainer = explainer
        self.method: CamMethod = explainer.method
        self.name = name
        self.layers = [(name, module)]
        self.all_classes = all_classes
        self.class_chunk = class_chunk
        self.loop_for_all_classes = False

    def _context(
        self, inputs: Tensor, activations: Tensor, logits: Tensor, classes: Tensor, capture: LayerCapture | None
    ) -> CamContext:
        """A method's view of a batch explained for ``classes``; without ``capture`` no extra pass is allowed."""
        target = ClassTarget(classes).resolve(logits)
        explainer, name = self.explainer, self.name
        extra: dict[str, Any] = {}
        if capture is None:
            forward = gradients_at = activations_at = _no_extra_passes
        else:
            # The keywords of the explainer's own context (CamContext.forward, CamContext.gradients_at).
            def forward(x: Tensor, grad: bool = False) -> Tensor:
                return explainer.plain_forward(x, capture, grad=grad)

            def gradients_at(x: Tensor, target: Target = target) -> tuple[Tensor, Tensor]:
                return explainer.gradients_at(x, name, capture, target)

            def activations_at(x: Tensor, native: bool = False) -> Tensor:
                return explainer.activations_at(x, name, capture, native)

        if "activations_at" in _CONTEXT_FIELDS:
            extra["activations_at"] = activations_at
        return CamContext(
            model=explainer.model,
            inputs=inputs,
            layer=name,
            activations=activations,
            gradients=None,
            outputs=logits,
            target=target,
            scores=target(logits),
            forward=forward,
            gradients_at=gradients_at,
            **extra,
        )

    def _apply(self, context: CamContext) -> tuple[Tensor, Tensor | None]:
        """(raw [B, ...], contributions [B, K] or None) of one method call."""
        result: CamResult = self.method(context)
        if result.weights is None:
            if result.raw is None:
                raise CamscopeError(f"method {self.method.name!r} returned neither channel weights nor a map")
            grid = tuple(context.activations.shape[2:])
            if tuple(result.raw.shape[1:]) != grid:
                raise CamscopeError(
                    f"method {self.method.name!r} makes its map at {list(result.raw.shape[1:])}, not on the grid "
                    f"{list(grid)} of layer {self.name!r}: integrated feature analysis collects maps of the layer, "
                    "use a method with channel weights such as gradcam"
                )
            return result.raw, None
        weighted = result.weights * context.activations
        return weighted.sum(dim=1), weighted.sum(dim=context.spatial_dims)

    def run(self, inputs: Tensor, labels: Tensor, explain: str) -> BatchResult:
        """The explained raw map, Eq. 4 contributions and Eq. 3 sums of a batch (labels -1 where none)."""
        explainer, method = self.explainer, self.method
        need_grad = method.uses_gradients
        with (
            model_state(explainer.model, explainer.eval_mode),
            torch.inference_mode(False),
            LayerCapture(self.layers, need_grad=need_grad, model=explainer.model) as capture,
        ):
            if explain == "true" and bool((labels < 0).any()):
                raise CamscopeError(
                    "explain='true' needs a label for every image, but some have none: use explain='predicted'"
                )
            target = ClassTarget(None) if explain == "predicted" else ClassTarget(labels)
            logits, resolved, _ = explainer.forward_pass(inputs, capture, target, need_grad)
            num_classes = logits.shape[1]
            if bool((labels >= num_classes).any()):
                raise CamscopeError(
                    f"label {int(labels.max())} is out of range for a model with {num_classes} outputs: "
                    "check that the dataset's class indices are the model's"
                )
            labels = labels.to(logits.device)
            native = capture.activations[self.name]
            detached = logits.detach()
            predictions = detached.argmax(dim=1)
            explained = resolved.classes()
            if explained is None:  # a ClassTarget always resolves to one class per sample
                raise CamscopeError("the explained classes are unknown")
            truth = torch.where(labels >= 0, labels, predictions)
            second = explain == "predicted" and bool((truth != explained).any())
            rows = torch.stack([explained, truth]) if second else explained[None]
            activations = explainer.channels_first(native.detach(), inputs, self.name)
            with model_backward([self.name]):
                grads = _class_gradients(logits, native, rows, retain_graph=self.all_classes) if need_grad else None
            outputs = []
            for r in range(rows.shape[0]):
                context = self._context(inputs, activations, detached, rows[r], capture)
                if grads is not None:
                    context.gradients = explainer.channels_first(grads[r], inputs, self.name)
                outputs.append(self._apply(context))
            raw, contributions = outputs[0]
            if second:
                contributions = outputs[1][1]
            all_sum = None
            if self.all_classes and not self.loop_for_all_classes and not self._batchable():
                self.loop_for_all_classes = True
            if self.all_classes and not self.loop_for_all_classes:
                try:
                    all_sum = self._all_classes_batched(inputs, native, activations, logits)
                except _NeedsPerClassLoopError:
                    self.loop_for_all_classes = True
        if self.all_classes and self.loop_for_all_classes:
            all_sum = self._all_classes_loop(inputs, num_classes)
        return BatchResult(
            raw=raw.detach(),
            contributions=None if contributions is None else contributions.detach(),
            classes=truth,
            labels=labels,
            predictions=predictions,
            all_sum=all_sum,
            num_classes=num_classes,
            num_features=activations.shape[1],
        )

    def _batchable(self) -> bool:
        """Eq. 3 in batched backwards: gradient methods and CAM (perturbation methods need their own passes)."""
        return self.method.uses_gradients or type(self.method) is CAM

    def _chunk_size(self, batch: int, activations: Tensor, num_classes: int) -> int:
        if self.class_chunk:
            return max(1, min(self.class_chunk, num_classes))
        per_class = 3 * batch * activations[0].numel()
        return max(1, min(num_classes, _CHUNK_ELEMENTS // max(per_class, 1)))

    def _all_classes_batched(self, inputs: Tensor, native: Tensor, activations: Tensor, logits: Tensor) -> Tensor:
        """Eq. 3 sums ``[K, C]``: every class for every sample, chunks of classes in batched backwards.

        Grad-CAM and HiResCAM contributions are computed in closed form from the
        gradients (``mean_ij G * sum_ij A`` and ``sum_ij G A``); other gradient
        methods and CAM run on the chunk as one batch of ``chunk * B`` samples
        (activations repeated; ``ctx.inputs`` stays the batch itself: a method that
        needs extra passes raises and the analysis falls back to
        :meth:`_all_classes_loop`).
        """
        batch, num_classes = logits.shape
        chunk = self._chunk_size(batch, activations, num_classes)
        total = torch.zeros(activations.shape[1], num_classes, dtype=torch.float64, device=activations.device)
        detached = logits.detach()
        spatial = tuple(range(2, activations.ndim))
        closed_form = type(self.method) in (GradCAM, HiResCAM)
        activation_sums = activations.sum(dim=spatial)
        for start in range(0, num_classes, chunk):
            classes = torch.arange(start, min(start + chunk, num_classes), device=logits.device)
            rows = classes[:, None].expand(-1, batch)  # [c, B]
            count = rows.shape[0]
            grads = None
            if self.method.uses_gradients:
                with model_backward([self.name]):
                    grads = _class_gradients(logits, native, rows, retain_graph=True)
                grads = self.explainer.channels_first(grads.reshape(count * batch, *grads.shape[2:]), inputs, self.name)
            if closed_form and grads is not None:
                grads = grads.reshape(count, batch, *grads.shape[1:])
                if type(self.method) is GradCAM:
                    contributions = grads.mean(dim=tuple(d + 1 for d in spatial)) * activation_sums
                else:
                    contributions = (grads * activations).sum(dim=tuple(d + 1 for d in spatial))
            else:
                repeated = activations.repeat(count, *([1] * (activations.ndim - 1)))
                context = self._context(inputs, repeated, detached.repeat(count, 1), rows.reshape(-1), capture=None)
                context.gradients = grads
                _, weighted = self._apply(context)
                if weighted is None:
                    raise CamscopeError(
                        f"method {self.method.name!r} has no channel weights: it has no importance matrix"
                    )
                contributions = weighted
            total[:, start : start + count] = contributions.reshape(count, batch, -1).sum(dim=1).T.to(torch.float64)
        return total

    def _all_classes_loop(self, inputs: Tensor, num_classes: int) -> Tensor:
        """Eq. 3 sums for methods that need extra passes (perturbation, smoothing): one explanation per class."""
        columns = []
        for cls in range(num_classes):
            explanation = self.explainer(inputs, target=cls)
            if explanation.contributions is None:
                raise CamscopeError(f"method {self.method.name!r} has no channel weights: it has no importance matrix")
            columns.append(explanation.contributions.sum(dim=0).to(torch.float64))
        return torch.stack(columns, dim=1)
