"""The newer methods with every kind of target, under no_grad, on a model left in train mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camscope

pytestmark = pytest.mark.usefixtures("one_thread")

#: The methods and whether their map depends on the target.
METHODS = {
    "gradcam-elementwise": True,
    "shapleycam": True,
    "segeigencam": True,
    "refinecam": True,
    "kpcacam": False,
    "fem": False,
    "randomcam": False,
}


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_target_under_no_grad_with_modes_restored(method, strided_cnn):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    layer = ["stem", "stage"] if method == "refinecam" else "stage"
    targets = {
        "class": [1, 2],
        "difference": camscope.ClassDifference([1, 2], 0, gamma=0.5),
        "score": camscope.ScoreTarget(lambda out: out[:, 1] - out[:, 3], name="margin"),
        "finer": camscope.Finer(references=2, aggregate="max-before-relu"),
    }
    strided_cnn.train()
    try:
        maps = {}
        for name, target in targets.items():
            options = {"generator": torch.Generator().manual_seed(0)} if method == "randomcam" else {}
            with torch.no_grad():
                explanation = camscope.explain(strided_cnn, x, method=method, layer=layer, target=target, **options)
            assert explanation.maps.shape == (2, 16, 16) and torch.isfinite(explanation.maps).all(), name
            assert strided_cnn.training and strided_cnn.stem[1].training and _hook_count(strided_cnn) == 0
            maps[name] = explanation.maps
    finally:
        strided_cnn.eval()
    same = torch.allclose(maps["class"], maps["difference"]) and torch.allclose(maps["class"], maps["score"])
    assert same != METHODS[method], "only the class-agnostic maps ignore the target"
