"""Synthetic fine-grained "species" with known parts: a benchmark where the right answer is known.

Every image shows one bird-like object made of five shared parts,
:data:`PARTS` = ``("body", "head", "wing", "tail", "beak")``, over a cluttered
background with distractor shapes. A class (a "species") is a *style* per part:
a colour from :data:`PALETTE`, a texture from :data:`PATTERNS` (plain, stripes,
spots; the beak and head are always plain) and a shape variant from
:data:`SHAPES` (round / slim body, plain / crested head, short / long wing,
fan / pointed / forked tail, short / long beak). Two classes differ in a part
when the part's style differs; the ground truth of "where do c and d differ"
in an image of c is the union of the masks of those parts.

Class design (deterministic in ``seed``, documented by :meth:`SyntheticSpecies.describe`):

* Classes come in *families* of ``family_size`` (default 2, the last one may
  be smaller). Family ``f`` has a *key part* (cycling through ``wing, body,
  tail, head, beak``); its members share the style of every other part and
  differ only in the key part, as the paper's Blue Grosbeak and Grandala differ
  only in the colour of the wing. So every pair of classes of one family
  differs in exactly one part, and :meth:`SyntheticSpecies.most_similar` of a
  class is a member of its family.
* On the key part the members differ in colour (always a different palette
  colour, so a small CNN can learn it at 64 px), and for every other family
  also in texture (body, wing, tail) or shape (head, beak), so differences are
  of colour, texture and shape.
* Families form a tree: most families (3 in 4) descend from an earlier one,
  whose shared style they copy with one or two parts re-drawn; the others are
  drawn afresh. So classes of different families differ in 2 to 5 parts
  (:meth:`SyntheticSpecies.part_distance`; at least ``min_family_distance``,
  default 2, enforced by rejection), a graded similarity like a real
  taxonomy. Colours, textures and shapes come from small sets and recur
  across classes and parts: no single part or colour names the class, the
  model has to look at the right part.

Per image (the *pose*, :class:`SpeciesPose`, independent of the class): position,
scale, rotation (+-20 degrees), facing left or right, a brightness per part and
a global one, a smooth coloured background, ``distractors`` random ellipses,
boxes and triangles in palette colours and textures (behind the object), and
pixel noise. Rendering is hard-edged compositing (tail, body, wing, head, beak
from back to front), so the part masks are exact: ``part_masks[:, p]`` is the
*visible* region of part ``p`` (the parts do not overlap in the masks), and
rendering two classes with the same pose changes pixels only inside the union
of the differing parts' masks of the two renderings.

Images are float32 RGB in ``[0, 1]`` (no mean/std normalisation; the shipped
models take them as they are). Boxes are ``[x0, y0, x1, y1]`` pixel indices
with exclusive ends (``image[..., y0:y1, x0:x1]`` is the object).

Example:
    >>> import torch
    >>> from camscope.data.synthetic import SyntheticSpecies
    >>> species = SyntheticSpecies(num_classes=16, size=64, seed=0)
    >>> batch = species.sample(8, generator=torch.Generator().manual_seed(1))
    >>> batch.images.shape, batch.part_masks.shape, batch.boxes.shape
    (torch.Size([8, 3, 64, 64]), torch.Size([8, 5, 64, 64]), torch.Size([8, 4]))
    >>> c = int(batch.labels[0]); d = species.most_similar(c)
    >>> len(species.differing_parts(c, d))
    1
    >>> species.difference_masks(batch.part_masks, batch.labels, species.most_similar_classes()[batch.labels]).shape
    torch.Size([8, 64, 64])
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from camscope.errors import CamscopeError

__all__ = [
    "LEVELS",
    "PALETTE",
    "PARTS",
    "PATTERNS",
    "SHAPES",
    "SpeciesBatch",
    "SpeciesPose",
    "SyntheticSpecies",
]

#: The parts, in the order of ``part_masks``'s second axis.
PARTS: tuple[str, ...] = ("body", "head", "wing", "tail", "beak")
#: Back-to-front drawing order.
_DRAW_ORDER: tuple[str, ...] = ("tail", "body", "wing", "head", "beak")
#: Order in which families take their key part.
_KEY_ORDER: tuple[str, ...] = ("wing", "body", "tail", "head", "beak")

#: Named RGB colours in [0, 1]; well separated in hue or lightness.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "orange": (0.98, 0.55, 0.05),
    "yellow": (0.97, 0.92, 0.15),
    "green": (0.15, 0.68, 0.20),
    "teal": (0.05, 0.62, 0.66),
    "blue": (0.15, 0.30, 0.92),
    "purple": (0.58, 0.18, 0.78),
    "brown": (0.40, 0.22, 0.08),
    "white": (0.96, 0.96, 0.94),
    "black": (0.10, 0.10, 0.12),
}
#: Textures; drawn in a dark (or, on dark colours, light) shade of the part's colour.
PATTERNS: tuple[str, ...] = ("plain", "striped", "spotted")
#: Shape variants per part.
SHAPES: dict[str, tuple[str, ...]] = {
    "body": ("round", "slim"),
    "head": ("plain", "crested"),
    "wing": ("short", "long"),
    "tail": ("fan", "pointed", "forked"),
    "beak": ("short", "long"),
}
#: Difficulty levels: the generator's knobs at each (keyword arguments of :class:`SyntheticSpecies`).
#: ``easy`` is the generator's defaults. ``medium`` and ``hard`` make the part in which family members
#: differ smaller (no body; hard: only the tail, head and beak) and fainter (``key_contrast``), and
#: every image more varied (scale, rotation, per-part colour and texture), cluttered (distractors,
#: noise) and occluded. Label noise stays off at every level (it would blur where the errors go).
#: Chosen, before any claim of the reproduction report was measured, for the accuracy and the errors
#: of a species model trained on them (the zoo's models: hard near 83% with about 90% of its errors
#: into the most similar class, medium near 94%).
LEVELS: dict[str, dict[str, Any]] = {
    "easy": {},
    "medium": {
        "key_parts": ("wing", "tail", "head", "beak"),
        "key_contrast": 0.7,
        "scale_range": (0.27, 0.40),
        "max_rotation": 0.5,
        "colour_jitter": 0.03,
        "texture_jitter": 0.1,
        "occlusion": 0.15,
        "distractors": 7,
        "noise": 0.04,
    },
    "hard": {
        "key_parts": ("tail", "head", "beak"),
        "key_contrast": 0.6,
        "scale_range": (0.25, 0.40),
        "max_rotation": 0.55,
        "colour_jitter": 0.04,
        "texture_jitter": 0.15,
        "occlusion": 0.25,
        "distractors": 9,
        "noise": 0.045,
    },
}
#: Parts that can carry a texture (the head and beak are too small at 64 px).
_TEXTURED: tuple[str, ...] = ("body", "wing", "tail")
_GENERA: tuple[str, ...] = (
    "grosbeak", "warbler", "tanager", "finch", "bunting", "oriole", "flycatcher", "sparrow",
    "thrush", "wren", "vireo", "kinglet", "shrike", "swallow", "jay", "starling",
    "robin", "lark", "pipit", "siskin", "grandala", "redstart", "waxwing", "cardinal",
)  # fmt: skip

# Geometry, in object units (body centre at the origin, facing +u, v up; the object spans about [-1, 1]).
_BODY_AXES = ((0.50, 0.32), (0.60, 0.24))  # round, slim: semi-axes (a, b)
_HEAD = (0.52, 0.22, 0.21)  # centre u, v, radius
_EYE = (0.58, 0.27, 0.055)
_CREST = ((0.40, 0.36), (0.60, 0.38), (0.33, 0.60))  # triangle on top of the head
_BEAK_LENGTH = (0.24, 0.40)  # short, long; base at u=0.68 between v=0.09 and v=0.33
_WING = ((-0.06, 0.07, 0.28, 0.13, -0.15), (-0.22, 0.09, 0.46, 0.12, -0.12))  # cu, cv, a, b, rotation
_TAIL = ((0.45, 0.30, 0.0), (0.62, 0.11, 0.0), (0.56, 0.28, 0.26))  # length, half width, fork depth
_TAIL_APEX = -0.35
_OBJECT_RADIUS = 1.09
_SCALE_RANGE = (0.30, 0.38)  # object scale, a share of the image side per object unit
_MAX_ROTATION = 0.35  # radians, about 20 degrees
_STRIPE_PERIOD = 0.22
_SPOT_PERIOD = 0.20


@dataclass
class SpeciesPose:
    """Everything about an image except its class (tensors with batch size ``N`` first).

    Attributes:
        center: ``[N, 2]`` object centre ``(x, y)`` in pixels.
        scale: ``[N]`` pixels per object unit (the object spans about 2 units).
        angle: ``[N]`` rotation in radians (counter-clockwise).
        facing: ``[N]`` +1 facing right, -1 facing left.
        part_gain: ``[N, P]`` brightness of each part (in :data:`PARTS` order).
        gain: ``[N]`` global brightness.
        background: ``[N, 3]`` base background colour.
        background_field: ``[N, 3, 4, 4]`` low-frequency background variation (upsampled bilinearly).
        distractor_kind: ``[N, K]`` 0 ellipse, 1 box, 2 triangle.
        distractor_center: ``[N, K, 2]`` pixels.
        distractor_size: ``[N, K, 2]`` semi-axes in pixels.
        distractor_angle: ``[N, K]`` radians.
        distractor_colour: ``[N, K]`` index into :data:`PALETTE`.
        distractor_pattern: ``[N, K]`` index into :data:`PATTERNS`.
        noise: ``[N, 3, H, W]`` additive pixel noise.
        colour_offset: ``[N, P, 3]`` per-part colour shift (``colour_jitter``; None: none).
        texture_scale: ``[N]`` factor of the texture periods (``texture_jitter``; None: 1).
        texture_phase: ``[N, 2]`` shift of the textures in object units (``texture_jitter``; None: 0).
        occluder: ``[N]`` bool, whether an occluder hides part of the object (``occlusion``; None: none).
        occluder_center: ``[N, 2]`` pixels.
        occluder_size: ``[N, 2]`` semi-axes in pixels.
        occluder_angle: ``[N]`` radians.
        occluder_colour: ``[N]`` index into :data:`PALETTE`.
        occluder_pattern: ``[N]`` index into :data:`PATTERNS`.

    The optional fields are None when their knob is off (the default): those poses
    are drawn exactly as before the knobs existed, so seeds give the same images.
    """

    center: Tensor
    scale: Tensor
    angle: Tensor
    facing: Tensor
    part_gain: Tensor
    gain: Tensor
    background: Tensor
    background_field: Tensor
    distractor_kind: Tensor
    distractor_center: Tensor
    distractor_size: Tensor
    distractor_angle: Tensor
    distractor_colour: Tensor
    distractor_pattern: Tensor
    noise: Tensor
    colour_offset: Tensor | None = None
    texture_scale: Tensor | None = None
    texture_phase: Tensor | None = None
    occluder: Tensor | None = None
    occluder_center: Tensor | None = None
    occluder_size: Tensor | None = None
    occluder_angle: Tensor | None = None
    occluder_colour: Tensor | None = None
    occluder_pattern: Tensor | None = None

    def __len__(self) -> int:
        return int(self.scale.shape[0])

    def _map(self, function: Any) -> SpeciesPose:
        """A pose with ``function`` applied to every field that is set."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        mapped: dict[str, Any] = {name: None if value is None else function(value) for name, value in values.items()}
        return SpeciesPose(**mapped)

    def __getitem__(self, index: Any) -> SpeciesPose:
        """A sub-batch (``index``: a slice, an index tensor or a boolean mask)."""
        return self._map(lambda value: value[index])

    def repeat(self, times: int) -> SpeciesPose:
        """Each pose repeated ``times`` times in a row (``[p0, p0, ..., p1, p1, ...]``)."""
        return self._map(lambda value: value.repeat_interleave(times, dim=0))


@dataclass
class SpeciesBatch:
    """A rendered batch.

    Attributes:
        images: ``[N, 3, H, W]`` float32 RGB in ``[0, 1]``.
        labels: ``[N]`` int64 class indices.
        boxes: ``[N, 4]`` int64 ``[x0, y0, x1, y1]``, exclusive ends (the tight box of the object mask).
        part_masks: ``[N, P, H, W]`` bool, the visible region of each part of :data:`PARTS`; disjoint.
        pose: the :class:`SpeciesPose` the batch was rendered with (render it again with other labels
            for counterfactual images).
    """

    images: Tensor
    labels: Tensor
    boxes: Tensor
    part_masks: Tensor
    pose: SpeciesPose

    @property
    def object_masks(self) -> Tensor:
        """``[N, H, W]`` bool: the object (the union of its parts)."""
        return self.part_masks.any(dim=1)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: Any) -> SpeciesBatch:
        return SpeciesBatch(
            images=self.images[index],
            labels=self.labels[index],
            boxes=self.boxes[index],
            part_masks=self.part_masks[index],
            pose=self.pose[index],
        )


def _draw_distractors(
    pose: SpeciesPose, layer: Tensor, dark: Tensor, xs: Tensor, ys: Tensor, unit: float
) -> tuple[Tensor, Tensor]:
    """Draw the distractors (layers ``1..K``, back to front, in pixel coordinates) over ``layer``."""
    n = layer.shape[0]
    for k in range(pose.distractor_kind.shape[1]):
        cx, cy = pose.distractor_center[:, k, 0].view(n, 1, 1), pose.distractor_center[:, k, 1].view(n, 1, 1)
        a, b = pose.distractor_size[:, k, 0].view(n, 1, 1), pose.distractor_size[:, k, 1].view(n, 1, 1)
        du, dv = _rotate(xs - cx, ys - cy, pose.distractor_angle[:, k].view(n, 1, 1))
        kind = pose.distractor_kind[:, k].view(n, 1, 1)
        ellipse = (du / a) ** 2 + (dv / b) ** 2 <= 1
        box = (du.abs() <= a) & (dv.abs() <= b)
        triangle = (dv >= -b) & (du.abs() <= a * (1 - (dv + b) / (2 * b)))
        mask = torch.where(kind == 0, ellipse, torch.where(kind == 1, box, triangle))
        stripes, spots = _textures(du / unit, dv / unit)
        pattern = pose.distractor_pattern[:, k].view(n, 1, 1)
        layer = torch.where(mask, k + 1, layer)
        dark = torch.where(mask, ((pattern == 1) & stripes) | ((pattern == 2) & spots), dark)
    return layer, dark


class SyntheticSpecies:
    """A deterministic generator of fine-grained species with part masks.

    Args:
        num_classes: number of species (2 to 240).
        size: image side in pixels (64 to 128 recommended; at least 32).
        seed: seed of the class design; :meth:`sample` without a generator also
            draws from a generator seeded with it.
        family_size: classes per family (members differ in exactly one part).
        distractors: number of distractor shapes per image.
        noise: standard deviation of the additive pixel noise.
        min_family_distance: least number of differing parts between classes of
            different families.
        key_parts: the parts the families take as their key part, in turn
            (default: all five, wing first); e.g. ``("tail", "head", "beak")``
            makes every within-family difference a small part.
        key_contrast: in ``(0, 1]``: how far each member's key-part colour lies
            from the colour the family shares, and how visible its texture is
            (1: the member's palette colour and texture as they are; 0.3: 30% of
            the way, so two members' key parts differ by 30% of their palette
            colours' difference).
        scale_range: object scale, as a share of the image side per object unit.
        max_rotation: largest rotation of the object, in radians (either way).
        colour_jitter: standard deviation of a per-image, per-part shift of the
            parts' RGB colours (individual variation; 0: none).
        texture_jitter: relative spread of the texture periods, with a random
            phase, per image (0: the same texture grid for every image).
        occlusion: probability that an image gets an occluder (an elongated
            textured shape in a palette colour) in front of the object; the part
            masks stay the *visible* regions.
        label_noise: share of the training labels that :meth:`noisy_labels`
            replaces by another class drawn uniformly (rendering and the
            ground truth always use the true class).

    The knobs' defaults are the generator as it was before they existed: the
    same seeds give the same images (the ``"easy"`` level of :data:`LEVELS`).

    Attributes:
        num_classes, size, seed, family_size, parts (= :data:`PARTS`), class_names,
        families (``[C]`` family of each class), key_parts (key part of each family).

    Example:
        >>> species = SyntheticSpecies(num_classes=8, size=64, seed=0)
        >>> species.differing_parts(0, 1)
        ['wing']
        >>> species.most_similar(1)
        0
    """

    parts: tuple[str, ...] = PARTS

    def __init__(
        self,
        num_classes: int = 16,
        size: int = 64,
        seed: int = 0,
        *,
        family_size: int = 2,
        distractors: int = 5,
        noise: float = 0.03,
        min_family_distance: int = 2,
        key_parts: Sequence[str] = _KEY_ORDER,
        key_contrast: float = 1.0,
        scale_range: Sequence[float] = _SCALE_RANGE,
        max_rotation: float = _MAX_ROTATION,
        colour_jitter: float = 0.0,
        texture_jitter: float = 0.0,
        occlusion: float = 0.0,
        label_noise: float = 0.0,
    ) -> None:
        if not 2 <= num_classes <= 240:
            raise CamscopeError(f"num_classes must be between 2 and 240, got {num_classes}")
        if size < 32:
            raise CamscopeError(f"size must be at least 32 pixels (64 to 128 recommended), got {size}")
        if family_size < 1:
            raise CamscopeError(f"family_size must be at least 1, got {family_size}")
        if distractors < 0 or noise < 0:
            raise CamscopeError("distractors and noise must not be negative")
        if not 1 <= min_family_distance <= 3:
            raise CamscopeError(f"min_family_distance must be 1, 2 or 3, got {min_family_distance}")
        self.key_parts_cycle = _check_key_parts(key_parts)
        self.key_contrast = _check_range("key_contrast", key_contrast, 0.0, 1.0, low_open=True)
        self.scale_range = _check_scale_range(scale_range)
        self.max_rotation = _check_range("max_rotation", max_rotation, 0.0, math.pi)
        self.colour_jitter = _check_range("colour_jitter", colour_jitter, 0.0, 0.5)
        self.texture_jitter = _check_range("texture_jitter", texture_jitter, 0.0, 0.9)
        self.occlusion = _check_range("occlusion", occlusion, 0.0, 1.0)
        self.label_noise = _check_range("label_noise", label_noise, 0.0, 1.0)
        self.num_classes = num_classes
        self.size = size
        self.seed = seed
        self.family_size = family_size
        self.distractors = distractors
        self.noise = noise
        self.min_family_distance = min_family_distance
        self._generator = torch.Generator().manual_seed(seed + 1)
        self._design()

    @classmethod
    def at_level(
        cls, level: str, num_classes: int = 16, size: int = 64, seed: int = 0, **overrides: Any
    ) -> SyntheticSpecies:
        """The generator at a difficulty level of :data:`LEVELS` (``overrides``: more keyword arguments).

        Example:
            >>> SyntheticSpecies.at_level("hard").key_contrast < SyntheticSpecies.at_level("medium").key_contrast < 1
            True
        """
        if level not in LEVELS:
            raise CamscopeError(f"unknown difficulty level {level!r}: choose {', '.join(LEVELS)}")
        return cls(num_classes, size, seed, **{**LEVELS[level], **overrides})

    # ------------------------------------------------------------------ class design
    def _design(self) -> None:
        rng = random.Random(f"camscope-species-{self.seed}")
        colours = len(PALETTE)
        styles: list[list[tuple[int, int, int]]] = []  # per class, per part: (colour, pattern, shape)
        families: list[int] = []
        bases: list[list[tuple[int, int, int]]] = []
        key_parts: list[str] = []
        family_count = math.ceil(self.num_classes / self.family_size)

        def random_style(part: str) -> tuple[int, int, int]:
            pattern = rng.randrange(len(PATTERNS)) if part in _TEXTURED else 0
            return rng.randrange(colours), pattern, rng.randrange(len(SHAPES[part]))

        for family in range(family_count):
            members = min(self.family_size, self.num_classes - family * self.family_size)
            key = self.key_parts_cycle[family % len(self.key_parts_cycle)]
            key_index = PARTS.index(key)
            # Every other family also varies the texture (textured parts) or the shape on the key part.
            vary_more = family % 2 == 1
            for _attempt in range(10_000):
                if bases and rng.random() < 0.75:
                    # A descendant of an earlier family: its base with 1 or 2 parts re-drawn.
                    base = list(rng.choice(bases))
                    for p in rng.sample(range(len(PARTS)), rng.choice((1, 2))):
                        old = base[p]
                        while base[p] == old:
                            base[p] = random_style(PARTS[p])
                else:
                    base = [random_style(part) for part in PARTS]
                member_colours = rng.sample(range(colours), members)
                member_styles = []
                extra = (
                    rng.sample(range(len(PATTERNS)), min(members, len(PATTERNS)))
                    if key in _TEXTURED
                    else rng.sample(range(len(SHAPES[key])), min(members, len(SHAPES[key])))
                )
                for m in range(members):
                    colour, pattern, shape = base[key_index]
                    colour = member_colours[m]
                    if vary_more and m < len(extra):
                        if key in _TEXTURED:
                            pattern = extra[m]
                        else:
                            shape = extra[m]
                    style = list(base)
                    style[key_index] = (colour, pattern, shape)
                    member_styles.append(style)
                ok = all(
                    sum(a != b for a, b in zip(new, old)) >= self.min_family_distance
                    for new in member_styles
                    for old in styles
                )
                if ok:
                    break
            else:  # pragma: no cover - the style space is far larger than 240 classes
                raise CamscopeError("could not design distinct enough classes: lower min_family_distance")
            bases.append(base)
            styles.extend(member_styles)
            families.extend([family] * members)
            key_parts.append(key)

        self._styles = styles
        table = torch.tensor(styles, dtype=torch.long)  # [C, P, 3]
        self._colour_index = table[..., 0]
        self._pattern_index = table[..., 1]
        self._shape_index = table[..., 2]
        self.families = torch.tensor(families, dtype=torch.long)
        self.key_parts = key_parts
        self._plain, self._shade = self._part_colours(bases)
        differs = (table[:, None] != table[None, :]).any(dim=-1)  # [C, C, P]
        self._differs = differs
        self._distance = differs.sum(dim=-1)
        self.class_names = [self._name(c) for c in range(self.num_classes)]

    def _part_colours(self, bases: list[list[tuple[int, int, int]]]) -> tuple[Tensor, Tensor]:
        """``[C, P, 3]`` plain colours and texture shades of every class's parts.

        At ``key_contrast = k < 1`` a member's key part takes the colour ``b + k (m - b)``
        (``b`` the family's shared colour, ``m`` the member's palette colour) and its
        texture shade lies ``k`` of the way from that colour to the full shade.
        """
        palette, shades = _palettes()
        plain, shade = palette[self._colour_index], shades[self._colour_index]
        if self.key_contrast < 1.0:
            k = self.key_contrast
            for c in range(self.num_classes):
                family = int(self.families[c])
                p = PARTS.index(self.key_parts[family])
                shared = palette[bases[family][p][0]]
                member, member_shade = plain[c, p].clone(), shade[c, p].clone()
                plain[c, p] = shared + k * (member - shared)
                shade[c, p] = plain[c, p] + k * (member_shade - member)
        return plain, shade

    def _name(self, c: int) -> str:
        family = int(self.families[c])
        genus = _GENERA[family % len(_GENERA)] + (f"-{family // len(_GENERA) + 1}" if family >= len(_GENERA) else "")
        key = self.key_parts[family]
        p = PARTS.index(key)
        members = (self.families == family).nonzero().flatten().tolist()
        words = []
        for attribute, names in ((0, list(PALETTE)), (1, list(PATTERNS)), (2, list(SHAPES[key]))):
            values = {self._styles[m][p][attribute] for m in members}
            if len(values) > 1:
                words.append(names[self._styles[c][p][attribute]])
        return f"{' '.join(words) or 'common'}-{key} {genus}"

    # ------------------------------------------------------------------ class structure
    def _check_class(self, c: int) -> int:
        c = int(c)
        if not 0 <= c < self.num_classes:
            raise CamscopeError(f"class {c} is out of range: this generator has classes 0 to {self.num_classes - 1}")
        return c

    def describe(self, c: int) -> dict[str, dict[str, str]]:
        """The style of every part of class ``c``: ``{part: {"colour", "pattern", "shape"}}``."""
        c = self._check_class(c)
        return {
            part: {
                "colour": list(PALETTE)[self._styles[c][p][0]],
                "pattern": PATTERNS[self._styles[c][p][1]],
                "shape": SHAPES[part][self._styles[c][p][2]],
            }
            for p, part in enumerate(PARTS)
        }

    def differing_parts(self, c: int, d: int) -> list[str]:
        """Names of the parts whose style differs between classes ``c`` and ``d`` (in :data:`PARTS` order)."""
        c, d = self._check_class(c), self._check_class(d)
        return [part for p, part in enumerate(PARTS) if bool(self._differs[c, d, p])]

    def differs(self) -> Tensor:
        """``[C, C, P]`` bool: whether classes ``c`` and ``d`` differ in part ``p``."""
        return self._differs.clone()

    def part_distance(self) -> Tensor:
        """``[C, C]`` int64: the number of parts in which two classes differ (0 on the diagonal)."""
        return self._distance.clone()

    def most_similar(self, c: int) -> int:
        """The class closest to ``c`` in part distance (a member of its family; ties: the lowest index)."""
        c = self._check_class(c)
        return int(self.most_similar_classes()[c])

    def most_similar_classes(self) -> Tensor:
        """``[C]`` int64: :meth:`most_similar` of every class."""
        distance = self._distance.clone().float()
        distance.fill_diagonal_(float("inf"))
        return distance.argmin(dim=1)  # argmin returns the first minimum: the lowest index

    def similar_classes(self, c: int, max_parts: int = 1) -> list[int]:
        """All classes that differ from ``c`` in at least one and at most ``max_parts`` parts."""
        c = self._check_class(c)
        row = self._distance[c]
        return [int(d) for d in ((row >= 1) & (row <= max_parts)).nonzero().flatten()]

    def one_part_pairs(self) -> list[tuple[int, int]]:
        """All ordered pairs ``(c, d)``, ``c != d``, that differ in exactly one part."""
        return [(int(c), int(d)) for c, d in (self._distance == 1).nonzero().tolist()]

    def difference_masks(self, part_masks: Tensor, labels: Tensor, others: Tensor | int) -> Tensor:
        """Where, in each image, its class differs from another class.

        ``masks[i] = OR_p { part_masks[i, p] : labels[i] and others[i] differ in part p }``.

        Args:
            part_masks: ``[N, P, H, W]`` bool (from :class:`SpeciesBatch`).
            labels: ``[N]`` the classes of the images.
            others: ``[N]`` or one class to compare with.

        Returns:
            ``[N, H, W]`` bool (empty where ``others[i] == labels[i]``).
        """
        labels = torch.as_tensor(labels, dtype=torch.long).cpu()
        others = torch.as_tensor(others, dtype=torch.long).cpu().expand_as(labels)
        if part_masks.ndim != 4 or part_masks.shape[1] != len(PARTS) or part_masks.shape[0] != labels.shape[0]:
            raise CamscopeError(
                f"part_masks must be [N, {len(PARTS)}, H, W] with N = len(labels) = {labels.shape[0]}, "
                f"got {list(part_masks.shape)}"
            )
        if bool(((labels < 0) | (labels >= self.num_classes) | (others < 0) | (others >= self.num_classes)).any()):
            raise CamscopeError(f"labels and others must be classes 0 to {self.num_classes - 1}")
        selected = self._differs[labels, others].to(part_masks.device)  # [N, P]
        return (part_masks.bool() & selected[:, :, None, None]).any(dim=1)

    # ------------------------------------------------------------------ sampling
    def _resolve_generator(self, generator: torch.Generator | int | None) -> torch.Generator:
        if generator is None:
            return self._generator
        if isinstance(generator, int):
            return torch.Generator().manual_seed(generator)
        if isinstance(generator, torch.Generator):
            return generator
        raise CamscopeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")

    def sample_labels(self, n: int, generator: torch.Generator | int | None = None) -> Tensor:
        """``[n]`` balanced labels (each class ``n // C`` or ``n // C + 1`` times) in random order."""
        g = self._resolve_generator(generator)
        return (torch.arange(n) % self.num_classes)[torch.randperm(n, generator=g)]

    def sample_poses(self, n: int, generator: torch.Generator | int | None = None) -> SpeciesPose:
        """Draw ``n`` poses (everything but the class)."""
        if n < 0:
            raise CamscopeError(f"n must not be negative, got {n}")
        g = self._resolve_generator(generator)
        size, k = self.size, self.distractors

        def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> Tensor:
            return torch.rand(*shape, generator=g) * (high - low) + low

        scale = uniform(n, low=self.scale_range[0], high=self.scale_range[1]) * size
        margin = scale * _OBJECT_RADIUS + 1.0
        center = margin[:, None] + uniform(n, 2) * (size - 2 * margin)[:, None]
        pose = SpeciesPose(
            center=center,
            scale=scale,
            angle=uniform(n, low=-self.max_rotation, high=self.max_rotation),
            facing=torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0),
            part_gain=uniform(n, len(PARTS), low=0.90, high=1.05),
            gain=uniform(n, low=0.90, high=1.10),
            background=uniform(n, 3, low=0.30, high=0.70),
            background_field=torch.randn(n, 3, 4, 4, generator=g) * 0.12,
            distractor_kind=torch.randint(0, 3, (n, k), generator=g),
            distractor_center=uniform(n, k, 2) * size,
            distractor_size=uniform(n, k, 2, low=0.04, high=0.13) * size,
            distractor_angle=uniform(n, k, low=0.0, high=math.pi),
            distractor_colour=torch.randint(0, len(PALETTE), (n, k), generator=g),
            distractor_pattern=torch.randint(0, len(PATTERNS), (n, k), generator=g),
            noise=torch.randn(n, 3, size, size, generator=g) * self.noise,
        )
        # The knobs draw after everything else, and only when on: with them off the stream is unchanged.
        if self.colour_jitter > 0:
            pose.colour_offset = torch.randn(n, len(PARTS), 3, generator=g) * self.colour_jitter
        if self.texture_jitter > 0:
            pose.texture_scale = uniform(n, low=1 - self.texture_jitter, high=1 + self.texture_jitter)
            pose.texture_phase = uniform(n, 2) * max(_STRIPE_PERIOD, _SPOT_PERIOD)
        if self.occlusion > 0:
            self._draw_occluders(pose, g)
        return pose

    def _draw_occluders(self, pose: SpeciesPose, g: torch.Generator) -> None:
        """Occluders: elongated shapes over a random point of the object (``occlusion`` of the images get one)."""
        n = len(pose)

        def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> Tensor:
            return torch.rand(*shape, generator=g) * (high - low) + low

        pose.occluder = torch.rand(n, generator=g) < self.occlusion
        pose.occluder_center = pose.center + uniform(n, 2, low=-0.8, high=0.8) * pose.scale[:, None]
        pose.occluder_size = (
            torch.stack([uniform(n, low=0.25, high=0.50), uniform(n, low=0.08, high=0.18)], dim=1) * pose.scale[:, None]
        )
        pose.occluder_angle = uniform(n, low=0.0, high=math.pi)
        pose.occluder_colour = torch.randint(0, len(PALETTE), (n,), generator=g)
        pose.occluder_pattern = torch.randint(0, len(PATTERNS), (n,), generator=g)

    def sample(
        self, n: int, generator: torch.Generator | int | None = None, labels: Tensor | None = None
    ) -> SpeciesBatch:
        """Draw ``n`` images with balanced labels (or the given ``labels``) and random poses.

        Args:
            n: number of images.
            generator: a ``torch.Generator`` (advanced), an int seed, or None
                (the generator's own stream, seeded with ``seed``).
            labels: ``[n]`` classes to draw instead of balanced random ones.

        Returns:
            A :class:`SpeciesBatch`.
        """
        g = self._resolve_generator(generator)
        labels = self.sample_labels(n, g) if labels is None else torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (n,):
            raise CamscopeError(f"labels must have shape [{n}], got {list(labels.shape)}")
        return self.render(labels, self.sample_poses(n, g))

    def sample_split(self, size: int, seed: int, count: int | None = None, chunk: int = 256) -> SpeciesBatch:
        """A fixed data split: the first ``count`` (default all) of ``size`` images drawn with ``seed``.

        The split is made of blocks of ``chunk`` images, block ``j`` drawn by
        :meth:`sample` from a generator seeded with ``seed * 1_000_003 + j``
        (balanced labels within each block), so a prefix of a split is the same
        images whatever ``count`` and costs only what it renders.
        """
        if size < 0 or chunk < 1:
            raise CamscopeError(f"size must not be negative and chunk must be positive, got {size} and {chunk}")
        count = size if count is None else min(int(count), size)
        batches = []
        for block, start in enumerate(range(0, count, chunk)):
            generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + block)
            n = min(chunk, size - start)
            labels = self.sample_labels(n, generator)
            pose = self.sample_poses(n, generator)
            keep = min(n, count - start)
            batches.append(self.render(labels[:keep], pose[:keep]))
        if not batches:
            return self.render(torch.zeros(0, dtype=torch.long), self.sample_poses(0, 0))
        return _concat(batches)

    def render(self, labels: Tensor, pose: SpeciesPose, chunk: int = 256) -> SpeciesBatch:
        """Render classes ``labels`` (``[N]``) in poses ``pose`` (deterministic, no randomness).

        Rendering the same poses with other labels gives counterfactual images
        that differ only inside the differing parts.
        """
        labels = torch.as_tensor(labels, dtype=torch.long).cpu()
        if labels.ndim != 1 or labels.shape[0] != len(pose):
            raise CamscopeError(f"labels must be [N] with N = {len(pose)} poses, got shape {list(labels.shape)}")
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise CamscopeError(f"labels must be classes 0 to {self.num_classes - 1}")
        if pose.noise.shape[-1] != self.size:
            raise CamscopeError(
                f"the poses were drawn for {pose.noise.shape[-1]} px images, this generator draws {self.size} px"
            )
        images, masks = [], []
        for start in range(0, labels.shape[0], chunk):
            i, m = self._render(labels[start : start + chunk], pose[start : start + chunk])
            images.append(i)
            masks.append(m)
        size = self.size
        image = torch.cat(images) if images else torch.zeros(0, 3, size, size)
        part_masks = torch.cat(masks) if masks else torch.zeros(0, len(PARTS), size, size, dtype=torch.bool)
        return SpeciesBatch(
            images=image, labels=labels, boxes=_boxes(part_masks.any(dim=1)), part_masks=part_masks, pose=pose
        )

    def _render(self, labels: Tensor, pose: SpeciesPose) -> tuple[Tensor, Tensor]:
        """Hard-edged compositing by a per-pixel layer index (0 background, then distractors, parts, eye)."""
        n, size = labels.shape[0], self.size
        k_count = pose.distractor_kind.shape[1]
        coords = torch.arange(size, dtype=torch.float32) + 0.5
        ys, xs = coords.view(1, size, 1), coords.view(1, 1, size)
        layer = torch.zeros(n, size, size, dtype=torch.long)
        dark = torch.zeros(n, size, size, dtype=torch.bool)
        unit = 0.3 * size  # the distractors' and occluders' textures at the object's scale
        layer, dark = _draw_distractors(pose, layer, dark, xs, ys, unit)
        first_part = k_count + 1
        layer, dark = self._draw_parts(labels, pose, layer, dark, xs, ys, first_part)
        eye_layer = first_part + len(PARTS)
        layer, dark, extra_plain, extra_shaded = self._occlude(pose, layer, dark, xs, ys, unit, eye_layer + 1)
        image = self._colour(labels, pose, layer, dark, extra_plain, extra_shaded)
        masks = torch.stack([layer == first_part + p for p in range(len(PARTS))], dim=1)
        masks[:, PARTS.index("head")] |= layer == eye_layer
        return image.float(), masks

    def _part_covers(self, labels: Tensor, u: Tensor, v: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Each part's pixels (``[n, H, W]`` masks, overlapping) and the eye's, at object coordinates ``u, v``."""
        n = labels.shape[0]
        shape = self._shape_index[labels]  # [n, P]

        def param(table: Any, part: str, column: int | None = None) -> Tensor:
            values = torch.tensor(table, dtype=torch.float32)
            chosen = values[shape[:, PARTS.index(part)]]
            return (chosen if column is None else chosen[:, column]).view(n, 1, 1)

        cover: dict[str, Tensor] = {}
        body_a, body_b = param(_BODY_AXES, "body", 0), param(_BODY_AXES, "body", 1)
        cover["body"] = (u / body_a) ** 2 + (v / body_b) ** 2 <= 1
        hu, hv, hr = _HEAD
        crested = (shape[:, PARTS.index("head")] == 1).view(n, 1, 1)
        cover["head"] = ((u - hu) ** 2 + (v - hv) ** 2 <= hr**2) | (crested & _triangle(u, v, *_CREST))
        beak_length = param(_BEAK_LENGTH, "beak")
        cover["beak"] = _triangle(u, v, (0.68, 0.33), (0.68, 0.09), (0.68 + beak_length, 0.21 - 0.15 * beak_length))
        wu, wv = _rotate(u - param(_WING, "wing", 0), v - param(_WING, "wing", 1), param(_WING, "wing", 4))
        cover["wing"] = (wu / param(_WING, "wing", 2)) ** 2 + (wv / param(_WING, "wing", 3)) ** 2 <= 1
        tail_length, tail_width, fork = (param(_TAIL, "tail", i) for i in range(3))
        end = _TAIL_APEX - tail_length
        tail = _triangle(u, v, (_TAIL_APEX, 0.0), (end, tail_width), (end, -tail_width))
        notch = _triangle(
            u, v, (end - 0.01, 0.6 * tail_width), (end - 0.01, -0.6 * tail_width), (end + fork, 0.0 * fork)
        )
        cover["tail"] = tail & ~notch
        eye = (u - _EYE[0]) ** 2 + (v - _EYE[1]) ** 2 <= _EYE[2] ** 2
        return cover, eye

    def _draw_parts(
        self, labels: Tensor, pose: SpeciesPose, layer: Tensor, dark: Tensor, xs: Tensor, ys: Tensor, first_part: int
    ) -> tuple[Tensor, Tensor]:
        """Draw the parts (layers ``first_part + p``, in :data:`_DRAW_ORDER`) and the eye over ``layer``."""
        n = labels.shape[0]
        # Object coordinates (u along the facing direction, v up), in object units.
        scale = pose.scale.view(n, 1, 1)
        x_rel = xs - pose.center[:, 0].view(n, 1, 1)
        y_rel = pose.center[:, 1].view(n, 1, 1) - ys  # up
        u, v = _rotate(x_rel, y_rel, pose.angle.view(n, 1, 1))
        u, v = u / scale * pose.facing.view(n, 1, 1), v / scale
        cover, eye = self._part_covers(labels, u, v)
        pattern = self._pattern_index[labels]
        tu, tv = u, v
        if pose.texture_scale is not None and pose.texture_phase is not None:
            factor = pose.texture_scale.view(n, 1, 1)
            tu = u / factor + pose.texture_phase[:, 0].view(n, 1, 1)
            tv = v / factor + pose.texture_phase[:, 1].view(n, 1, 1)
        stripes, spots = _textures(tu, tv)
        for part in _DRAW_ORDER:
            p = PARTS.index(part)
            kind = pattern[:, p].view(n, 1, 1)
            layer = torch.where(cover[part], first_part + p, layer)
            dark = torch.where(cover[part], ((kind == 1) & stripes) | ((kind == 2) & spots), dark)
        layer = torch.where(eye, first_part + len(PARTS), layer)
        return layer, dark

    def _colour(
        self,
        labels: Tensor,
        pose: SpeciesPose,
        layer: Tensor,
        dark: Tensor,
        extra_plain: list[Tensor],
        extra_shaded: list[Tensor],
    ) -> Tensor:
        """The image of a layer index: each layer's plain or dark colour, the background field, gain and noise."""
        n, size = labels.shape[0], self.size
        palette, pattern_palette = _palettes()
        # Colours of the layers: [n, L, 2 (plain, dark), 3]; layer 0 (background) is replaced below.
        parts_plain = self._plain[labels] * pose.part_gain[..., None]  # [n, P, 3]
        parts_dark = self._shade[labels] * pose.part_gain[..., None]
        if pose.colour_offset is not None:
            parts_plain, parts_dark = parts_plain + pose.colour_offset, parts_dark + pose.colour_offset
        eye_colour = torch.full((n, 1, 3), 0.05)
        plain = torch.cat(
            [torch.zeros(n, 1, 3), palette[pose.distractor_colour], parts_plain, eye_colour, *extra_plain], dim=1
        )
        shaded = torch.cat(
            [torch.zeros(n, 1, 3), pattern_palette[pose.distractor_colour], parts_dark, eye_colour, *extra_shaded],
            dim=1,
        )
        table = torch.stack([plain, shaded], dim=2).reshape(n, -1, 3)  # index = 2 * layer + dark
        index = (2 * layer + dark.long()).reshape(n, -1, 1).expand(-1, -1, 3)
        colours = table.gather(1, index).transpose(1, 2).reshape(n, 3, size, size)
        field = F.interpolate(pose.background_field, size=(size, size), mode="bilinear", align_corners=False)
        background = (pose.background[:, :, None, None] + field).clamp(0, 1)
        image = torch.where((layer == 0)[:, None], background, colours)
        return (image * pose.gain.view(n, 1, 1, 1) + pose.noise).clamp(0, 1)

    def _occlude(
        self, pose: SpeciesPose, layer: Tensor, dark: Tensor, xs: Tensor, ys: Tensor, unit: float, index: int
    ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
        """Draw the occluders (layer ``index``, in front of everything); their colours for the layer table."""
        if pose.occluder is None:
            return layer, dark, [], []
        assert pose.occluder_center is not None and pose.occluder_size is not None  # drawn together
        assert pose.occluder_angle is not None and pose.occluder_colour is not None
        assert pose.occluder_pattern is not None
        n = layer.shape[0]
        palette, pattern_palette = _palettes()
        du, dv = _rotate(
            xs - pose.occluder_center[:, 0].view(n, 1, 1),
            ys - pose.occluder_center[:, 1].view(n, 1, 1),
            pose.occluder_angle.view(n, 1, 1),
        )
        a, b = pose.occluder_size[:, 0].view(n, 1, 1), pose.occluder_size[:, 1].view(n, 1, 1)
        mask = ((du / a) ** 2 + (dv / b) ** 2 <= 1) & pose.occluder.view(n, 1, 1)
        stripes, spots = _textures(du / unit, dv / unit)
        pattern = pose.occluder_pattern.view(n, 1, 1)
        layer = torch.where(mask, index, layer)
        dark = torch.where(mask, ((pattern == 1) & stripes) | ((pattern == 2) & spots), dark)
        return layer, dark, [palette[pose.occluder_colour][:, None]], [pattern_palette[pose.occluder_colour][:, None]]

    # ------------------------------------------------------------------ misc
    def counterfactual(self, batch: SpeciesBatch, others: Tensor | int) -> SpeciesBatch:
        """The same images (same poses) rendered as classes ``others``."""
        others = torch.as_tensor(others, dtype=torch.long).expand_as(batch.labels).clone()
        return self.render(others, batch.pose)

    def noisy_labels(self, labels: Tensor, generator: torch.Generator | int | None = None) -> Tensor:
        """``labels`` with a share ``label_noise`` replaced by another class drawn uniformly (training labels).

        Each label is replaced independently with probability ``label_noise``; the
        images, masks and ground truth stay those of the true class. With
        ``label_noise = 0`` (the default) the labels come back unchanged and nothing is drawn.
        """
        labels = torch.as_tensor(labels, dtype=torch.long)
        if self.label_noise == 0 or labels.numel() == 0:
            return labels.clone()
        g = self._resolve_generator(generator)
        flip = torch.rand(labels.shape, generator=g) < self.label_noise
        shift = torch.randint(1, self.num_classes, labels.shape, generator=g)
        return torch.where(flip, (labels + shift) % self.num_classes, labels)

    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable), to rebuild the same generator.

        The difficulty knobs appear only where they differ from their defaults, so the
        configuration of a generator without them is what it always was.
        """
        config: dict[str, Any] = {
            "num_classes": self.num_classes,
            "size": self.size,
            "seed": self.seed,
            "family_size": self.family_size,
            "distractors": self.distractors,
            "noise": self.noise,
            "min_family_distance": self.min_family_distance,
        }
        knobs = {
            "key_parts": list(self.key_parts_cycle),
            "key_contrast": self.key_contrast,
            "scale_range": list(self.scale_range),
            "max_rotation": self.max_rotation,
            "colour_jitter": self.colour_jitter,
            "texture_jitter": self.texture_jitter,
            "occlusion": self.occlusion,
            "label_noise": self.label_noise,
        }
        defaults = _KNOB_DEFAULTS
        config.update({key: value for key, value in knobs.items() if value != defaults[key]})
        return config

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"SyntheticSpecies({args})"


def _concat(batches: list[SpeciesBatch]) -> SpeciesBatch:
    if len(batches) == 1:
        return batches[0]
    values = {f.name: [getattr(b.pose, f.name) for b in batches] for f in fields(SpeciesPose)}
    joined: dict[str, Any] = {name: None if parts[0] is None else torch.cat(parts) for name, parts in values.items()}
    pose = SpeciesPose(**joined)
    return SpeciesBatch(
        images=torch.cat([b.images for b in batches]),
        labels=torch.cat([b.labels for b in batches]),
        boxes=torch.cat([b.boxes for b in batches]),
        part_masks=torch.cat([b.part_masks for b in batches]),
        pose=pose,
    )


_KNOB_DEFAULTS: dict[str, Any] = {
    "key_parts": list(_KEY_ORDER),
    "key_contrast": 1.0,
    "scale_range": list(_SCALE_RANGE),
    "max_rotation": _MAX_ROTATION,
    "colour_jitter": 0.0,
    "texture_jitter": 0.0,
    "occlusion": 0.0,
    "label_noise": 0.0,
}


def _check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> float:
    value = float(value)
    if not (low < value <= high if low_open else low <= value <= high) or value != value:
        interval = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
        raise CamscopeError(f"{name} must lie in {interval}, got {value}")
    return value


def _check_key_parts(parts: Sequence[str]) -> tuple[str, ...]:
    if isinstance(parts, str) or not parts or any(part not in PARTS for part in parts):
        raise CamscopeError(f"key_parts must be a non-empty list of parts among {', '.join(PARTS)}, got {parts!r}")
    return tuple(parts)


def _check_scale_range(scale_range: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(v) for v in scale_range)
    if len(values) != 2 or not 0.1 <= values[0] <= values[1] <= 0.42:
        raise CamscopeError(
            f"scale_range must be (low, high) with 0.1 <= low <= high <= 0.42 (the object must fit), got {scale_range!r}"
        )
    return values[0], values[1]


def _rotate(x: Tensor, y: Tensor, angle: Tensor) -> tuple[Tensor, Tensor]:
    """Coordinates of ``(x, y)`` in a frame rotated by ``angle`` (counter-clockwise): ``R(-angle) (x, y)``."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    return cos * x + sin * y, -sin * x + cos * y


def _triangle(u: Tensor, v: Tensor, p0: Any, p1: Any, p2: Any) -> Tensor:
    """Strictly inside the triangle ``p0 p1 p2`` (either orientation; a degenerate triangle is empty)."""

    def edge(a: Any, b: Any) -> Tensor:
        return (b[0] - a[0]) * (v - a[1]) - (b[1] - a[1]) * (u - a[0])

    e0, e1, e2 = edge(p0, p1), edge(p1, p2), edge(p2, p0)
    return ((e0 > 0) & (e1 > 0) & (e2 > 0)) | ((e0 < 0) & (e1 < 0) & (e2 < 0))


@lru_cache(maxsize=1)
def _palettes() -> tuple[Tensor, Tensor]:
    """``[10, 3]`` plain colours and the shades their textures are drawn in (dark, or light on dark colours)."""
    palette = torch.tensor(list(PALETTE.values()))
    luminance = palette @ torch.tensor([0.3, 0.59, 0.11])
    return palette, torch.where((luminance < 0.3)[:, None], 0.45 * palette + 0.5, 0.4 * palette)


def _textures(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Where the texture shade goes: stripes across ``u``, and a grid of spots."""
    stripes = torch.sin((2 * math.pi / _STRIPE_PERIOD) * u) > 0.2
    fu = torch.remainder(u / _SPOT_PERIOD, 1.0) - 0.5
    fv = torch.remainder(v / _SPOT_PERIOD + 0.25, 1.0) - 0.5
    return stripes, fu**2 + fv**2 < 0.09


def _boxes(masks: Tensor) -> Tensor:
    """``[N, 4]`` tight boxes ``[x0, y0, x1, y1]`` (exclusive ends) of ``[N, H, W]`` masks (zeros if empty)."""
    _, height, width = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    y0 = rows.int().argmax(dim=1)
    y1 = height - rows.flip(1).int().argmax(dim=1)
    x0 = cols.int().argmax(dim=1)
    x1 = width - cols.flip(1).int().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).long()
    return torch.where(rows.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))
