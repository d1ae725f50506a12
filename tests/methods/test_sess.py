"""SESS against pytorch-grad-cam 1.5.7 and closed forms (one patch is its base method's map)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from pytorch_grad_cam.sess import SESS as PEER_SESS
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import camscope
from camscope.errors import CamscopeError
from camscope.methods.sess import gaussian_blur
from conftest import TinyStridedCNN


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = TinyStridedCNN().eval()
    with torch.no_grad():
        net.head[2].weight.mul_(100)  # spread the patch scores (softmax weights) and the gradients
    return net


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 24, generator=torch.Generator().manual_seed(3))  # not square: windows slide


@pytest.mark.parametrize(
    "options",
    [
        {"num_scales": 4, "step_size": 12, "pre_filter_ratio": 0.3, "theta": 0.05},
        {"num_scales": 3, "pool": "max", "smooth": False, "softmax_scores": False, "window_size": 16},
    ],
    ids=["mean-prefilter", "max"],
)
def test_matches_pytorch_grad_cam(one_thread, model, images, options) -> None:
    classes = [1, 3]
    ours = camscope.explain(model, images, method="sess", layer="stage.0", target=classes, batch_size=7, **options)
    peer_options = {("use_softmax_scores" if k == "softmax_scores" else k): v for k, v in options.items()}
    with PEER_SESS(model, [model.stage[0]], **peer_options) as sess:
        peer = sess(images, [ClassifierOutputTarget(c) for c in classes])
    assert np.abs(ours.maps.numpy() - peer).max() < 1e-5  # measured 1e-6 and 2e-6 (float32 rounding)


def test_one_patch_is_the_base_methods_map(one_thread, model, images) -> None:
    """One scale, the window the whole image: the fused map is the base method's, for any base and target."""
    square = images[..., :24, :]
    single = {"scales": [24], "smooth": False}
    for base, target in [("gradcam", [0, 2]), ("scorecam", [0, 2]), ("gradcam", camscope.Finer(references=2))]:
        ours = camscope.explain(model, square, method="sess", layer="stage.0", target=target, base=base, **single)
        plain = camscope.explain(model, square, method=base, layer="stage.0", target=target)
        torch.testing.assert_close(ours.maps, plain.maps, rtol=1e-5, atol=1e-6)
    finer = camscope.explain(model, square, method="finer-gradcam", layer="stage.0", references=2)
    ours = camscope.explain(
        model, square, method="sess", layer="stage.0", base="finer-gradcam", base_options={"references": 2}, **single
    )
    torch.testing.assert_close(ours.maps, finer.maps, rtol=1e-5, atol=1e-6)


def test_the_blur_is_opencvs() -> None:
    maps = torch.rand(2, 9, 14, generator=torch.Generator().manual_seed(4))
    expected = np.stack([cv2.GaussianBlur(m, (11, 11), 5.0, 0) for m in maps.numpy()])
    assert np.abs(gaussian_blur(maps).numpy() - expected).max() < 1e-6


def test_clear_errors(one_thread, model, images) -> None:
    with pytest.raises(CamscopeError, match="cannot run 'dff' on its patches"):
        camscope.explain(model, images, method="sess", base="dff")
    with pytest.raises(CamscopeError, match="pre_filter_ratio must be in"):
        camscope.explain(model, images, method="sess", pre_filter_ratio=1.0)
    with pytest.raises(CamscopeError, match="scales must be a non-empty list of ints"):
        camscope.explain(model, images, method="sess", scales=[24.5])
    with pytest.raises(CamscopeError, match="at least the window size 24"):
        camscope.explain(model, images, method="sess", scales=[20])
    box = camscope.BoxTarget(labels=[1], boxes=[[0.0, 0.0, 8.0, 8.0]])
    with pytest.raises(CamscopeError, match=r"SESS explains crops.*BoxTarget"):
        camscope.explain(model, images[:1], method="sess", layer="stage.0", target=box, scales=[24])
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


class TwoInputs(torch.nn.Module):
    """An image branch and a metadata vector, fused by a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rgb = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(6 + 2, 3)

    def forward(self, rgb: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.rgb(rgb).mean(dim=(2, 3)), meta], dim=1))


def test_a_model_of_several_inputs_one_sample_at_a_time(one_thread) -> None:
    generator = torch.Generator().manual_seed(2)
    rgb, meta = torch.rand(2, 3, 16, 16, generator=generator), torch.rand(2, 2, generator=generator)
    model = TwoInputs().eval()
    options = {"layer": "rgb.1", "num_scales": 2, "target": [2]}
    ours = camscope.explain(model, (rgb[:1], meta[:1]), method="sess", **options)

    class Bound(torch.nn.Module):  # the metadata held fixed: the reference
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x, meta[:1].expand(x.shape[0], -1))

    alone = camscope.explain(Bound(), rgb[:1], method="sess", **{**options, "layer": "model.rgb.1"})
    torch.testing.assert_close(ours.raw, alone.raw)
    with pytest.raises(CamscopeError, match="one sample at a time"):
        camscope.explain(model, (rgb, meta), method="sess", **{**options, "target": [2, 0]})
