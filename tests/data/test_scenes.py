"""Scenes of several synthetic species: the ground truth agrees with the pixels and with the generator."""

from __future__ import annotations

import pytest
import torch

from camscope.data.scenes import SceneBatch, SpeciesScenes, mask_boxes
from camscope.data.synthetic import PARTS
from camscope.errors import CamscopeError


@pytest.fixture(scope="module")
def scenes() -> SpeciesScenes:
    return SpeciesScenes(num_classes=4, size=96, seed=0)


@pytest.fixture(scope="module")
def batch(scenes: SpeciesScenes) -> SceneBatch:
    return scenes.sample(8, generator=7)


def test_same_seed_same_scenes_and_a_split_prefix_is_the_same_scenes(scenes, batch):
    again = scenes.sample(8, generator=7)
    assert torch.equal(again.images, batch.images) and torch.equal(again.instances, batch.instances)
    whole = scenes.sample_split(6, seed=3, chunk=4)
    prefix = scenes.sample_split(6, seed=3, count=5, chunk=4)  # a block cut short
    assert (
        len(prefix) == 5
        and torch.equal(prefix.images, whole.images[:5])
        and torch.equal(prefix.labels, whole.labels[:5])
    )


def test_several_species_per_scene_with_labels_counts_and_padding(scenes, batch):
    counts = batch.counts
    assert bool(((counts >= 2) & (counts <= 4)).all())
    for i, count in enumerate(counts.tolist()):
        assert bool((batch.labels[i, :count] >= 1).all()) and bool((batch.labels[i, count:] == -1).all())
        assert bool((batch.labels[i, :count] <= scenes.num_classes).all())
    assert len({int(v) for v in batch.labels[batch.labels >= 1]}) > 1  # several species
    assert scenes.class_names == ["background", *scenes.species.class_names]


def test_boxes_are_the_tight_boxes_of_the_visible_pixels(batch):
    masks = batch.object_masks()
    for i in range(len(batch)):
        for k in range(int(batch.counts[i])):
            rows, cols = torch.nonzero(masks[i, k], as_tuple=True)
            expected = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
            assert batch.boxes[i, k].tolist() == expected
        assert not bool(masks[i, int(batch.counts[i]) :].any())
    # Objects' visible pixels are disjoint by construction (one instance index per pixel), and parts lie on objects.
    assert torch.equal(batch.parts > 0, batch.instances > 0)
    assert torch.equal(batch.part_masks().any(dim=2), masks)


def test_each_object_is_a_rendering_of_its_species(scenes, batch):
    """Re-render scene 0's objects alone at their places: the scene shows their exact pixels where they are visible."""
    generator = torch.Generator().manual_seed(7)
    counts = torch.randint(scenes.objects[0], scenes.objects[1] + 1, (len(batch),), generator=generator)
    species = torch.randint(0, scenes.num_classes, (int(counts.sum()),), generator=generator)
    tiles = scenes.species.render(species, scenes.species.sample_poses(int(counts.sum()), generator))
    count = int(counts[0])
    assert batch.labels[0, :count].tolist() == (species[:count] + 1).tolist()
    for k in range(count):
        visible = batch.object_masks()[0, k]
        tile_box = tiles.boxes[k]
        dx, dy = int(batch.boxes[0, k, 0] - tile_box[0]), int(batch.boxes[0, k, 1] - tile_box[1])
        # Offsets from the top-left corner hold when that corner's pixels are visible; compare the colours there.
        rows, cols = torch.nonzero(visible, as_tuple=True)
        tile_rows, tile_cols = rows - dy, cols - dx
        inside = (tile_rows >= 0) & (tile_rows < scenes.tile) & (tile_cols >= 0) & (tile_cols < scenes.tile)
        part = batch.parts[0, rows[inside], cols[inside]].long() - 1
        tile_part = tiles.part_masks[k].long().argmax(dim=0)[tile_rows[inside], tile_cols[inside]]
        assert float((part == tile_part).float().mean()) > 0.95


def test_overlap_is_bounded(scenes, batch):
    for i in range(len(batch)):
        boxes = batch.boxes[i, : int(batch.counts[i])].float()
        visible = batch.object_masks()[i, : int(batch.counts[i])].flatten(1).sum(dim=1)
        assert bool((visible > 0).all())
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                lt = torch.maximum(boxes[a, :2], boxes[b, :2])
                rb = torch.minimum(boxes[a, 2:], boxes[b, 2:])
                inter = float((rb - lt).clamp(min=0).prod())
                smaller = float(
                    torch.minimum((boxes[a, 2:] - boxes[a, :2]).prod(), (boxes[b, 2:] - boxes[b, :2]).prod())
                )
                assert inter <= scenes.max_overlap * smaller + 1e-6


def test_semantic_classes_and_part_masks(batch):
    semantic = batch.semantic()
    for i in range(2):
        for k in range(int(batch.counts[i])):
            assert bool((semantic[i][batch.object_masks()[i, k]] == batch.labels[i, k]).all())
    assert bool((semantic[batch.instances == 0] == 0).all())
    assert batch.part_masks().shape[2] == len(PARTS)


def test_mask_boxes_of_empty_masks_are_zero():
    masks = torch.zeros(2, 5, 6, dtype=torch.bool)
    masks[1, 4, 5] = True
    assert mask_boxes(masks).tolist() == [[0, 0, 0, 0], [5, 4, 6, 5]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"objects": (3, 2)}, "objects"),
        ({"objects": (0, 2)}, "objects"),
        ({"tile": 16}, "tile"),
        ({"size": 40, "tile": 48}, "size"),
        ({"max_overlap": 1.0}, "max_overlap"),
        ({"noise": -1.0}, "noise"),
    ],
)
def test_bad_settings_are_one_clear_error(kwargs, message):
    with pytest.raises(CamscopeError, match=message):
        SpeciesScenes(**kwargs)


def test_zero_scenes_and_a_negative_count(scenes):
    assert len(scenes.sample(0)) == 0 and scenes.sample_split(5, seed=1, count=0).images.shape == (0, 3, 96, 96)
    with pytest.raises(CamscopeError, match="negative"):
        scenes.sample(-1)
