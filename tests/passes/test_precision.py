"""Lower-precision passes: the model's forward under autocast, the accumulators in their own precision."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import camscope
from camscope.accumulators.reference_bank import ReferenceBank
from camscope.errors import CamscopeError
from camscope.passes.engine import DatasetPass
from camscope.passes.precision import autocast_forward, check_precision


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def _data() -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(10, 3, 12, 12, generator=generator), torch.arange(10) % 3)


def test_autocast_covers_the_forward_only_and_leaves_no_hook() -> None:
    model = _model()
    seen: list[torch.dtype] = []
    model[2].register_forward_hook(lambda _m, _i, output: seen.append(output.dtype))
    with autocast_forward(model, "bf16", torch.device("cpu")):
        output = model(torch.randn(2, 3, 12, 12))
        outside = torch.ones(2, 2) @ torch.ones(2, 2)  # the block's own arithmetic is not autocast
    assert seen == [torch.bfloat16] and output.dtype == torch.float32 and outside.dtype == torch.float32
    assert len(model._forward_pre_hooks) == 0 and len(model._forward_hooks) == 0
    with pytest.raises(RuntimeError, match="boom"), autocast_forward(model, "fp16", torch.device("cpu")):
        raise RuntimeError("boom")
    assert len(model._forward_pre_hooks) == 0 and len(model._forward_hooks) == 0
    assert not torch.is_autocast_enabled("cpu")
    model(torch.randn(1, 3, 12, 12))
    assert seen[-1] == torch.float32  # fp32 again after the block


def test_a_failing_forward_leaves_autocast() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    with autocast_forward(model, "bf16", torch.device("cpu")), pytest.raises(RuntimeError):
        model(torch.randn(2, 5))  # wrong width: the forward raises inside the autocast region
    assert not torch.is_autocast_enabled("cpu")


def test_bad_precisions_are_clear_errors() -> None:
    with pytest.raises(CamscopeError, match="one of fp32, bf16, fp16"):
        check_precision("fp8", torch.device("cpu"))
    with pytest.raises(CamscopeError, match="one of fp32, bf16, fp16"):
        DatasetPass(_model(), torch.zeros(2, 3, 12, 12), precision="half")


def test_a_bf16_bank_equals_embeddings_computed_under_autocast_by_hand() -> None:
    model, data = _model(), _data()
    bank = ReferenceBank.build(model, data, "3", batch_size=4, precision="bf16", progress=False)
    x, y = data.tensors
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        features = model[:4](x)
    z = features.float().mean(dim=(2, 3)).double()
    expected = torch.stack([z[y == c].mean(0) for c in range(3)])
    assert torch.allclose(bank.means, expected, rtol=1e-6, atol=1e-9)
    fp32 = ReferenceBank.build(model, data, "3", batch_size=4, progress=False)
    assert not torch.allclose(fp32.means, expected, rtol=1e-6, atol=1e-9)  # the precision did change the forward
    assert torch.allclose(fp32.means, expected, rtol=0.05, atol=0.02)


def test_analysis_at_bf16_is_close_to_fp32_and_checkpoints_name_the_precision(tmp_path: Path) -> None:
    model, data = _model(), _data()
    fp32 = camscope.analyze(model, data, layer="2", batch_size=4, progress=False)
    bf16 = camscope.analyze(model, data, layer="2", batch_size=4, progress=False, precision="bf16")
    assert not torch.equal(fp32.importance, bf16.importance)
    assert torch.allclose(fp32.importance, bf16.importance, rtol=0.1, atol=0.02 * fp32.importance.abs().max().item())
    checkpoint = tmp_path / "analysis.ckpt"
    camscope.analyze(model, data, layer="2", batch_size=4, progress=False, precision="bf16", checkpoint=checkpoint)
    with pytest.raises(CamscopeError, match=r"belongs to another pass.*precision"):
        camscope.analyze(model, data, layer="2", batch_size=4, checkpoint=checkpoint, resume=True)


def test_another_threads_forward_is_not_autocast() -> None:
    import threading

    model = _model()
    seen: list[tuple[str, torch.dtype]] = []
    model[2].register_forward_hook(lambda _m, _i, out: seen.append((threading.current_thread().name, out.dtype)))

    def user_inference() -> None:  # a user's own forward of the same model beside the pass
        with torch.no_grad():
            model(torch.randn(1, 3, 12, 12))

    with autocast_forward(model, "bf16", torch.device("cpu")):
        worker = threading.Thread(target=user_inference, name="user")
        worker.start()
        worker.join()
        model(torch.randn(1, 3, 12, 12))
    assert seen == [("user", torch.float32), (threading.current_thread().name, torch.bfloat16)]
