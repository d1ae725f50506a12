"""Fuzzed bank and analysis files: every load gives valid content or raises a CamscopeError, never anything else.

A small valid bank and analysis are saved once; each example mutates one of them
(truncation, byte flips, metadata edits, tensor shape and dtype changes, NaN and
infinite values, scatters that are not positive semi-definite) and loads it.
"""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import camscope
from camscope.accumulators.reference_bank import ReferenceBank
from camscope.accumulators.reference_bank_files import BANK_KIND
from camscope.analyses.ifa import Analysis
from camscope.errors import CamscopeError
from camscope.io import load_tensors, save_tensors

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    from conftest import TinyCNN

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("fuzz")
    generator = torch.Generator().manual_seed(0)
    bank = ReferenceBank(4, "features", class_names=["a", "b", "c"], input_size=[8, 8], scatter="class")
    bank.update(torch.randn(30, 4, generator=generator, dtype=torch.float64) * 3 + 1, torch.arange(30) % 3)
    data = [(torch.randn(4, 3, 16, 16, generator=generator), torch.tensor([0, 1, 2, -1])) for _ in range(2)]
    analysis = camscope.analyze(
        TinyCNN().eval(), data, layer="features.2", all_classes=True, profiles=True, bins=32, progress=False
    )
    return _Originals(
        {
            "bank": (bank.save(folder / "bank.safetensors").read_bytes(), BANK_KIND),
            "analysis": (analysis.save(folder / "analysis.safetensors").read_bytes(), "analysis"),
            "folder": folder,
        }
    )


class _Originals(dict):
    """The saved files (a short repr, for Hypothesis's reports)."""

    def __repr__(self) -> str:
        return "originals"


# -- what a valid load gives ---------------------------------------------------------------


def _assert_valid_bank(bank: ReferenceBank) -> None:
    k = bank.feature_size
    assert k >= 1 and len(bank.class_names) == len(bank.labels) == bank.counts.numel()
    assert bool((bank.counts >= 1).all()) and bool(bank.means.isfinite().all())
    assert bank.input_size is None or all(isinstance(v, int) and v > 0 for v in bank.input_size)
    scatters = torch.stack([bank.class_scatter(label) for label in bank.labels])
    assert bool(scatters.isfinite().all())
    for scatter in scatters:
        scale = max(float(scatter.diagonal().abs().max()), 1e-300)
        unit = scatter / scale
        assert float(torch.linalg.eigvalsh((unit + unit.T) / 2).min()) >= -1e-5 * k
    group = bank.group("all")
    assert math.isfinite(group.count) if isinstance(group.count, float) else group.count >= 1
    assert bool(group.scatter.isfinite().all())


def _assert_valid_analysis(analysis: Analysis) -> None:
    summary = analysis.summary()
    assert summary["samples"] >= 0 and summary["values"] >= 0
    assert bool(analysis.im_sum.isfinite().all()) and bool((analysis.class_counts >= 0).all())
    assert analysis.im_sum.shape == (analysis.num_features, analysis.num_classes)
    if analysis.n_values:
        assert math.isfinite(summary["mean"]) and math.isfinite(summary["std"])
        assert all(math.isfinite(v) for v in analysis.percentile([0.0, 50.0, 100.0]).tolist())
    if analysis.has_importance:
        assert bool(analysis.importance.isfinite().all())
    if analysis.profiles is not None:
        assert bool(analysis.profiles.isfinite().all())


def _load(which: str, path):
    if which == "bank":
        _assert_valid_bank(ReferenceBank.load(path))
    else:
        _assert_valid_analysis(Analysis.load(path))


def _check(which: str, path) -> None:
    """The property: a valid load or a CamscopeError (any other exception fails the test)."""
    try:
        _load(which, path)
    except CamscopeError as error:
        message = str(error)
    else:
        return
    assert message and "\n" not in message.strip(), message


which_file = st.sampled_from(["bank", "analysis"])


# -- raw bytes -----------------------------------------------------------------------------


@FUZZ
@given(which=which_file, fraction=st.floats(0, 1, exclude_max=True))
def test_truncated_files(originals, which, fraction):
    data, _ = originals[which]
    path = originals["folder"] / "truncated.safetensors"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CamscopeError):
        _load(which, path)


@FUZZ
@given(
    which=which_file,
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_flipped_bytes(originals, which, flips):
    data = bytearray(originals[which][0])
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    path = originals["folder"] / "flipped.safetensors"
    path.write_bytes(bytes(data))
    _check(which, path)


@FUZZ
@given(which=which_file, mask=st.integers(1, 255), position=st.floats(0, 1, exclude_max=True))
def test_flipped_bytes_in_the_tensors(originals, which, mask, position):
    data = bytearray(originals[which][0])
    start = 8 + struct.unpack("<Q", bytes(data[:8]))[0]
    data[start + int(position * (len(data) - start))] ^= mask
    path = originals["folder"] / "flipped_tensors.safetensors"
    path.write_bytes(bytes(data))
    _check(which, path)


# -- metadata ------------------------------------------------------------------------------


def _parts(originals, which):
    path = originals["folder"] / f"{which}.safetensors"
    tensors, header = load_tensors(path, originals[which][1])
    return tensors, header


def _write_raw_header(originals, which, tensors, raw: str):
    from safetensors.torch import save

    path = originals["folder"] / "header.safetensors"
    path.write_bytes(save({k: v.contiguous() for k, v in tensors.items()}, metadata={"camscope": raw}))
    return path


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)


@FUZZ
@given(which=which_file, raw=st.text(max_size=30) | json_values.map(json.dumps))
def test_garbage_or_foreign_metadata(originals, which, raw):
    tensors, _ = _parts(originals, which)
    path = _write_raw_header(originals, which, tensors, raw)
    with pytest.raises(CamscopeError):
        _load(which, path)


@FUZZ
@given(which=which_file, version=json_values | st.sampled_from([0, 2, 1.9, "1", True, -1, 10**30]))
def test_format_version_variants(originals, which, version):
    tensors, header = _parts(originals, which)
    header["format_version"] = version
    path = _write_raw_header(originals, which, tensors, json.dumps(header))
    if version == 1 and type(version) is int:
        _check(which, path)
    else:
        with pytest.raises(CamscopeError):
            _load(which, path)


@FUZZ
@given(which=which_file, data=st.data())
def test_missing_keys_and_wrong_types(originals, which, data):
    tensors, header = _parts(originals, which)
    keys = sorted(k for k in header if k not in ("kind", "format_version"))
    key = data.draw(st.sampled_from(keys))
    if data.draw(st.booleans()):
        del header[key]
    else:
        header[key] = data.draw(json_values)
    path = _write_raw_header(originals, which, tensors, json.dumps(header))
    _check(which, path)


# -- tensors -------------------------------------------------------------------------------


def _write_tensors(originals, which, tensors, header):
    meta = {k: v for k, v in header.items() if k not in ("kind", "format_version")}
    return save_tensors(originals["folder"] / "tensors.safetensors", tensors, meta, kind=originals[which][1])


@FUZZ
@given(which=which_file, data=st.data())
def test_tensor_shape_and_dtype_changes(originals, which, data):
    tensors, header = _parts(originals, which)
    name = data.draw(st.sampled_from(sorted(tensors)))
    tensor = tensors[name]
    change = data.draw(st.sampled_from(["drop", "shorten", "lengthen", "flatten", "scalar", "dtype", "transpose"]))
    if change == "drop":
        del tensors[name]
    elif change == "shorten" and tensor.dim() and tensor.shape[0]:
        tensors[name] = tensor[: tensor.shape[0] - 1]
    elif change == "lengthen" and tensor.dim():
        tensors[name] = torch.cat([tensor, tensor[:1]])
    elif change == "flatten":
        tensors[name] = tensor.reshape(-1)
    elif change == "scalar":
        tensors[name] = tensor.reshape(-1)[:1].reshape(())
    elif change == "transpose" and tensor.dim() >= 2:
        tensors[name] = tensor.transpose(0, 1).contiguous()
    elif change == "dtype":
        dtype = data.draw(
            st.sampled_from([torch.float16, torch.float32, torch.float64, torch.int32, torch.int8, torch.bool])
        )
        tensors[name] = tensor.to(dtype)
    _check(which, _write_tensors(originals, which, tensors, header))


@FUZZ
@given(which=which_file, data=st.data(), value=st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 1e308]))
def test_nan_inf_and_extreme_values(originals, which, data, value):
    tensors, header = _parts(originals, which)
    name = data.draw(st.sampled_from(sorted(k for k, t in tensors.items() if t.numel())))
    tensor = tensors[name].double().clone()
    tensor.view(-1)[data.draw(st.integers(0, tensor.numel() - 1))] = value
    tensors[name] = tensor
    _check(which, _write_tensors(originals, which, tensors, header))


@FUZZ
@given(data=st.data())
def test_scatters_that_are_not_positive_semi_definite(originals, data):
    tensors, header = _parts(originals, "bank")
    index = data.draw(st.integers(0, 2))
    k = tensors["scatters"].shape[-1]
    vector = torch.tensor(data.draw(st.lists(st.floats(-10, 10), min_size=k, max_size=k)), dtype=torch.float64)
    if float(vector.norm()) < 1e-3:
        vector = torch.ones(k, dtype=torch.float64)
    scatter = tensors["scatters"][index]
    # subtract more than the scatter holds along ``vector``: one eigenvalue becomes clearly negative
    excess = float(vector @ scatter @ vector) / float(vector @ vector) ** 2 + data.draw(st.floats(0.1, 100))
    tensors["scatters"] = tensors["scatters"].clone()
    tensors["scatters"][index] = scatter - excess * torch.outer(vector, vector)
    with pytest.raises(CamscopeError, match=r"not positive semi-definite|negative diagonal"):
        ReferenceBank.load(_write_tensors(originals, "bank", tensors, header))
