"""The synthetic species' difficulty knobs and levels: the easy level is the generator as it was, the knobs do what
they say, and the ground truth (part masks, counterfactual renderings) stays exact at every level."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from camscope.data import PARTS, SyntheticSpecies
from camscope.data.synthetic import LEVELS, PALETTE
from camscope.errors import CamscopeError

pytestmark = pytest.mark.usefixtures("one_thread")

REFERENCE = Path(__file__).with_name("species_easy_reference.safetensors")


def _reference_cases() -> dict[str, object]:
    """The batches of ``species_easy_reference.safetensors``, rendered by the generator as it is now."""
    return {
        "zoo_test": SyntheticSpecies(16, 64, 0).sample_split(2048, 2, count=2),
        "seeded": SyntheticSpecies(8, 48, seed=3).sample(3, generator=5),
        "stream": SyntheticSpecies(12, 40, seed=1, distractors=7, noise=0.05).sample(2),
    }


def test_existing_seeds_give_the_images_rendered_before_the_knobs_existed() -> None:
    """The file holds images rendered by the generator before the difficulty knobs (uint8, part index per pixel)."""
    reference = load_file(str(REFERENCE))
    for name, batch in _reference_cases().items():
        images = (batch.images * 255).round().to(torch.uint8)
        assert (images.int() - reference[f"{name}.images"].int()).abs().max() <= 1, name
        index = (batch.part_masks.to(torch.uint8) * torch.arange(1, 6, dtype=torch.uint8).view(1, 5, 1, 1)).sum(1)
        assert torch.equal(index.to(torch.uint8), reference[f"{name}.part_index"]), name
        assert torch.equal(batch.labels, reference[f"{name}.labels"]), name
        assert torch.equal(batch.boxes, reference[f"{name}.boxes"]), name
        assert batch.pose.colour_offset is None and batch.pose.occluder is None  # nothing drawn for the knobs


def test_easy_level_is_the_default_and_its_config_is_unchanged() -> None:
    assert LEVELS["easy"] == {} and list(LEVELS) == ["easy", "medium", "hard"]
    default = SyntheticSpecies(16, 64, 0)
    assert SyntheticSpecies.at_level("easy").config() == default.config()
    assert set(default.config()) == {
        "num_classes", "size", "seed", "family_size", "distractors", "noise", "min_family_distance",
    }  # fmt: skip


@pytest.mark.parametrize("level", ["medium", "hard"])
def test_levels_round_trip_through_their_config_and_keep_the_ground_truth(level: str) -> None:
    species = SyntheticSpecies.at_level(level, num_classes=8, size=64, seed=0)
    again = SyntheticSpecies(**species.config())
    batch, same = species.sample(6, generator=4), again.sample(6, generator=4)
    assert torch.equal(batch.images, same.images) and torch.equal(batch.part_masks, same.part_masks)
    # Rendering the same poses as the most similar class changes pixels only inside the differing parts' masks
    # (of either rendering): occluders, colour offsets and textures belong to the pose, not the class.
    similar = species.most_similar_classes()[batch.labels]
    counter = species.counterfactual(batch, similar)
    inside = species.difference_masks(batch.part_masks, batch.labels, similar) | species.difference_masks(
        counter.part_masks, counter.labels, batch.labels
    )
    changed = (batch.images != counter.images).any(dim=1)
    assert not bool((changed & ~inside).any())
    # The parts' masks stay disjoint and within the image; the box is the visible object's.
    assert int(batch.part_masks.sum(dim=1).max()) <= 1
    for key in LEVELS[level]["key_parts"]:
        assert key in PARTS
    assert set(species.key_parts) <= set(LEVELS[level]["key_parts"])


def test_key_contrast_scales_the_difference_between_family_members() -> None:
    """At contrast k the two members' key parts differ by k times their palette colours' difference."""
    full = SyntheticSpecies(4, 64, 0, noise=0.0, distractors=0)
    faint = SyntheticSpecies(4, 64, 0, noise=0.0, distractors=0, key_contrast=0.25)
    pose = full.sample_poses(1, generator=3)
    labels, sibling = torch.tensor([0]), torch.tensor([full.most_similar(0)])
    key = PARTS.index(full.key_parts[0])
    differences = []
    for species in (full, faint):
        a, b = species.render(labels, pose), species.render(sibling, pose)
        region = a.part_masks[0, key] & b.part_masks[0, key] & ~a.part_masks[0, PARTS.index("head")]
        plain = region & ((a.images[0] - b.images[0]).abs().sum(dim=0) > 0)
        assert bool(plain.any())
        differences.append((a.images[0] - b.images[0])[:, plain].abs().max())
    assert float(differences[1]) == pytest.approx(0.25 * float(differences[0]), rel=0.02, abs=0.01)
    # Outside the key part both generators render the same pixels.
    a_full, a_faint = full.render(labels, pose), faint.render(labels, pose)
    outside = ~a_full.part_masks[0, key]
    assert torch.equal(a_full.images[0][:, outside], a_faint.images[0][:, outside])


def test_occlusion_hides_parts_and_the_masks_stay_the_visible_regions() -> None:
    clear = SyntheticSpecies(6, 64, 0)
    hidden = SyntheticSpecies(6, 64, 0, occlusion=1.0)
    poses = hidden.sample_poses(12, generator=8)
    assert poses.occluder is not None and bool(poses.occluder.all())
    labels = torch.arange(12) % 6
    plain_pose = type(poses)(**{**{k: getattr(poses, k) for k in poses.__dataclass_fields__}, "occluder": None})
    seen, covered = clear.render(labels, plain_pose), hidden.render(labels, poses)
    assert not bool((covered.part_masks & ~seen.part_masks).any())  # an occluder only removes visible pixels
    assert int(covered.part_masks.sum()) < int(seen.part_masks.sum())
    moved = (seen.images != covered.images).any(dim=1)
    hidden_pixels = seen.part_masks.any(dim=1) & ~covered.part_masks.any(dim=1)
    assert not bool((hidden_pixels & ~moved).any())


def test_intra_class_knobs_vary_images_of_one_class_and_stay_off_by_default() -> None:
    species = SyntheticSpecies(
        4, 64, 0, colour_jitter=0.1, texture_jitter=0.3, scale_range=(0.2, 0.4), max_rotation=1.0
    )
    poses = species.sample_poses(200, generator=1)
    assert poses.colour_offset is not None and poses.colour_offset.shape == (200, len(PARTS), 3)
    assert float(poses.colour_offset.std()) == pytest.approx(0.1, rel=0.15)
    assert (
        poses.texture_scale is not None
        and 0.7 <= float(poses.texture_scale.min()) < float(poses.texture_scale.max()) <= 1.3
    )
    assert float(poses.scale.min()) >= 0.2 * 64 and float(poses.scale.max()) <= 0.4 * 64
    assert float(poses.angle.abs().max()) > 0.5
    batch = species.render(torch.zeros(8, dtype=torch.long), poses[:8])
    assert len(batch[:3]) == 3 and batch[torch.tensor([1, 4])].pose.colour_offset.shape == (2, len(PARTS), 3)
    split = species.sample_split(20, seed=2, chunk=8)  # blocks with optional pose fields concatenate
    assert len(split) == 20 and split.pose.colour_offset is not None and split.pose.colour_offset.shape[0] == 20


def test_label_noise_flips_the_given_share_to_other_classes_only_when_asked() -> None:
    labels = torch.arange(4000) % 16
    clean = SyntheticSpecies(16, 64, 0)
    assert torch.equal(clean.noisy_labels(labels, generator=1), labels)
    noisy = SyntheticSpecies(16, 64, 0, label_noise=0.2).noisy_labels(labels, generator=1)
    flipped = noisy != labels
    assert float(flipped.float().mean()) == pytest.approx(0.2, abs=0.03)
    assert bool(((noisy >= 0) & (noisy < 16)).all())


def test_bad_knobs_are_clear_errors() -> None:
    for kwargs, message in (
        ({"key_contrast": 0.0}, "key_contrast"),
        ({"key_contrast": 1.5}, "key_contrast"),
        ({"key_parts": ("tail", "antenna")}, "key_parts"),
        ({"key_parts": "tail"}, "key_parts"),
        ({"scale_range": (0.4, 0.3)}, "scale_range"),
        ({"scale_range": (0.3, 0.6)}, "fit"),
        ({"occlusion": -0.1}, "occlusion"),
        ({"colour_jitter": float("nan")}, "colour_jitter"),
        ({"label_noise": 2}, "label_noise"),
    ):
        with pytest.raises(CamscopeError, match=message):
            SyntheticSpecies(8, 64, 0, **kwargs)
    with pytest.raises(CamscopeError, match="level"):
        SyntheticSpecies.at_level("impossible")
    assert len(PALETTE) == 10
