"""Which methods integrated feature analysis takes: the channel_weights flag says what each method returns."""

from __future__ import annotations

import pytest
import torch

import camscope
from camscope.analyses.ifa.methods import analysis_methods, why_not_analysable
from camscope.engine.method import available_methods, method_class
from camscope.errors import CamscopeError


def _checked_methods() -> list[str]:
    """Every registered method that explains one class on a CNN (not the comparisons, not the attention methods)."""
    return [
        name
        for name, cls in available_methods().items()
        if cls.reads_layer and not name.startswith("finer-") and name != "diffcam"
    ]


@pytest.mark.parametrize("name", _checked_methods())
def test_channel_weights_says_whether_the_method_gives_channel_contributions(name, tiny_cnn, one_thread):
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    explanation = camscope.explain(tiny_cnn, x, method=name, layer="features.2")
    assert (explanation.contributions is not None) == method_class(name).channel_weights, name
    assert (name in analysis_methods()) == method_class(name).channel_weights


def test_the_analysable_methods_exclude_attention_comparisons_and_maps_without_weights():
    chosen = analysis_methods()
    assert {"gradcam", "hirescam", "gradcampp", "scorecam", "shapleycam", "cam"} <= set(chosen)
    for name in ("rollout", "gradrollout", "legrad", "finer-gradcam", "diffcam", "eigencam", "fullgrad", "sess"):
        assert name not in chosen and why_not_analysable(name), name
    assert "attention" in why_not_analysable("rollout") and "comparison" in why_not_analysable("diffcam")


def test_analyze_refuses_an_attention_method_and_a_map_off_the_layer_grid(tiny_vit, strided_cnn):
    data = [(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1]))]
    with pytest.raises(CamscopeError, match="'rollout' reads the attention"):  # ran, and recorded a layer it never read
        camscope.analyze(tiny_vit, data, method="rollout", progress=False)
    with pytest.raises(CamscopeError, match=r"'fullgrad' makes its map at \[16, 16\], not on the grid \[4, 4\]"):
        camscope.analyze(strided_cnn, data, method="fullgrad", layer="stage", progress=False)  # was a TypeError
