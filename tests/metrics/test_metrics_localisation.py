"""Localisation metrics against brute-force loops on hand-made maps and sklearn."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import average_precision_score

from camscope.errors import CamscopeError
from camscope.metrics import auprc, boxes_to_masks, energy_pointing_game, iou, pointing_game


def _maps(batch: int = 4, size: int = 20, seed: int = 0) -> torch.Tensor:
    maps = torch.rand(batch, size, size, generator=torch.Generator().manual_seed(seed))
    maps[0, :5, :5] = 0.3  # ties
    flat = maps.flatten(1)
    return (
        (flat - flat.min(1, keepdim=True).values)
        / (flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values)
    ).reshape(maps.shape)


def _masks(batch: int = 4, size: int = 20, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, size, size, generator=torch.Generator().manual_seed(seed)) > 0.7


def test_boxes_to_masks_is_slicing() -> None:
    boxes = [[[2, 3, 7, 5]], [[0, 0, 1, 1], [4, 4, 6, 8]], []]
    masks = boxes_to_masks(boxes, (10, 9))
    expected = torch.zeros(3, 10, 9, dtype=torch.bool)
    expected[0, 3:5, 2:7] = True
    expected[1, 0:1, 0:1] = True
    expected[1, 4:8, 4:6] = True
    assert torch.equal(masks, expected)
    assert torch.equal(boxes_to_masks(torch.tensor([[2, 3, 7, 5]]), (10, 9)), expected[:1])
    with pytest.raises(CamscopeError, match="x2 >= x1"):
        boxes_to_masks([[5, 0, 1, 1]], (4, 4))


def test_iou_matches_a_loop() -> None:
    maps, masks = _maps(), _masks()
    result = iou(maps, masks=masks, thresholds=(0.2, 0.5, 0.8))
    for b in range(4):
        for t_index, t in enumerate((0.2, 0.5, 0.8)):
            inter = union = 0
            for i in range(20):
                for j in range(20):
                    a, g = bool(maps[b, i, j] >= t), bool(masks[b, i, j])
                    inter += a and g
                    union += a or g
            assert result.curves["iou"][b, t_index].item() == pytest.approx(inter / union, abs=1e-6)
        assert result["iou"][b].item() == pytest.approx(result.curves["iou"][b, 1].item())


def test_auprc_matches_sklearn() -> None:
    maps, masks = _maps(), _masks()
    maps[1] = torch.round(maps[1] * 4) / 4  # many ties
    result = auprc(maps, masks=masks)
    for b in range(4):
        reference = average_precision_score(masks[b].flatten().numpy(), maps[b].flatten().double().numpy())
        assert result["auprc"][b].item() == pytest.approx(reference, abs=1e-6)
    empty = auprc(maps[:1], masks=torch.zeros(1, 20, 20, dtype=torch.bool))
    assert math.isnan(empty["auprc"].item())


def test_pointing_game_matches_a_loop() -> None:
    maps = torch.zeros(6, 40, 40)
    peaks = [(5, 5), (5, 5), (20, 20), (39, 0), (10, 30), (0, 0)]
    for b, (i, j) in enumerate(peaks):
        maps[b, i, j] = 1.0
    maps[5, 30, 30] = 1.0  # a tie: the first in raster order, (0, 0), is the peak
    boxes = [
        [[15, 0, 40, 40]],
        [[20, 0, 40, 40]],
        [[19, 19, 22, 22]],
        [[10, 28, 20, 40]],
        [[0, 0, 40, 40]],
        [[25, 25, 40, 40]],
    ]
    result = pointing_game(maps, boxes=boxes, tolerance=15)
    masks = boxes_to_masks(boxes, (40, 40))
    for b, (i, j) in enumerate(peaks):
        best = min(math.hypot(y - i, x - j) for y in range(40) for x in range(40) if masks[b, y, x])
        expected = 1.0 if best < 15 or best == 0 else 0.0
        assert result["hit"][b].item() == expected, b
    assert result["hit"].tolist() == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    exact = pointing_game(maps, boxes=boxes, tolerance=0)
    assert exact["hit"].tolist() == [0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    empty = pointing_game(maps[:1], masks=torch.zeros(1, 40, 40, dtype=torch.bool))
    assert math.isnan(empty["hit"].item())  # quantus 0.6.0 would count a hit


def test_energy_pointing_game_matches_a_loop() -> None:
    maps, masks = _maps(), _masks()
    result = energy_pointing_game(maps, masks=masks)
    for b in range(4):
        inside = sum(float(maps[b, i, j]) for i in range(20) for j in range(20) if masks[b, i, j])
        assert result["proportion"][b].item() == pytest.approx(inside / float(maps[b].sum()), abs=1e-6)
    zero = energy_pointing_game(torch.zeros(1, 4, 4), boxes=[[0, 0, 2, 2]])
    assert math.isnan(zero["proportion"].item())


def test_maps_are_resized_and_normalised() -> None:
    small = torch.tensor([[[0.0, 2.0], [0.0, 0.0]]])
    result = energy_pointing_game(small, boxes=[[1, 0, 2, 1]])  # boxes are in pixels of the maps
    assert result["proportion"].item() == pytest.approx(1.0)
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2, 2:] = True
    big = energy_pointing_game(small, masks=masks)  # maps resized bilinearly to the masks
    assert 0.5 < big["proportion"].item() < 1.0
    with pytest.raises(CamscopeError, match="exactly one of"):
        iou(small)
    with pytest.raises(CamscopeError, match="ground-truth regions"):
        iou(small, masks=torch.zeros(2, 2, 2, dtype=torch.bool))
