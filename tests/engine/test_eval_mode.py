"""``eval_mode=False`` keeps the model's mode: BatchNorm in train mode updates its running statistics, as documented."""

from __future__ import annotations

import torch
from torch import nn

import camscope


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )


def test_train_mode_batchnorm_updates_its_running_statistics_only_with_eval_mode_false():
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 5
    model = _model().train()
    before = model[1].running_mean.clone()
    camscope.explain(model, images, layer="0")  # eval_mode=True (default): the statistics stay
    assert torch.equal(model[1].running_mean, before) and model.training
    camscope.explain(model, images, layer="0", eval_mode=False)
    assert not torch.equal(model[1].running_mean, before) and int(model[1].num_batches_tracked) == 1


def test_the_docstrings_say_so():
    for documented in (camscope.Explainer, camscope.explain):
        text = " ".join((documented.__doc__ or "").split())
        assert "eval_mode=False" in text and "running statistics" in text, documented
