"""What methods give beside their maps (extras), and passes of other inputs inside a method."""

from __future__ import annotations

import torch

import camscope
from conftest import TinyCNN


def test_extras_are_saved_loaded_and_listed(one_thread, tmp_path) -> None:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(2, 3, 12, 12)
    explanation = camscope.explain(model, x, method="dff", layer="features.3", components=3, target=[1, 2])
    assert "extras=['concept_maps', 'concept_scores', 'concepts']" in repr(explanation)
    loaded = camscope.Explanation.load(explanation.save(tmp_path / "dff.safetensors"))
    assert loaded.extras.keys() == explanation.extras.keys()
    for name, tensor in explanation.extras.items():
        torch.testing.assert_close(loaded.extras[name], tensor)
    both = camscope.explain(model, x, method="guided-gradcam", layer=["features.1", "features.3"], target=[1, 2])
    assert both.extras == {} and both.layers["features.1"].extras["pixels"].shape == (2, 3, 12, 12)
    again = camscope.Explanation.load(both.save(tmp_path / "guided.safetensors"))
    torch.testing.assert_close(again.layers["features.3"].extras["pixels"], both.layers["features.3"].extras["pixels"])
    assert camscope.explain(model, x, method="gradcam").extras == {}
    # One augmentation's extras do not describe the mean of six.
    assert camscope.explain(model, x, method="guided-gradcam", aug_smooth=True).extras == {}


def test_a_method_that_runs_other_inputs_leaves_the_next_layer_its_activations(one_thread) -> None:
    """Smooth Grad-CAM++ runs noisy copies through the hooks: the second layer still sees the clean activations."""
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(2, 3, 12, 12)
    layers = ["features.1", "features.3"]
    both = camscope.explain(model, x, method="smoothgradcampp", layer=layers, samples=2)
    for layer in layers:
        alone = camscope.explain(model, x, method="smoothgradcampp", layer=layer, samples=2)
        torch.testing.assert_close(both.layers[layer].activations, alone.activations)
