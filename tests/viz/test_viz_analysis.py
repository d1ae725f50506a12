"""Plots of an integrated feature analysis (camscope.viz.analysis)."""

from __future__ import annotations

import pytest
import torch

import camscope
from camscope.errors import CamscopeError
from camscope.metrics import consistency


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dataset(batches: int = 3, batch: int = 6, classes: int = 5, size: int = 16, seed: int = 0):
    g = _generator(seed)
    return [
        (torch.randn(batch, 3, size, size, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(batches)
    ]


def test_plots_render(tiny_cnn, tmp_path):
    from camscope.viz.analysis import consistency_scatter, distribution_plot, importance_heatmap, importance_lines
    from camscope.viz.figures import save_figure

    data = _dataset()
    train = camscope.analyze(tiny_cnn, data, layer="features.2", all_classes=True)
    test = camscope.analyze(tiny_cnn, _dataset(seed=1), layer="features.2")
    results = consistency(tiny_cnn, [x for x, _ in data], layer="features.2", scale=[None, train])
    figures = {
        "heatmap": importance_heatmap(train, class_names=list("abcde")),
        "heatmap_all": importance_heatmap(train, source="all", relative_to_mean=True),
        "lines": importance_lines(train, test, cls=1),
        "scatter": consistency_scatter(results),
        "scatter_p": consistency_scatter(results[0], against="probability"),
        "distribution": distribution_plot(train),
    }
    for name, figure in figures.items():
        path = save_figure(tmp_path / f"{name}.png", figure)
        assert path.stat().st_size > 1000
    with pytest.raises(CamscopeError):
        importance_lines(train, test, cls=9)
