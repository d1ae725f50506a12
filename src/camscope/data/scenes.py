"""Scenes of several synthetic species: ground truth for detectors and segmenters.

Every scene holds a few birds of :mod:`camscope.data.synthetic` (each of a species drawn
at random, several species per scene) over a cluttered background, with what a detector
and a segmenter should find: each object's class, its box and its visible region, and each
visible pixel's part.

How a scene is made, from the generator's public functions only:

* Each object is rendered alone by a :class:`~camscope.data.synthetic.SyntheticSpecies` of
  side ``tile`` without distractors or noise (its own pose: scale, rotation, facing,
  brightness), and its pixels (its part masks) are pasted into the scene at a random place,
  so the object keeps the exact masks of the generator.
* The background is a :class:`~camscope.data.synthetic.SyntheticSpecies` image of side
  ``size`` with ``distractors`` shapes, rendered with its bird placed outside the image.
* Objects are placed one after the other; a place is refused when the object's box would
  cover more than ``max_overlap`` of an earlier object's box or the other way round (up to
  20 tries, then the object is left out). Later objects hide what they cover of earlier
  ones: boxes and masks are those of the *visible* pixels.
* Pixel noise is added last, over the whole scene.

Classes follow torchvision's detectors: label 0 is the background, label ``c + 1`` is the
species ``c`` of the generator, so a detector's labels, a segmenter's channels and
:attr:`SpeciesScenes.class_names` agree. Boxes are ``[x0, y0, x1, y1]`` pixel indices
with exclusive ends, as in :mod:`camscope.data.synthetic`.

Example:
    >>> import torch
    >>> from camscope.data.scenes import SpeciesScenes
    >>> scenes = SpeciesScenes(num_classes=4, size=96, seed=0)
    >>> batch = scenes.sample(3, generator=torch.Generator().manual_seed(1))
    >>> batch.images.shape, batch.labels.shape, batch.boxes.shape, batch.instances.shape
    (torch.Size([3, 3, 96, 96]), torch.Size([3, 4]), torch.Size([3, 4, 4]), torch.Size([3, 96, 96]))
    >>> bool(((batch.labels >= 1) | (batch.labels == -1)).all()), scenes.class_names[0]
    (True, 'background')
    >>> labels, boxes = batch.objects(0)
    >>> bool((batch.object_masks()[0, : len(labels)].flatten(1).any(dim=1)).all())
    True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from camscope.data.synthetic import PARTS, SyntheticSpecies
from camscope.errors import CamscopeError

__all__ = ["SceneBatch", "SpeciesScenes", "mask_boxes"]

_PLACEMENT_TRIES = 20


def mask_boxes(masks: Tensor) -> Tensor:
    """Tight boxes ``[..., 4]`` (``[x0, y0, x1, y1]``, exclusive ends) of bool masks ``[..., H, W]``; zeros if empty.

    Example:
        >>> import torch
        >>> mask = torch.zeros(1, 4, 5, dtype=torch.bool); mask[0, 1:3, 2:4] = True
        >>> mask_boxes(mask).tolist()
        [[2, 1, 4, 3]]
    """
    height, width = masks.shape[-2:]
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)
    y0 = rows.int().argmax(dim=-1)
    y1 = height - rows.flip(-1).int().argmax(dim=-1)
    x0 = cols.int().argmax(dim=-1)
    x1 = width - cols.flip(-1).int().argmax(dim=-1)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1).long()
    return torch.where(rows.any(dim=-1, keepdim=True), boxes, torch.zeros_like(boxes))


@dataclass
class SceneBatch:
    """A batch of scenes (``K``: the most objects a scene of the generator holds).

    Attributes:
        images: ``[N, 3, H, W]`` float32 RGB in ``[0, 1]``.
        labels: ``[N, K]`` int64: each object's class (1 to C; 0 is the background), -1 where a
            scene has fewer objects.
        boxes: ``[N, K, 4]`` int64 ``[x0, y0, x1, y1]`` (exclusive ends) of each object's visible
            pixels; zeros where there is no object.
        instances: ``[N, H, W]`` uint8: 0 for the background, ``k + 1`` where object ``k`` is visible.
        parts: ``[N, H, W]`` uint8: 0 for the background, ``p + 1`` where part ``p`` of
            :data:`~camscope.data.synthetic.PARTS` is visible (of whichever object).
    """

    images: Tensor
    labels: Tensor
    boxes: Tensor
    instances: Tensor
    parts: Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: Any) -> SceneBatch:
        """A sub-batch (``index``: a slice, an index tensor or a boolean mask)."""
        return SceneBatch(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    @property
    def counts(self) -> Tensor:
        """``[N]`` int64: the number of objects in each scene."""
        return (self.labels >= 0).sum(dim=1)

    def objects(self, index: int) -> tuple[Tensor, Tensor]:
        """The labels ``[n]`` and boxes ``[n, 4]`` (float, ``xyxy`` pixels) of the objects of scene ``index``."""
        present = self.labels[index] >= 0
        return self.labels[index][present], self.boxes[index][present].float()

    def object_masks(self) -> Tensor:
        """``[N, K, H, W]`` bool: the visible pixels of each object (empty where there is no object)."""
        slots = torch.arange(1, self.labels.shape[1] + 1, dtype=self.instances.dtype)
        return self.instances[:, None] == slots[None, :, None, None]

    def semantic(self) -> Tensor:
        """``[N, H, W]`` int64: each pixel's class (0 background, else the label of the object it shows)."""
        padded = torch.cat([torch.zeros_like(self.labels[:, :1]), self.labels.clamp(min=0)], dim=1)
        return padded.gather(1, self.instances.long().flatten(1)).reshape(self.instances.shape)

    def part_masks(self) -> Tensor:
        """``[N, K, P, H, W]`` bool: the visible region of part ``p`` of object ``k``."""
        parts = torch.arange(1, len(PARTS) + 1, dtype=self.parts.dtype)
        return self.object_masks()[:, :, None] & (self.parts[:, None, None] == parts[None, None, :, None, None])


class SpeciesScenes:
    """A seeded generator of scenes of several synthetic species (see :mod:`camscope.data.scenes`).

    Args:
        num_classes: species (classes 1 to ``num_classes``; 0 is the background).
        size: the scene's side in pixels.
        seed: seed of the species' design (the classes are those of
            ``SyntheticSpecies(num_classes, tile, seed, family_size=family_size)``).
        objects: ``(least, most)`` objects per scene.
        tile: the side each object is rendered at (an object spans about 70% of it).
        family_size: species per family (members differ in one part).
        distractors: background shapes per scene.
        noise: standard deviation of the pixel noise.
        max_overlap: the largest share of an object's box that another object's box may cover.

    Attributes:
        species: the :class:`~camscope.data.synthetic.SyntheticSpecies` of the objects.
        class_names: ``["background", *species.class_names]``.
    """

    def __init__(
        self,
        num_classes: int = 4,
        size: int = 96,
        seed: int = 0,
        *,
        objects: tuple[int, int] = (2, 4),
        tile: int = 48,
        family_size: int = 2,
        distractors: int = 6,
        noise: float = 0.03,
        max_overlap: float = 0.2,
    ) -> None:
        least, most = (int(v) for v in objects)
        if not 1 <= least <= most:
            raise CamscopeError(f"objects must be (least, most) with 1 <= least <= most, got {objects!r}")
        if tile < 32 or size < tile:
            raise CamscopeError(f"tile must be at least 32 pixels and size at least tile, got tile {tile}, size {size}")
        if not 0 <= max_overlap < 1:
            raise CamscopeError(f"max_overlap must be in [0, 1), got {max_overlap}")
        if noise < 0:
            raise CamscopeError(f"noise must not be negative, got {noise}")
        self.num_classes, self.size, self.seed, self.tile = num_classes, size, seed, tile
        self.objects = (least, most)
        self.family_size, self.distractors, self.noise, self.max_overlap = family_size, distractors, noise, max_overlap
        self.species = SyntheticSpecies(num_classes, tile, seed, family_size=family_size, distractors=0, noise=0.0)
        self._background = SyntheticSpecies(2, size, seed, distractors=distractors, noise=0.0)
        self.class_names = ["background", *self.species.class_names]

    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable), to rebuild the same generator."""
        return {
            "num_classes": self.num_classes,
            "size": self.size,
            "seed": self.seed,
            "objects": list(self.objects),
            "tile": self.tile,
            "family_size": self.family_size,
            "distractors": self.distractors,
            "noise": self.noise,
            "max_overlap": self.max_overlap,
        }

    def __repr__(self) -> str:
        return "SpeciesScenes(" + ", ".join(f"{k}={v}" for k, v in self.config().items()) + ")"

    def sample(self, n: int, generator: torch.Generator | int | None = None) -> SceneBatch:
        """Draw ``n`` scenes (``generator``: a ``torch.Generator``, an int seed, or None for seed ``seed``)."""
        if generator is None or isinstance(generator, int):
            generator = torch.Generator().manual_seed(self.seed if generator is None else generator)
        return self._sample(n, generator, n)

    def sample_split(self, size: int, seed: int, count: int | None = None, chunk: int = 256) -> SceneBatch:
        """A fixed data split: the first ``count`` (default all) of ``size`` scenes drawn with ``seed``.

        Blocks of ``chunk`` scenes, block ``j`` drawn as :meth:`sample` draws them with the seed
        ``seed * 1_000_003 + j``, so a prefix of a split is the same scenes whatever ``count``
        (and costs only the scenes it renders).
        """
        if size < 0 or chunk < 1:
            raise CamscopeError(f"size must not be negative and chunk must be positive, got {size} and {chunk}")
        count = size if count is None else max(0, min(int(count), size))
        blocks = []
        for block, start in enumerate(range(0, count, chunk)):
            generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + block)
            blocks.append(self._sample(min(chunk, size - start), generator, min(chunk, count - start)))
        if not blocks:
            return self.sample(0)
        return SceneBatch(
            **{f.name: torch.cat([getattr(b, f.name) for b in blocks]) for f in dataclasses.fields(SceneBatch)}
        )

    def _sample(self, n: int, g: torch.Generator, keep: int) -> SceneBatch:
        """Everything random about ``n`` scenes, drawn in a fixed order; the first ``keep`` scenes rendered."""
        if n < 0:
            raise CamscopeError(f"n must not be negative, got {n}")
        counts = torch.randint(self.objects[0], self.objects[1] + 1, (n,), generator=g)
        total = int(counts.sum())
        species = torch.randint(0, self.num_classes, (total,), generator=g)
        poses = self.species.sample_poses(total, g)
        pose = self._background.sample_poses(n, g)
        tries = torch.rand(total, _PLACEMENT_TRIES, 2, generator=g)
        noise = torch.randn(n, 3, self.size, self.size, generator=g) * self.noise
        counts, pose, noise = counts[:keep], pose[:keep], noise[:keep]
        objects = int(counts.sum())  # the kept scenes' objects come first
        rendered = self.species.render(species[:objects], poses[:objects])
        away = torch.full_like(pose.center, -10.0 * self.size)  # the background's own bird lies outside the image
        background = self._background.render(
            torch.zeros(keep, dtype=torch.long), dataclasses.replace(pose, center=away)
        )
        places, found = self._places(rendered.boxes, counts, tries[:objects])
        batch = self._composite(
            background.images, rendered.images, rendered.part_masks, species[:objects], counts, places, found
        )
        batch.images = (batch.images + noise).clamp(0, 1)
        return batch

    def _places(self, boxes: Tensor, counts: Tensor, tries: Tensor) -> tuple[Tensor, Tensor]:
        """``[M, 2]`` offsets ``(dx, dy)`` of each rendered tile in its scene, and ``[M]`` whether it is placed.

        Candidates (``tries`` ``[M, T, 2]`` uniform numbers) are drawn so that the object's box lies
        inside the scene; one whose box overlaps an earlier box of its scene by more than
        ``max_overlap`` is drawn again.
        """
        low, high = -boxes[:, :2], self.size - boxes[:, 2:]  # the offsets that keep the box inside
        candidates = (low[:, None] + tries * (high - low + 1)[:, None]).floor().long().tolist()
        extents = boxes.tolist()
        places = [[0, 0] for _ in extents]
        found = [False] * len(extents)
        first = 0
        for count in counts.tolist():
            placed: list[list[int]] = []
            for m in range(first, first + count):
                x0, y0, x1, y1 = extents[m]
                for dx, dy in candidates[m]:
                    box = [x0 + dx, y0 + dy, x1 + dx, y1 + dy]
                    if all(_overlap_share(box, other) <= self.max_overlap for other in placed):
                        places[m], found[m] = [dx, dy], True
                        placed.append(box)
                        break
            first += count
        return torch.tensor(places, dtype=torch.long).reshape(-1, 2), torch.tensor(found, dtype=torch.bool)

    def _composite(
        self,
        background: Tensor,
        tiles: Tensor,
        tile_parts: Tensor,
        species: Tensor,
        counts: Tensor,
        places: Tensor,
        found: Tensor,
    ) -> SceneBatch:
        """Paste each placed tile's object into its scene, in order; later objects hide earlier ones.

        The ``k``-th placed object of every scene is pasted at once (one gather and one scatter
        per slot), on canvases with a margin of one tile so that a tile may hang over the edge.
        """
        n, size, tile = background.shape[0], self.size, self.tile
        most, side = self.objects[1], size + 2 * tile
        images = torch.nn.functional.pad(background, (tile, tile, tile, tile)).reshape(n, 3, side * side)
        instances = torch.zeros(n, 1, side * side, dtype=torch.uint8)
        parts = torch.zeros_like(instances)
        part_index = (tile_parts.long() * torch.arange(1, len(PARTS) + 1)[None, :, None, None]).sum(dim=1)
        labels = torch.full((n, most), -1, dtype=torch.long)
        scene = torch.repeat_interleave(torch.arange(n), counts)
        placed = found.long()
        before = placed.cumsum(0) - placed  # placed objects before each one, over all scenes
        first = torch.cumsum(counts, 0) - counts  # each scene's first object
        slot = before - before[first.clamp(max=max(len(before) - 1, 0))][scene] if len(before) else before
        pixels = torch.arange(tile)
        for k in range(most):
            chosen = torch.nonzero(found & (slot == k)).flatten()
            if chosen.numel() == 0:
                continue
            rows = scene[chosen]
            dx, dy = places[chosen, 0] + tile, places[chosen, 1] + tile
            index = (
                (dy[:, None, None] + pixels[None, :, None]) * side + dx[:, None, None] + pixels[None, None, :]
            ).flatten(1)
            mask = part_index[chosen].flatten(1) > 0
            for canvas, values in (
                (images, tiles[chosen].flatten(2)),
                (instances, torch.full_like(part_index[chosen], k + 1).flatten(1)[:, None].to(torch.uint8)),
                (parts, part_index[chosen].flatten(1)[:, None].to(torch.uint8)),
            ):
                spread = index[:, None].expand(-1, canvas.shape[1], -1)
                current = canvas[rows].gather(2, spread)
                canvas[rows] = canvas[rows].scatter(2, spread, torch.where(mask[:, None], values, current))
            labels[rows, k] = species[chosen] + 1
        crop = (slice(tile, tile + size), slice(tile, tile + size))
        batch = SceneBatch(
            images=images.reshape(n, 3, side, side)[:, :, crop[0], crop[1]].contiguous(),
            labels=labels,
            boxes=torch.zeros(n, most, 4, dtype=torch.long),
            instances=instances.reshape(n, side, side)[:, crop[0], crop[1]].contiguous(),
            parts=parts.reshape(n, side, side)[:, crop[0], crop[1]].contiguous(),
        )
        batch.boxes = torch.where((labels >= 0)[..., None], mask_boxes(batch.object_masks()), 0)
        return batch


def _overlap_share(box: list[int], other: list[int]) -> float:
    """The larger of the shares of either box that their intersection covers."""
    width = min(box[2], other[2]) - max(box[0], other[0])
    height = min(box[3], other[3]) - max(box[1], other[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
    return width * height / max(smaller, 1)
