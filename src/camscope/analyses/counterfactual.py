"""Counterfactual pairs: "why c, not d" and "why d, not c" from a reference bank, with DiffCAM.

A map of the pair may be *empty*: when the raw map ``sum_k w_k A_k`` has no positive cell, the
ReLU leaves nothing and the displayed map is zero everywhere; nothing in the image argues for c
against d at this layer. :attr:`CounterfactualPair.why_empty` and ``counterpart_empty`` say so
per input, and :func:`signed_maps` gives the raw map on a signed scale (what argues against),
which is what a figure of an empty map should show.

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> from camscope.stats.reference_bank import ReferenceBank
    >>> model = resnet18(num_classes=3).eval()
    >>> bank = ReferenceBank.build(model, [(torch.randn(9, 3, 32, 32), torch.arange(9) % 3)], layer="layer4")
    >>> counterfactual(model, torch.randn(1, 3, 32, 32), bank, versus=2, explained=0).versus
    2
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.capture import LayerSpec
from camscope.engine.explainer import Explanation, explain, upsample
from camscope.engine.maps import final_maps
from camscope.errors import CamscopeError
from camscope.methods import diffcam  # noqa: F401  (registers the "diffcam" method that explain runs)
from camscope.stats.reference_bank import ReferenceBank
from camscope.targets.example import ExampleTarget, scores_bank_classes

__all__ = ["CounterfactualPair", "counterfactual", "empty_maps", "signed_maps"]


@dataclass
class CounterfactualPair:
    """The two maps of a counterfactual explanation of classes c and d.

    Attributes:
        why: "why c, not d" on the inputs: DiffCAM against the group of class d.
        counterpart: "why d, not c". On ``counter_inputs`` (examples of d) it is
            DiffCAM against the group of class c, the paper's pair of maps. On
            the inputs themselves (no counter examples) it uses the typical
            example of d, the class mean ``mu_d``, against class c:
            ``w = Sigma_c,reg^-1 (mu_d - mu_c)``, ``M = sum_k w_k A_k(x)``: where
            the inputs show what tells d apart from c.
        explained: label c per input.
        versus: label d.
    """

    why: Any
    counterpart: Any
    explained: Tensor
    versus: int

    @property
    def why_empty(self) -> Tensor:
        """``[B]`` bool: the "why c, not d" map is zero everywhere (see :func:`empty_maps`)."""
        return empty_maps(self.why)

    @property
    def counterpart_empty(self) -> Tensor:
        """``[B]`` bool: the "why d, not c" map is zero everywhere (see :func:`empty_maps`)."""
        return empty_maps(self.counterpart)


def empty_maps(explanation: Any) -> Tensor:
    """``[B]`` bool: which maps are empty, their raw map ``sum_k w_k A_k`` having no positive cell.

    The displayed map is the ReLU of the raw map, so such a map is zero everywhere: the
    evidence at this layer is all against the explained side of the comparison.

    Example:
        >>> from types import SimpleNamespace
        >>> empty_maps(SimpleNamespace(raw=torch.tensor([[[-1.0, -0.5]], [[-1.0, 2.0]]]))).tolist()
        [True, False]
    """
    raw = explanation.raw
    return ~(raw > 0).flatten(1).any(dim=1)


def signed_maps(explanation: Any) -> Tensor:
    """The raw maps upsampled to the input and divided by their largest ``|value|``: ``[B, H, W]`` in [-1, 1].

    Positive cells argue for the explained side, negative ones against it; an all-zero raw map stays zero.

    Example:
        >>> from types import SimpleNamespace
        >>> e = SimpleNamespace(raw=torch.tensor([[[-2.0, -1.0]]]), maps=torch.zeros(1, 1, 2))
        >>> signed_maps(e).tolist()
        [[[-1.0, -0.5]]]
    """
    up = upsample(explanation.raw, explanation.maps.shape[1:])
    largest = up.abs().flatten(1).amax(dim=1).clamp(min=torch.finfo(up.dtype).tiny)
    return up / largest.reshape(-1, *([1] * (up.ndim - 1)))


def counterfactual(
    model: nn.Module,
    inputs: Tensor,
    bank: ReferenceBank | str | os.PathLike[str],
    versus: int | str,
    explained: int | str | None = None,
    *,
    layer: LayerSpec | None = None,
    counter_inputs: Tensor | None = None,
    regularization: float | str = "oas",
    **options: Any,
) -> CounterfactualPair:
    """ "Why c, not d" and its counterpart "why d, not c", in one call.

    Args:
        model: the network.
        inputs: ``[B, C, H, W]`` examples of class c.
        bank: the reference bank (or its path).
        versus: class d (label or name).
        explained: class c (label or name); default: each input's class as
            DiffCAM finds it (``predict``).
        layer: default: the bank's layer.
        counter_inputs: examples of class d for the counterpart; without them
            the counterpart is computed on ``inputs`` from the mean of d (no
            extra forward pass).
        regularization: as for DiffCAM.
        **options: other DiffCAM and Explainer options (``predict``, ``embedding``...).

    Returns:
        A :class:`CounterfactualPair`.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=3).eval()
        >>> data = [(torch.randn(12, 3, 32, 32), torch.arange(12) % 3)]
        >>> bank = ReferenceBank.build(model, data, layer="layer4")
        >>> pair = counterfactual(model, torch.randn(2, 3, 32, 32), bank, versus=2, explained=0)
        >>> pair.why.maps.shape, pair.counterpart.maps.shape
        (torch.Size([2, 32, 32]), torch.Size([2, 32, 32]))
    """
    reserved = sorted(set(options) & {"target", "reference", "method"})
    if reserved:
        raise CamscopeError(
            f"counterfactual sets {', '.join(reserved)} itself: give the classes as explained= (c) and versus= (d)"
        )
    if isinstance(bank, (str, os.PathLike)):
        bank = ReferenceBank.load(bank)
    d = bank.label_of(versus)
    c = bank.label_of(explained) if explained is not None else None
    if c == d:
        raise CamscopeError(
            f"counterfactual: explained and versus are the same class {bank.class_name(d)!r}: "
            "'why c, not d' needs two different classes"
        )
    layer = bank.layer if layer is None else layer
    why = explain(
        model,
        inputs,
        method="diffcam",
        layer=layer,
        target=c,
        bank=bank,
        reference=bank.group("class", d),
        regularization=regularization,
        **options,
    )
    classes = why.classes
    if classes is None:
        # the fixed group needed no class: find it as for "others" (the model's prediction or the nearest mean)
        activations = why.activations
        if activations is None:
            raise CamscopeError("counterfactual needs the layer's activations of the explanation")
        z = activations.mean(dim=tuple(range(2, activations.ndim)))
        predict = options.get("predict", "auto")
        if predict != "nearest" and scores_bank_classes(why.logits, bank):
            classes = why.logits.argmax(dim=1)
        else:
            classes = bank.nearest_classes(z, 1)[:, 0]
    same = (classes == d).nonzero().flatten().tolist()
    if same:
        raise CamscopeError(
            f"counterfactual: input(s) {same} are explained as class {bank.class_name(d)!r}, the class of versus= "
            "itself: pass explained= (their class c), or choose another versus="
        )
    if counter_inputs is not None:
        explained_labels = {int(v) for v in classes.tolist()}
        if len(explained_labels) != 1:
            raise CamscopeError("with counter_inputs, all inputs must be explained as one class: pass explained=")
        counterpart = explain(
            model,
            counter_inputs,
            method="diffcam",
            layer=layer,
            target=d,
            bank=bank,
            reference=bank.group("class", explained_labels.pop()),
            regularization=regularization,
            **options,
        )
    else:
        counterpart = _mean_counterpart(why, bank, classes, d, regularization)
    return CounterfactualPair(why=why, counterpart=counterpart, explained=classes, versus=d)


def _mean_counterpart(why: Any, bank: ReferenceBank, classes: Tensor, versus: int, regularization: float | str) -> Any:
    """The counterpart on the same inputs: ``w = Sigma_c^-1 (mu_d - mu_c)`` applied to their activations."""
    activations = why.activations
    device = activations.device
    mean_d = bank.group("class", versus).mean.to(device)
    weights = torch.empty(activations.shape[:2], dtype=torch.float64, device=device)
    for label in sorted({int(v) for v in classes.tolist()}):
        group = bank.group("class", label)
        index = (classes.to(device) == label).nonzero().flatten()
        difference = (mean_d - group.mean.to(device)).expand(index.numel(), -1)
        weights[index] = group.solve(difference, regularization)
    weights = weights.to(activations.dtype)
    weighted = weights.reshape(*weights.shape, *([1] * (activations.ndim - 2))) * activations
    raw = weighted.sum(dim=1)
    target = ExampleTarget(versus, bank).resolve(why.logits)
    size = why.maps.shape[1:]
    return Explanation(
        raw=raw,
        maps=final_maps(raw, size),  # the ReLU before the upsampling, as for the "why" map
        weights=weights,
        contributions=weighted.sum(dim=tuple(range(2, activations.ndim))),
        logits=why.logits,
        targets=target,
        scores=target(why.logits),
        method="diffcam",
        layer=why.layer,
        activations=activations,
    )
