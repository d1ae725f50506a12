"""Test-time augmentation of maps: the ``aug_smooth`` option of ``explain``.

pytorch-grad-cam's ``aug_smooth=True`` (grad-cam 1.5.7, with its default ttach
transforms) explains every batch six times: the inputs as they are and flipped
left-right, each multiplied by 0.9, 1 and 1.1. Each map is flipped back and the
six maps are averaged, which centres the map on the object and removes some
noise, at six times the cost.

camscope does the same, with one difference: the target is resolved once, on the
clean inputs, and the same classes (and Finer references) are explained under
every augmentation. pytorch-grad-cam, given no targets, explains each augmented
batch's own top class, so a flip that changes the prediction averages maps of
different classes. With explicit classes the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from camscope.engine.explanation import Explanation
from camscope.targets.base import FrozenTarget, Target

__all__ = ["AUGMENTATIONS", "aug_smoothed", "augment"]

#: ``(flip left-right, factor)`` of each augmentation: pytorch-grad-cam's defaults, the identity included.
AUGMENTATIONS: tuple[tuple[bool, float], ...] = tuple(
    (flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1)
)


def augment(inputs: Tensor, flip: bool, factor: float) -> Tensor:
    """The inputs multiplied by ``factor`` and, with ``flip``, mirrored along their last axis (the width).

    Example:
        >>> import torch
        >>> augment(torch.tensor([[[[1.0, 2.0]]]]), True, 0.5).tolist()
        [[[[1.0, 0.5]]]]
    """
    scaled = inputs * factor if factor != 1.0 else inputs
    return scaled.flip(-1) if flip else scaled


def aug_smoothed(explain: Callable[[Tensor, Target], Explanation], inputs: Tensor, target: Target) -> Explanation:
    """The mean of the explanations of the augmented inputs, each map flipped back.

    Args:
        explain: explains a batch for a target (the engine's one-call explanation).
        inputs: the clean batch.
        target: the prepared target; it is resolved on the clean batch, which is explained first.

    Returns:
        The clean batch's explanation with ``maps`` the mean of the six maps (each
        in [0, 1]; the mean is not rescaled, as pytorch-grad-cam's) and ``raw`` the
        mean of the six signed maps, flipped back at their own resolution. The
        weights, contributions and method extras of one augmentation do not describe
        the mean, so they are None (the extras empty).
    """
    clean = explain(inputs, target)
    frozen = FrozenTarget(clean.targets)
    maps, raws = [clean.maps], [clean.raw]
    for flip, factor in AUGMENTATIONS:
        if not flip and factor == 1.0:
            continue
        augmented = explain(augment(inputs, flip, factor), frozen)
        maps.append(augmented.maps.flip(-1) if flip else augmented.maps)
        raws.append(augmented.raw.flip(-1) if flip else augmented.raw)
    return replace(
        clean,
        raw=torch.stack(raws).mean(dim=0),
        maps=torch.stack(maps).mean(dim=0),
        weights=None,
        contributions=None,
        layers={},
        extras={},
    )
