"""Reference banks as Accumulators: state_dict/load_state_dict restore exactly; merged halves equal one build."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from camscope.errors import CamscopeError
from camscope.io import save_tensors
from camscope.passes.engine import Accumulator
from camscope.stats.class_moments import ClassMoments
from camscope.stats.reference_bank import ReferenceBank
from camscope.stats.reference_bank_files import BANK_KIND


def _data(seed: int = 0, n: int = 60, k: int = 5, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, classes, size=n)  # -1: some samples without a label
    z = rng.normal(size=(n, k)) * rng.uniform(0.5, 2, size=k) + labels[:, None] * rng.normal(size=k) + 4.0
    return torch.from_numpy(z), torch.from_numpy(labels)


def _bank(z: torch.Tensor, labels: torch.Tensor, batch: int = 7, **kwargs) -> ReferenceBank:
    bank = ReferenceBank(z.shape[1], "features", class_names={0: "a", 2: "c"}, input_size=[12, 12], **kwargs)
    for start in range(0, len(z), batch):
        bank.update(z[start : start + batch], labels[start : start + batch])
    return bank


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


class FeatureNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


@pytest.mark.parametrize("scatter", ["class", "shared", "collapsed"])
def test_state_dict_round_trips_exactly(scatter: str) -> None:
    z, labels = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "collapsed": auto mode over its budget switches to a shared scatter
        options = {"max_scatter_bytes": 2 * 25 * 8} if scatter == "collapsed" else {"scatter": scatter}
        bank = _bank(z[:40], labels[:40], **options)
    assert bank.scatter_mode == ("class" if scatter == "class" else "shared")
    state = bank.state_dict()
    restored = ReferenceBank.from_state_dict(state)
    _assert_same_state(restored.state_dict(), state)
    assert restored.class_names == bank.class_names and restored.input_size == [12, 12]
    for kind, classes in [("all", None), ("others", 1), ("class", [0, 3])]:
        torch.testing.assert_close(
            restored.group(kind, classes).scatter, bank.group(kind, classes).scatter, rtol=0, atol=0
        )
    # the restored bank goes on exactly as the original (counts, modes and budgets included)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bank.update(z[40:], labels[40:])
        restored.update(z[40:], labels[40:])
    _assert_same_state(restored.state_dict(), bank.state_dict())
    # loading replaces whatever a bank held; states and banks share no tensors
    other = _bank(z[:9], labels[:9] * 0 + 7).load_state_dict(state)
    _assert_same_state(other.state_dict(), state)
    means = other.means.clone()
    state["means"].add_(1.0)
    other.state_dict()["means"].add_(1.0)
    assert torch.equal(other.means, means)


def test_merged_halves_equal_one_build_on_the_whole() -> None:
    torch.manual_seed(0)
    model = FeatureNet().double().eval()
    x = torch.randn(30, 3, 12, 12, dtype=torch.float64)
    labels = torch.arange(30) % 3
    whole = ReferenceBank.build(model, [(x, labels)], layer="features", progress=False)
    first = ReferenceBank.build(model, [(x[:13], labels[:13])], layer="features", progress=False)
    second = ReferenceBank.build(model, [(x[13:], labels[13:])], layer="features", batch_size=4, progress=False)
    merged = ReferenceBank.from_state_dict(first.state_dict()).merge(ReferenceBank.from_state_dict(second.state_dict()))
    assert merged.labels == whole.labels and torch.equal(merged.counts, whole.counts)
    torch.testing.assert_close(merged.means, whole.means, rtol=1e-12, atol=1e-12)
    for label in whole.labels:
        torch.testing.assert_close(merged.class_scatter(label), whole.class_scatter(label), rtol=1e-10, atol=1e-10)
    assert merged.model == whole.model and merged.layer == whole.layer and merged.input_size == whole.input_size


def test_banks_and_moments_are_accumulators_and_bad_states_are_refused() -> None:
    z, labels = _data(seed=1)
    bank = _bank(z, labels)
    assert isinstance(bank, Accumulator) and isinstance(bank.moments, Accumulator)
    moments = ClassMoments(z.shape[1]).load_state_dict(bank.moments.state_dict())
    torch.testing.assert_close(moments.pooled(range(len(moments.labels)))[2], bank.group("all").scatter, rtol=0, atol=0)
    before = bank.state_dict()
    broken = dict(before, means=before["means"][:-1])
    with pytest.raises(CamscopeError, match="inconsistent statistics"):
        bank.load_state_dict(broken)
    with pytest.raises(CamscopeError, match="missing or bad entry 'scatters'"):
        bank.load_state_dict({key: value for key, value in before.items() if key != "scatters"})
    _assert_same_state(bank.state_dict(), before)  # a refused state leaves the bank as it was


def test_files_keep_the_0_1_0_format(tmp_path) -> None:
    z, labels = _data(seed=2)
    bank = _bank(z, labels)
    path = bank.save(tmp_path / "bank.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        header = json.loads(file.metadata()["camscope"])
        names = set(file.keys())
    assert names == {"labels", "counts", "means", "scatters"}
    assert list(header) == [
        *("kind", "format_version", "model", "layer", "embedding", "feature_size", "labels", "class_names"),
        *("scatter", "auto_scatter", "max_scatter_bytes", "layout", "input_size", "count"),
    ]
    # a file as 0.1.0 wrote it by hand (shared mode, no max_scatter_bytes) loads
    legacy = tmp_path / "legacy.safetensors"
    within = bank.moments.within()
    tensors = {"labels": torch.tensor(bank.labels), "counts": bank.counts, "means": bank.means, "within": within}
    metadata = {"layer": "features", "feature_size": 5, "class_names": bank.class_names, "scatter": "shared"}
    save_tensors(legacy, tensors, metadata, kind=BANK_KIND)
    loaded = ReferenceBank.load(legacy)
    assert loaded.scatter_mode == "shared" and loaded.class_names == bank.class_names and loaded.embedding == "mean"
    torch.testing.assert_close(loaded.group("all").scatter, bank.group("all").scatter, rtol=1e-12, atol=1e-12)
    save_tensors(tmp_path / "bad.safetensors", dict(tensors, means=bank.means[:, :2]), metadata, kind=BANK_KIND)
    with pytest.raises(CamscopeError, match=r"the tensor 'means' is float64 \[5, 2\], expected float64 \[C=5, K=5\]"):
        ReferenceBank.load(tmp_path / "bad.safetensors")
