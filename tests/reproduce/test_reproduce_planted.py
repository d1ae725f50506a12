"""The planted-ground-truth section's own pieces: the mark, planted outliers, seeded training, class-balanced subsets."""

from __future__ import annotations

import torch

from camscope.reproduce import planted


def test_mark_and_planted_outliers() -> None:
    images = torch.rand(30, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    marked = planted.add_mark(images)
    assert torch.equal(marked[..., 4:, :], images[..., 4:, :]) and bool((marked[..., 1:4, 1:4] == 1).all())
    labels = torch.arange(30) % 5
    x, y, index = planted.plant_outliers(images, labels, "mislabelled", seed=3, count=4)
    moved = torch.zeros(30, dtype=torch.bool)
    moved[index] = True
    assert bool((y[moved] != labels[moved]).all()) and torch.equal(y[~moved], labels[~moved])
    assert torch.equal(x, images) and bool(((y >= 0) & (y < 5)).all())
    x, y, index = planted.plant_outliers(images, labels, "atypical", seed=3, count=4)
    assert torch.equal(y, labels)
    for i in range(30):
        expected = images[i].rot90(1, dims=(-2, -1)) if i in index.tolist() else images[i]
        assert torch.equal(x[i], expected)


def test_training_is_seeded_and_subsets_are_balanced() -> None:
    images = torch.rand(40, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(40) % 10
    first = planted.train_small(images, labels, steps=3, seed=5)
    second = planted.train_small(images, labels, steps=3, seed=5)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert not first.training
    subset = planted._balanced(labels, 20, seed=0)
    assert torch.bincount(labels[subset], minlength=10).tolist() == [2] * 10
