"""check_device: a device that is not here is one clear error, before anything is moved to it."""

from __future__ import annotations

import pytest
import torch

from camscope.errors import CamscopeError
from camscope.models import check_device, load_model


def test_cpu_and_none_pass_and_unknown_names_are_refused():
    assert check_device("cpu") == torch.device("cpu") and check_device(None) is None
    for name, message in [
        ("tpu", "is not a device"),
        ("garbage", "is not a device"),
        ("meta", "cannot run a model"),
        ("cuda:x", "is not a device"),
    ]:
        with pytest.raises(CamscopeError, match=message) as caught:
            check_device(name)
        assert "\n" not in str(caught.value) and f"device='{name}'" in str(caught.value)


def test_cuda_without_a_gpu_with_fewer_gpus_and_a_cpu_only_build(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(CamscopeError, match="no CUDA GPU is visible here"):
        check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == torch.device("cuda", 1) and check_device("cuda").type == "cuda"
    with pytest.raises(CamscopeError, match=r"has 2 CUDA GPU\(s\), cuda:0 to cuda:1"):
        check_device("cuda:7")
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(CamscopeError, match="built without CUDA"):
        check_device("cuda")


def test_mps_where_there_is_none_and_the_loader_checks_first(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(CamscopeError, match="MPS is not available"):
        check_device("mps")
    with pytest.raises(CamscopeError, match="is not a device"):
        load_model("torchvision:resnet18", weights=None, device="tpu")  # before the model is built
