"""The evaluation pass's accumulator (merge, state), its data handling (limits, loaders) and ``progress=``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import camscope
from camscope.data.folders import ImageFolderData
from camscope.errors import CamscopeError
from camscope.evaluation.results import EvaluationResults
from camscope.passes.engine import Accumulator

METRICS = ["deletion", "sparseness", "consistency", "pointing_game"]
OPTIONS = {"deletion": {"step": 64}}


@pytest.fixture
def batch_images() -> torch.Tensor:
    return torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(4))


def _annotations(count: int, offset: int = 0) -> list[dict[str, object] | None]:
    """Boxes for even samples (dataset positions), none for odd ones."""
    return [{"boxes": [[0, 0, 8, 8]]} if (offset + i) % 2 == 0 else None for i in range(count)]


def _evaluate(model: nn.Module, data: torch.Tensor, offset: int = 0) -> camscope.evaluation.EvaluationReport:
    return camscope.evaluate(
        model,
        data,
        methods=["gradcam", "layercam"],
        metrics=METRICS,
        batch_size=4,
        annotations=_annotations(data.shape[0], offset),
        metric_options=OPTIONS,
        progress=False,
    )


def _accumulated(report: camscope.evaluation.EvaluationReport) -> EvaluationResults:
    results = EvaluationResults(report.methods, report.metrics)
    results.update(report.samples, report.results)
    return results


def test_merging_two_halves_equals_one_pass(tiny_cnn: nn.Module, batch_images: torch.Tensor) -> None:
    whole = _evaluate(tiny_cnn, batch_images)
    first = _accumulated(_evaluate(tiny_cnn, batch_images[:4]))
    second = _accumulated(_evaluate(tiny_cnn, batch_images[4:], offset=4))
    assert isinstance(first, Accumulator)
    merged = first.merge(second).joined()
    assert len(first) == 8
    for method in whole.methods:
        for metric in whole.metrics:
            expected, got = whole.results[method][metric], merged[method][metric]
            assert set(got.values) == set(expected.values) and set(got.curves) == set(expected.curves)
            for key in expected.values:
                torch.testing.assert_close(got.values[key], expected.values[key], rtol=0, atol=0, equal_nan=True)
            for key in expected.curves:
                torch.testing.assert_close(got.curves[key], expected.curves[key], rtol=0, atol=0, equal_nan=True)
    # The pointing game is NaN exactly where a sample has no box, in dataset order.
    hits = merged["gradcam"]["pointing_game"]["hit"]
    assert [math.isnan(v) for v in hits.tolist()] == [i % 2 == 1 for i in range(8)]


def test_merge_checks_methods_and_metrics() -> None:
    with pytest.raises(CamscopeError, match="cannot merge"):
        EvaluationResults(["gradcam"], ["deletion"]).merge(EvaluationResults(["gradcam"], ["insertion"]))
    with pytest.raises(CamscopeError, match="no result"):
        EvaluationResults(["gradcam"], ["deletion"]).update(["a"], {"gradcam": {}})
    with pytest.raises(CamscopeError, match="no samples"):
        EvaluationResults(["gradcam"], ["deletion"]).joined()


def test_state_dict_round_trip(tiny_cnn: nn.Module, batch_images: torch.Tensor, tmp_path: Path) -> None:
    results = _accumulated(_evaluate(tiny_cnn, batch_images))
    path = tmp_path / "state.pt"
    torch.save(results.state_dict(), path)
    restored = EvaluationResults([], []).load_state_dict(torch.load(path, weights_only=True))
    assert restored.samples == results.samples and restored.methods == results.methods
    before, after = results.joined(), restored.joined()
    for method in results.methods:
        for metric in results.metrics:
            assert after[method][metric].summary() == pytest.approx(before[method][metric].summary(), nan_ok=True)
            assert after[method][metric].params == before[method][metric].params
            for key, value in before[method][metric].values.items():
                assert torch.equal(after[method][metric].values[key].nan_to_num(-1), value.nan_to_num(-1))
    # A restored accumulator keeps accumulating.
    restored.merge(_accumulated(_evaluate(tiny_cnn, batch_images[:4])))
    assert len(restored.joined()["gradcam"]["deletion"]) == 12


def test_limit_cuts_a_loader_inside_a_batch(tiny_cnn: nn.Module, batch_images: torch.Tensor) -> None:
    loader = [
        (batch_images[:3], torch.zeros(3)),
        (batch_images[3:6], torch.zeros(3)),
        (batch_images[6:], torch.zeros(2)),
    ]
    report = camscope.evaluate(
        tiny_cnn,
        loader,
        metrics=["pointing_game"],
        annotations=_annotations(8),
        limit=5,
        progress=False,
    )
    assert report.samples == ["0", "1", "2", "3", "4"]
    hits = report.results["gradcam"]["pointing_game"]["hit"].tolist()
    assert [math.isnan(v) for v in hits] == [False, True, False, True, False]
    whole = camscope.evaluate(tiny_cnn, batch_images[:5], metrics=["sparseness"], progress=False)
    cut = camscope.evaluate(tiny_cnn, loader, metrics=["sparseness"], limit=5, progress=False)
    torch.testing.assert_close(cut.results["gradcam"]["sparseness"].value, whole.results["gradcam"]["sparseness"].value)


def test_folder_data_is_left_as_given(tmp_path: Path, tiny_cnn: nn.Module) -> None:
    folder = tmp_path / "data" / "a"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((12, 12, 3), 40 * i, dtype=np.uint8)).save(folder / f"img{i}.png")
    Image.fromarray(np.zeros((12, 12), dtype=np.uint8)).save(folder / "img0_mask.png")
    (folder / "img0.json").write_text(json.dumps({"mask": "img0_mask.png"}))
    data = ImageFolderData(tmp_path / "data", size=16)
    before = list(data.samples)
    report = camscope.evaluate(tiny_cnn, data, metrics=["sparseness"], size=16, limit=2, progress=False)
    assert data.samples == before  # the mask image is skipped in the pass, not removed from the caller's data
    assert [Path(s).name for s in report.samples] == ["img0.png", "img1.png"]


def test_show_progress_is_a_deprecated_alias(tiny_cnn: nn.Module, batch_images: torch.Tensor) -> None:
    with pytest.warns(DeprecationWarning, match="progress="):
        report = camscope.evaluate(tiny_cnn, batch_images[:2], metrics=["sparseness"], show_progress=False)
    assert len(report.samples) == 2
    with pytest.raises(CamscopeError, match="only progress"):
        camscope.evaluate(tiny_cnn, batch_images[:2], metrics=["sparseness"], progress=True, show_progress=False)
