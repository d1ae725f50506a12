"""What a comparison changes: the signed difference of two maps, and how much of the map's mass moved.

A map that compares (Finer-CAM against similar classes, DiffCAM against a reference group) is
read against the map it refines (Grad-CAM of the same class). Min-max scaling hides what the
comparison did: Finer-CAM may subtract half of Grad-CAM's evidence almost evenly, and the scaled
map looks the same. :func:`mass_shift` measures it on the maps' positive evidence ``b`` (base) and
``c`` (compared), each made a distribution of unit mass, ``p = b / sum(b)`` and ``q = c / sum(c)``:

* ``difference = q - p``, signed: positive where the comparison put more of the map's mass
  (what it keeps, drawn red), negative where it took mass away (drawn blue);
* ``moved = 1/2 sum |q - p|``, the total-variation distance: the share of the map's mass that
  moved, 0 for maps of the same shape whatever their scale, 1 for maps with no overlap;
* ``removed = sum max(b - c, 0) / sum(b)``, the share of the base map's evidence the comparison
  removed, in the maps' own units; it is only given when the two maps share units
  (``common_units``: a Finer-CAM map and its base method's map, both in the class score's
  gradient units, or one method's maps of two classes).

:func:`explanation_shift` measures two explanations on their signed maps ``raw`` (at the layer's
grid, before the ReLU and the per-image scaling that ``maps`` apply), and
:meth:`MassShift.display` brings the difference to the image's size for :func:`camscope.viz.overlay`.

Example:
    >>> import torch
    >>> base = torch.tensor([[[1.0, 1.0], [0.0, 2.0]]])      # mass 1/4, 1/4, 0, 1/2
    >>> compared = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])  # mass 0, 1/2, 0, 1/2
    >>> shift = mass_shift(base, compared, common_units=True)
    >>> shift.difference.tolist()
    [[[-0.25, 0.25], [0.0, 0.0]]]
    >>> float(shift.moved[0]), float(shift.removed[0])  # a quarter of the mass moved; 2 of 4 units removed
    (0.25, 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from camscope.errors import CamscopeError

if TYPE_CHECKING:
    from camscope.engine.explanation import Explanation

__all__ = ["MassShift", "comparisons", "explanation_shift", "mass_shift", "percent", "shares_units"]


@dataclass(frozen=True)
class MassShift:
    """How a compared map differs from its base map, per sample (see the module's formulas), in float64.

    Attributes:
        difference: ``q - p`` ``[B, ...]``: the unit-mass compared map minus the unit-mass base map.
        moved: ``[B]`` share of the mass that moved (total-variation distance), in [0, 1]; NaN where
            either map has no positive evidence (nothing to compare).
        removed: ``[B]`` share of the base map's evidence removed, in [0, 1], or None when the maps
            do not share units.
    """

    difference: Tensor
    moved: Tensor
    removed: Tensor | None

    def display(self, size: Sequence[int] | None = None) -> Tensor:
        """The difference for an overlay: upsampled to ``size`` (bilinear) and divided by its largest magnitude per sample.

        In [-1, 1]: +1 where the comparison added the most mass, -1 where it took the most away.
        """
        from camscope.engine.maps import upsample

        shown = self.difference.float()
        if size is not None:
            shown = upsample(shown, size)
        peak = shown.abs().flatten(1).amax(dim=1).clamp(min=torch.finfo(shown.dtype).tiny)
        return torch.nan_to_num(shown / peak.reshape((-1,) + (1,) * (shown.ndim - 1)))

    def select(self, index: int) -> MassShift:
        """The shift of one sample (a batch of one)."""
        part = slice(index, index + 1)
        return MassShift(self.difference[part], self.moved[part], None if self.removed is None else self.removed[part])

    def caption(self, index: int = 0, base: str = "") -> str:
        r"""What moved, in words, for one sample: ``"moved 7% of the mass\nremoved 59% of Grad-CAM's evidence"``.

        Example:
            >>> import torch
            >>> shift = mass_shift(torch.tensor([[2.0, 2.0]]), torch.tensor([[1.0, 0.0]]), common_units=True)
            >>> shift.caption(base="Grad-CAM")
            "moved 50% of the mass\nremoved 75% of Grad-CAM's evidence"
        """
        moved = float(self.moved[index])
        if moved != moved:  # NaN: a map without positive evidence
            return "a map has no positive evidence"
        text = f"moved {percent(moved)} of the mass"
        if self.removed is not None:
            owner = f"{base}'s" if base else "the base map's"
            text += f"\nremoved {percent(float(self.removed[index]))} of {owner} evidence"
        return text


def percent(share: float) -> str:
    """A share as a whole percentage; under 1% (but not 0) reads ``"<1%"``.

    Example:
        >>> percent(0.054), percent(0.004), percent(0.0)
        ('5%', '<1%', '0%')
    """
    if 0 < share < 0.005:
        return "<1%"
    return f"{share * 100:.0f}%"


def comparisons(explanations: Mapping[str, Explanation]) -> dict[str, tuple[str, MassShift]]:
    """For each map that compares, its base map and :func:`explanation_shift`: ``{compared: (base, shift)}``.

    A ``finer-X`` method is read against ``X``; ``diffcam`` against ``gradcam``; when both are among
    ``explanations`` and their maps lie on the same grid (the same layer); otherwise it is left out.

    Example:
        >>> import camscope, torch
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        ...                             torch.nn.Flatten(), torch.nn.Linear(4, 5))
        >>> x = torch.randn(2, 3, 16, 16)
        >>> found = comparisons({m: camscope.explain(model, x, method=m, layer="1") for m in ("gradcam", "finer-gradcam")})
        >>> {name: (base, shift.moved.shape) for name, (base, shift) in found.items()}
        {'finer-gradcam': ('gradcam', torch.Size([2]))}
    """
    found: dict[str, tuple[str, MassShift]] = {}
    for name, explanation in explanations.items():
        base = name[len("finer-") :] if name.startswith("finer-") else ("gradcam" if name == "diffcam" else None)
        if base is None or base not in explanations or explanations[base].raw.shape != explanation.raw.shape:
            continue
        found[name] = (base, explanation_shift(explanations[base], explanation))
    return found


def mass_shift(base: Tensor, compared: Tensor, *, common_units: bool = False) -> MassShift:
    """The difference and the mass moved between two batches of maps ``[B, ...]`` of the same shape.

    Negative values count as no evidence (as the ReLU of the displayed maps does).

    Args:
        base: the map the comparison refines (e.g. Grad-CAM of class c).
        compared: the map that compares (e.g. Finer-CAM of c against d).
        common_units: the two maps are in the same units, so ``removed`` is meaningful.

    Raises:
        CamscopeError: the shapes differ or a batch is empty.
    """
    if base.shape != compared.shape:
        raise CamscopeError(f"the maps differ in shape: {list(base.shape)} and {list(compared.shape)}")
    if base.ndim < 2 or base.shape[0] == 0:
        raise CamscopeError(f"mass_shift needs a batch of maps [B, ...] with B >= 1, got shape {list(base.shape)}")
    b = base.detach().double().clamp(min=0).flatten(1)
    c = compared.detach().double().clamp(min=0).flatten(1)
    b_mass, c_mass = b.sum(dim=1, keepdim=True), c.sum(dim=1, keepdim=True)
    empty = (b_mass <= 0) | (c_mass <= 0)
    p = b / torch.where(b_mass > 0, b_mass, torch.ones_like(b_mass))
    q = c / torch.where(c_mass > 0, c_mass, torch.ones_like(c_mass))
    difference = torch.where(empty, torch.zeros_like(p), q - p)
    moved = torch.where(empty[:, 0], torch.full_like(b_mass[:, 0], float("nan")), 0.5 * difference.abs().sum(dim=1))
    removed = None
    if common_units:
        lost = (b - c).clamp(min=0).sum(dim=1)
        removed = torch.where(b_mass[:, 0] > 0, lost / b_mass[:, 0].clamp(min=1e-300), torch.nan)
    return MassShift(difference.reshape(base.shape), moved, removed)


def shares_units(base: Explanation, compared: Explanation) -> bool:
    """Whether two explanations' signed maps are in the same units (so that ``removed`` means something).

    True for one method's maps (of any classes, Finer-CAM targets included) and for a ``finer-*`` method
    against its base method (``finer-gradcam`` against ``gradcam``); False across methods (DiffCAM's
    weights, for one, are not gradients).

    Example:
        >>> from types import SimpleNamespace as E
        >>> shares_units(E(method="gradcam"), E(method="finer-gradcam")), shares_units(E(method="gradcam"), E(method="diffcam"))
        (True, False)
    """

    def family(method: str) -> str:
        return method[len("finer-") :] if method.startswith("finer-") else method

    return family(str(base.method)) == family(str(compared.method))


def explanation_shift(base: Explanation, compared: Explanation) -> MassShift:
    """:func:`mass_shift` of two explanations of the same inputs, on their signed maps ``raw``.

    ``raw`` is at the layer's grid; for several layers it is the mean of each layer's map scaled to its
    largest magnitude, so the maps' units are lost and only ``moved`` is given. ``removed`` is given for
    one layer when :func:`shares_units` says the maps share units.

    Raises:
        CamscopeError: the explanations' maps differ in shape (other inputs or layers).
    """
    one_layer = isinstance(base.layer, str) and isinstance(compared.layer, str)
    return mass_shift(base.raw, compared.raw, common_units=one_layer and shares_units(base, compared))
