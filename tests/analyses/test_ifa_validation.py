"""A loaded analysis (file or state dict) is consistent, or the load raises a CamscopeError saying what is wrong."""

from __future__ import annotations

import pytest
import torch

import camscope
from camscope.analyses.ifa import Analysis
from camscope.errors import CamscopeError
from camscope.io import load_tensors, save_tensors


def _analysis(model) -> Analysis:
    generator = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, 3, 16, 16, generator=generator), torch.tensor([0, 1, 2, -1])) for _ in range(2)]
    return camscope.analyze(model, data, layer="features.2", all_classes=True, profiles=True, bins=64, progress=False)


def _parts(analysis: Analysis, tmp_path):
    tensors, header = load_tensors(analysis.save(tmp_path / "a.safetensors"), "analysis")
    return tensors, {k: v for k, v in header.items() if k not in ("kind", "format_version")}


def _write(tmp_path, tensors, header):
    return save_tensors(tmp_path / "edited.safetensors", tensors, header, kind="analysis")


def _set(name, index, value):
    def edit(tensors):
        tensors[name] = tensors[name].clone()
        tensors[name][index] = value

    return edit


def _replace(name, make):
    def edit(tensors):
        tensors[name] = make(tensors[name])

    return edit


TENSOR_EDITS = {
    "NaN in im_sum": (_set("im_sum", (0, 0), float("nan")), "im_sum holds NaN"),
    "Inf in im_all_sum": (_set("im_all_sum", (1, 1), float("inf")), "im_all_sum holds infinite"),
    "im_sum too short": (
        _replace("im_sum", lambda t: t[:-1]),
        r"'im_sum' is float64 \[15, 5\], expected float64 \[K=16, C=5\]",
    ),
    "im_sum transposed": (_replace("im_sum", lambda t: t.T.contiguous()), r"'im_sum' is float64 \[5, 16\]"),
    "class_counts too long": (_replace("class_counts", lambda t: torch.cat([t, t])), r"'class_counts' is int64 \[10\]"),
    "negative class count": (_set("class_counts", 0, -1), "class_counts holds negative"),
    "too many correct": (_set("counters", 1, 1000), "inconsistent counts"),
    "NaN in the moments": (_set("moments.f64", 0, float("nan")), "moments.f64 holds NaN"),
    "negative M2": (_set("moments.f64", 1, -1.0), "M2 holds negative"),
    "moments of another count": (_set("moments.count", 0, 3), "inconsistent counts"),
    "sketch counts off": (_set("values.counts", 0, 10**6), "values holds .* counts|counts"),
    "sketch counts negative": (_set("values.counts", 0, -5), "negative"),
    "sketch low NaN": (_set("values.scalars_f64", 0, float("nan")), "NaN"),
    "sketch low moved": (_set("values.scalars_f64", 0, -1e6), "range does not match"),
    "sketch exponent": (_set("image_max.scalars_i64", 0, 5000), "exponent"),
    "sketch too small": (
        _replace("values.counts", lambda t: t[:8]),
        r"'values.counts' is int64 \[8\], expected int64 \[bins=64\]",
    ),
    "sketch scalars short": (_replace("values.scalars_i64", lambda t: t[:2]), r"'values.scalars_i64' is int64 \[2\]"),
    "NaN profiles": (_set("profiles", (0, 0), float("nan")), "profiles holds NaN"),
    "profile labels short": (_replace("profile_labels", lambda t: t[:-1]), r"'profile_labels' is int64 \[7\]"),
    "profiles of the wrong width": (
        _replace("profiles", lambda t: t[:, :-1].contiguous()),
        r"'profiles' is float32 \[8, 15\]",
    ),
    "missing im_sum": (lambda t: t.pop("im_sum"), "has no tensor 'im_sum'"),
}


@pytest.mark.parametrize("case", list(TENSOR_EDITS))
def test_bad_tensors_are_refused(tiny_cnn, tmp_path, case):
    tensors, header = _parts(_analysis(tiny_cnn), tmp_path)
    edit, message = TENSOR_EDITS[case]
    edit(tensors)
    with pytest.raises(CamscopeError, match=f"edited.safetensors.*{message}"):
        Analysis.load(_write(tmp_path, tensors, header))


HEADER_EDITS = {
    "num_features text": ({"num_features": "16"}, "num_features must be an integer"),
    "num_classes bool": ({"num_classes": True}, "num_classes must be an integer"),
    "num_classes zero": ({"num_classes": 0}, "num_classes must be an integer >= 1"),
    "wrong num_classes": ({"num_classes": 7}, r"expected float64 \[K=16, C=7\]"),
    "n_samples negative": ({"n_samples": -1}, "n_samples must be an integer >= 0"),
    "n_samples float": ({"n_samples": 8.5}, "n_samples must be an integer"),
    "n_samples wrong": ({"n_samples": 9}, "inconsistent counts"),
    "method not a name": ({"method": 3}, "method must be a name"),
    "explain unknown": ({"explain": "both"}, "explain must be"),
    "percentiles text": ({"percentiles": "10,90"}, "percentiles must be two numbers"),
    "percentiles NaN": ({"percentiles": [float("nan"), 90]}, "finite number"),
    "percentiles out of range": ({"percentiles": [10, 900]}, r"\[0, 100\]"),
    "info not a mapping": ({"info": [1]}, "info must be a mapping"),
    "profiles text": ({"profiles": "yes"}, "profiles must be true or false"),
}


@pytest.mark.parametrize("case", list(HEADER_EDITS))
def test_bad_headers_are_refused(tiny_cnn, tmp_path, case):
    tensors, header = _parts(_analysis(tiny_cnn), tmp_path)
    edit, message = HEADER_EDITS[case]
    with pytest.raises(CamscopeError, match=f"edited.safetensors.*{message}"):
        Analysis.load(_write(tmp_path, tensors, {**header, **edit}))


def test_an_untouched_file_loads(tiny_cnn, tmp_path):
    analysis = _analysis(tiny_cnn)
    loaded = Analysis.load(_write(tmp_path, *_parts(analysis, tmp_path)))
    assert loaded.summary() == analysis.summary()


def test_state_dicts_are_checked(tiny_cnn):
    analysis = _analysis(tiny_cnn)
    state = analysis.state_dict()
    state["im_sum"] = state["im_sum"][:, :1]
    with pytest.raises(CamscopeError, match="not a valid analysis state: im_sum has shape"):
        Analysis.from_state_dict(state)
    state = analysis.state_dict()
    state["im_sum"][0, 0] = float("nan")
    with pytest.raises(CamscopeError, match="im_sum holds NaN"):
        Analysis.from_state_dict(state)
    state = analysis.state_dict()
    state["num_features"] = "16"
    with pytest.raises(CamscopeError, match="num_features must be an integer"):
        Analysis.from_state_dict(state)
    state = analysis.state_dict()
    state["values"]["counts"] = state["values"]["counts"].float()
    state["values"]["counts"][3] = 0.5
    with pytest.raises(CamscopeError, match="whole numbers"):
        Analysis.from_state_dict(state)
    assert Analysis.from_state_dict(analysis.state_dict()).summary() == analysis.summary()
