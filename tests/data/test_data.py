"""Ground-truth data: the synthetic species generator and the upsampled digits."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from camscope.data import PARTS, SyntheticSpecies, load_digits_data
from camscope.data.digits import split_indices
from camscope.errors import CamscopeError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def species() -> SyntheticSpecies:
    return SyntheticSpecies(num_classes=16, size=64, seed=0)


@pytest.fixture(scope="module")
def batch(species: SyntheticSpecies):
    return species.sample(64, generator=7)


# ---------------------------------------------------------------- determinism


def test_same_seed_same_tensors(species: SyntheticSpecies) -> None:
    a = species.sample(24, generator=torch.Generator().manual_seed(3))
    b = SyntheticSpecies(num_classes=16, size=64, seed=0).sample(24, generator=3)
    for name in ("images", "labels", "boxes", "part_masks"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = species.sample(24, generator=4)
    assert not torch.equal(a.images, c.images)


def test_design_is_deterministic_and_seeded() -> None:
    a, b = SyntheticSpecies(16, seed=5), SyntheticSpecies(16, seed=5)
    assert a.class_names == b.class_names
    assert torch.equal(a.differs(), b.differs())
    assert [a.describe(c) for c in range(16)] == [b.describe(c) for c in range(16)]
    other = SyntheticSpecies(16, seed=6)
    assert [a.describe(c) for c in range(16)] != [other.describe(c) for c in range(16)]


def test_default_stream_is_seeded() -> None:
    a = SyntheticSpecies(8, seed=2).sample(6)
    b = SyntheticSpecies(8, seed=2).sample(6)
    assert torch.equal(a.images, b.images)


def test_split_prefix_is_the_same_images(species: SyntheticSpecies) -> None:
    small = species.sample_split(600, seed=11, count=40, chunk=64)
    larger = species.sample_split(600, seed=11, count=100, chunk=64)
    assert torch.equal(small.images, larger.images[:40])
    assert torch.equal(small.labels, larger.labels[:40])
    assert len(larger) == 100
    # Balanced within each block.
    counts = torch.bincount(larger.labels[:64], minlength=16)
    assert counts.min() == counts.max() == 4


# ---------------------------------------------------------------- class design


def test_class_design_structure(species: SyntheticSpecies) -> None:
    distance = species.part_distance()
    assert torch.equal(distance, distance.T) and bool((distance.diagonal() == 0).all())
    families = species.families
    same_family = families[:, None] == families[None, :]
    off_diagonal = ~torch.eye(16, dtype=torch.bool)
    # Members of a family differ in exactly one part (their family's key part), other classes in at least two.
    assert bool((distance[same_family & off_diagonal] == 1).all())
    assert bool((distance[~same_family] >= 2).all())
    assert len(species.one_part_pairs()) == 16  # 8 families of 2, both orders
    for c in range(16):
        d = species.most_similar(c)
        assert d != c and families[d] == families[c]
        assert species.differing_parts(c, d) == [species.key_parts[int(families[c])]]
        assert species.similar_classes(c) == [d]
    # Every part is the key part of some family, and the differences are of colour, texture and shape.
    assert set(species.key_parts) == set(PARTS)
    kinds = set()
    for c, d in species.one_part_pairs():
        (part,) = species.differing_parts(c, d)
        a, b = species.describe(c)[part], species.describe(d)[part]
        kinds |= {attribute for attribute in a if a[attribute] != b[attribute]}
    assert kinds == {"colour", "pattern", "shape"}
    # Graded similarity: some classes of different families differ in only two or three parts.
    assert int(distance[~same_family].min()) <= 3
    assert len(set(species.class_names)) == 16


def test_differing_parts_match_descriptions(species: SyntheticSpecies) -> None:
    for c in range(16):
        for d in range(16):
            described = [p for p in PARTS if species.describe(c)[p] != species.describe(d)[p]]
            assert species.differing_parts(c, d) == described
            assert bool(species.differs()[c, d].sum() == species.part_distance()[c, d])


# ---------------------------------------------------------------- masks and images


def test_shapes_ranges_and_boxes(batch) -> None:
    n = len(batch)
    assert batch.images.shape == (n, 3, 64, 64) and batch.images.dtype == torch.float32
    assert float(batch.images.min()) >= 0.0 and float(batch.images.max()) <= 1.0
    assert batch.part_masks.shape == (n, len(PARTS), 64, 64) and batch.part_masks.dtype == torch.bool
    assert int(batch.part_masks.sum(dim=1).max()) == 1  # disjoint (visible regions)
    assert bool(batch.part_masks.flatten(2).any(dim=2).all())  # every part is visible in every image
    objects = batch.object_masks
    for i in range(n):
        x0, y0, x1, y1 = batch.boxes[i].tolist()
        inside = torch.zeros(64, 64, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert not bool((objects[i] & ~inside).any())
        # Tight: the object touches every side of its box.
        assert (
            objects[i, y0].any()
            and objects[i, y1 - 1].any()
            and objects[i, :, x0].any()
            and objects[i, :, x1 - 1].any()
        )
        assert x0 > 0 and x1 < 64 and y0 > 0 and y1 < 64  # the object lies inside the image


def test_difference_masks_non_empty_and_inside_box(species: SyntheticSpecies, batch) -> None:
    others = species.most_similar_classes()[batch.labels]
    masks = species.difference_masks(batch.part_masks, batch.labels, others)
    assert masks.shape == (len(batch), 64, 64)
    assert bool(masks.flatten(1).any(dim=1).all())
    assert not bool((masks & ~batch.object_masks).any())
    for i in range(len(batch)):
        (part,) = species.differing_parts(int(batch.labels[i]), int(others[i]))
        assert torch.equal(masks[i], batch.part_masks[i, PARTS.index(part)])
    # Against itself nothing differs; against a distant class several parts do.
    assert not bool(species.difference_masks(batch.part_masks, batch.labels, batch.labels).any())
    far = species.part_distance().argmax(dim=1)[batch.labels]
    assert bool((species.difference_masks(batch.part_masks, batch.labels, far).sum((1, 2)) > masks.sum((1, 2))).all())


def test_one_part_pairs_differ_only_in_that_part(species: SyntheticSpecies) -> None:
    pairs = species.one_part_pairs()
    pose = species.sample_poses(6, generator=21)
    first = torch.tensor([c for c, _ in pairs]).repeat_interleave(6)
    second = torch.tensor([d for _, d in pairs]).repeat_interleave(6)
    poses = pose[torch.arange(6).repeat(len(pairs))]
    assert torch.equal(pose.repeat(2).center[:4], pose.center[[0, 0, 1, 1]])
    a, b = species.render(first, poses), species.render(second, poses)
    changed = (a.images != b.images).any(dim=1)
    key = torch.tensor([PARTS.index(species.differing_parts(c, d)[0]) for c, d in pairs]).repeat_interleave(6)
    rows = torch.arange(len(first))
    allowed = a.part_masks[rows, key] | b.part_masks[rows, key]
    assert not bool((changed & ~allowed).any()), "pixels changed outside the differing part"
    assert bool(changed.flatten(1).sum(1).ge(3).all()), "the differing part must really look different"
    # The other parts are untouched wherever the differing part covers neither image.
    for p in range(len(PARTS)):
        other = key != p
        assert torch.equal((a.part_masks[:, p] & ~allowed)[other], (b.part_masks[:, p] & ~allowed)[other])


def test_any_pair_differs_only_in_its_differing_parts(species: SyntheticSpecies) -> None:
    generator = torch.Generator().manual_seed(5)
    first = torch.randint(0, 16, (48,), generator=generator)
    second = torch.randint(0, 16, (48,), generator=generator)
    pose = species.sample_poses(48, generator)
    a, b = species.render(first, pose), species.render(second, pose)
    differs = species.differs()[first, second]  # [N, P]
    allowed = ((a.part_masks | b.part_masks) & differs[:, :, None, None]).any(dim=1)
    assert not bool(((a.images != b.images).any(dim=1) & ~allowed).any())
    assert torch.equal(species.counterfactual(a, second).images, b.images)


def test_object_pixels_do_not_depend_on_the_background(species: SyntheticSpecies, batch) -> None:
    other = species.sample_poses(len(batch), generator=99)
    keep = {"center", "scale", "angle", "facing", "part_gain", "gain", "noise"}
    mixed = dataclasses.replace(
        batch.pose, **{f.name: getattr(other, f.name) for f in dataclasses.fields(other) if f.name not in keep}
    )
    again = species.render(batch.labels, mixed)
    assert torch.equal(again.part_masks, batch.part_masks)
    changed = (again.images != batch.images).any(dim=1)
    assert not bool((changed & batch.object_masks).any())
    assert bool(changed.any())


def test_parts_have_their_class_colours(species: SyntheticSpecies) -> None:
    """Inside a plain part's mask the pixel is the palette colour x gains (+ noise)."""
    quiet = SyntheticSpecies(16, 64, seed=0, noise=0.0, distractors=0)
    batch = quiet.sample(16, generator=2)
    from camscope.data.synthetic import PALETTE

    palette = torch.tensor(list(PALETTE.values()))
    for i in range(16):
        style = quiet.describe(int(batch.labels[i]))
        for p, part in enumerate(PARTS):
            mask = batch.part_masks[i, p]
            if part == "head":
                continue  # the eye is drawn inside the head
            if style[part]["pattern"] != "plain":
                continue
            expected = (
                palette[list(PALETTE).index(style[part]["colour"])] * batch.pose.part_gain[i, p] * batch.pose.gain[i]
            )
            pixels = batch.images[i][:, mask]
            assert torch.allclose(pixels, expected.clamp(0, 1)[:, None].expand_as(pixels), atol=1e-5), (i, part)


def test_sizes_and_classes() -> None:
    big = SyntheticSpecies(num_classes=30, size=128, seed=1, family_size=3)
    batch = big.sample(8, generator=0)
    assert batch.images.shape == (8, 3, 128, 128)
    assert len(big.one_part_pairs()) == 10 * 6
    assert big.similar_classes(0) == [1, 2]
    odd = SyntheticSpecies(num_classes=5, seed=0)
    assert int(odd.families[-1]) == 2 and odd.most_similar(4) != 4
    assert repr(odd).startswith("SyntheticSpecies(num_classes=5")
    assert SyntheticSpecies(**odd.config()).class_names == odd.class_names


def test_user_mistakes() -> None:
    with pytest.raises(CamscopeError, match="num_classes"):
        SyntheticSpecies(num_classes=1)
    with pytest.raises(CamscopeError, match="size"):
        SyntheticSpecies(size=16)
    species = SyntheticSpecies(4, size=32)
    with pytest.raises(CamscopeError, match="out of range"):
        species.differing_parts(0, 4)
    with pytest.raises(CamscopeError, match="labels"):
        species.sample(3, labels=torch.tensor([0, 1]))
    with pytest.raises(CamscopeError, match="generator"):
        species.sample(3, generator="seed")  # type: ignore[arg-type]
    batch = species.sample(2, 0)
    with pytest.raises(CamscopeError, match="part_masks"):
        species.difference_masks(batch.part_masks[:, :2], batch.labels, 0)
    with pytest.raises(CamscopeError, match="poses"):
        SyntheticSpecies(4, size=48).render(batch.labels, batch.pose)


# ---------------------------------------------------------------- digits


def test_digits_split_and_tensors() -> None:
    train, test = load_digits_data("train"), load_digits_data("test")
    assert train.images.shape == (1347, 1, 32, 32) and test.images.shape == (450, 1, 32, 32)
    assert set(train.indices.tolist()).isdisjoint(test.indices.tolist())
    assert len(train) + len(test) == 1797
    assert float(test.images.min()) >= 0.0 and float(test.images.max()) <= 1.0
    counts = torch.bincount(test.labels, minlength=10)
    assert int(counts.min()) >= 44 and int(counts.max()) <= 46  # stratified: 25% of each digit
    again = load_digits_data("test")
    assert torch.equal(again.images, test.images) and torch.equal(again.indices, test.indices)
    other = load_digits_data("test", seed=1)
    assert not torch.equal(other.indices, test.indices)


def test_digits_are_bilinear_upsampled_sklearn_digits() -> None:
    from sklearn.datasets import load_digits

    raw = torch.as_tensor(load_digits().images, dtype=torch.float32) / 16
    test = load_digits_data("test", size=32)
    expected = F.interpolate(raw[test.indices][:, None], size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(test.images, expected)
    assert torch.equal(load_digits_data("all", size=8).images[:, 0], raw)
    rgb = load_digits_data("test", channels=3)
    assert rgb.images.shape == (450, 3, 32, 32) and torch.equal(rgb.images[:, 1], test.images[:, 0])
    labels = torch.as_tensor(load_digits().target)
    assert torch.equal(test.labels, labels[test.indices])
    _, test_idx = split_indices(labels, seed=0)
    assert torch.equal(test_idx, test.indices)


def test_digits_user_mistakes() -> None:
    with pytest.raises(CamscopeError, match="split"):
        load_digits_data("validation")
    with pytest.raises(CamscopeError, match="channels"):
        load_digits_data("test", channels=2)
