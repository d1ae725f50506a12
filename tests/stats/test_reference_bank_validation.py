"""A loaded reference bank holds valid statistics or the load raises a CamscopeError saying what is wrong."""

from __future__ import annotations

import pytest
import torch

from camscope.errors import CamscopeError
from camscope.io import load_tensors, save_tensors
from camscope.stats.class_moments import check_scatters
from camscope.stats.reference_bank import ReferenceBank
from camscope.stats.reference_bank_files import BANK_KIND


def _bank(scatter: str = "class") -> ReferenceBank:
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(24, 4, generator=generator, dtype=torch.float64) * 2 + 1
    labels = torch.arange(24) % 3
    bank = ReferenceBank(4, "features", class_names=["a", "b", "c"], input_size=[8, 8], scatter=scatter)
    return bank.update(z, labels)


def _parts(bank: ReferenceBank, tmp_path):
    tensors, header = load_tensors(bank.save(tmp_path / "bank.safetensors"), BANK_KIND)
    metadata = {k: v for k, v in header.items() if k not in ("kind", "format_version")}
    return tensors, metadata


def _write(tmp_path, tensors, metadata):
    return save_tensors(tmp_path / "edited.safetensors", tensors, metadata, kind=BANK_KIND)


def _negated_scatter(t):
    t["scatters"] = -t["scatters"]


def _asymmetric_scatter(t):
    t["scatters"][0, 0, 1] += 5.0


def _indefinite_scatter(t):
    # symmetric, positive diagonal, yet not positive semi-definite
    t["scatters"][1] = torch.tensor([[1.0, 3, 0, 0], [3, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)


#: What a tensor of another dtype than camscope writes gets: refused, not converted.
_DTYPE = r"'counts' is float64 \[3\], expected int64 \[C=3\]"

TENSOR_EDITS = {
    "NaN in the means": (lambda t: t["means"].__setitem__((0, 1), float("nan")), "means holds NaN"),
    "Inf in the means": (lambda t: t["means"].__setitem__((2, 0), float("inf")), "means holds infinite"),
    "NaN in the scatters": (lambda t: t["scatters"].__setitem__((1, 2, 2), float("nan")), "scatters holds NaN"),
    "Inf in the counts": (lambda t: t.__setitem__("counts", t["counts"].double().fill_(float("inf"))), _DTYPE),
    "negative counts": (lambda t: t["counts"].__setitem__(0, -4), "count of at least 1"),
    "fractional counts": (lambda t: t.__setitem__("counts", t["counts"].double() + 0.5), _DTYPE),
    "zero counts": (lambda t: t["counts"].__setitem__(1, 0), "count of at least 1"),
    "negated scatters": (_negated_scatter, "negative diagonal"),
    "asymmetric scatter": (_asymmetric_scatter, "not symmetric"),
    "indefinite scatter": (_indefinite_scatter, "not positive semi-definite"),
    "short means": (lambda t: t.__setitem__("means", t["means"][:2]), r"'means' is float64 \[2, 4\], expected"),
    "wide means": (
        lambda t: t.__setitem__("means", torch.zeros(3, 5, dtype=torch.float64)),
        r"'means' is float64 \[3, 5\]",
    ),
    "flat scatters": (
        lambda t: t.__setitem__("scatters", t["scatters"].reshape(3, 16)),
        r"'scatters' is float64 \[3, 16\]",
    ),
    "short counts": (
        lambda t: t.__setitem__("counts", t["counts"][:1]),
        r"'counts' is int64 \[1\], expected int64 \[C=3\]",
    ),
    "fractional labels": (
        lambda t: t.__setitem__("labels", t["labels"].double() + 0.5),
        r"'labels' is float64 \[3\], expected int64",
    ),
    "repeated labels": (lambda t: t.__setitem__("labels", torch.zeros(3, dtype=torch.int64)), "distinct|differ"),
    "no scatters": (lambda t: t.pop("scatters"), "has no tensor 'scatters'"),
}


@pytest.mark.parametrize("case", list(TENSOR_EDITS))
def test_bad_tensors_are_refused(tmp_path, case):
    tensors, metadata = _parts(_bank(), tmp_path)
    edit, message = TENSOR_EDITS[case]
    edit(tensors)
    with pytest.raises(CamscopeError, match=f"edited.safetensors.*{message}"):
        ReferenceBank.load(_write(tmp_path, tensors, metadata))


METADATA_EDITS = {
    "short class_names": ({"class_names": ["a", "b"]}, "2 class_names for 3 classes"),
    "class_names not text": ({"class_names": [1, 2, 3]}, "class_names must be a list of names"),
    "input_size text": ({"input_size": "abc"}, "input_size must be a list of positive integers"),
    "input_size negative": ({"input_size": [8, -8]}, "input_size must be a list of positive integers"),
    "input_size bools": ({"input_size": [True, True]}, "input_size must be a list of positive integers"),
    "feature_size text": ({"feature_size": "4"}, "feature_size must be an integer"),
    "feature_size bool": ({"feature_size": True}, "feature_size must be an integer"),
    "feature_size float": ({"feature_size": 4.0}, "feature_size must be an integer"),
    "layer not a name": ({"layer": 3}, "layer must be a name"),
    "model not a mapping": ({"model": [1]}, "model must be a mapping"),
    "layout not a mapping": ({"layout": "grid"}, "layout must be a mapping"),
    "unknown scatter mode": ({"scatter": "diagonal"}, "scatter must be 'class' or 'shared'"),
    "auto_scatter text": ({"auto_scatter": "yes"}, "auto_scatter has the wrong type"),
    "labels differ": ({"labels": [0, 1, 5]}, "differ from the tensor's"),
    "max_scatter_bytes text": ({"max_scatter_bytes": "1G"}, "max_scatter_bytes must be an integer"),
}


@pytest.mark.parametrize("case", list(METADATA_EDITS))
def test_bad_metadata_is_refused(tmp_path, case):
    tensors, metadata = _parts(_bank(), tmp_path)
    edit, message = METADATA_EDITS[case]
    with pytest.raises(CamscopeError, match=f"is not a valid reference bank.*{message}"):
        ReferenceBank.load(_write(tmp_path, tensors, {**metadata, **edit}))


def test_missing_layer_is_refused(tmp_path):
    tensors, metadata = _parts(_bank(), tmp_path)
    del metadata["layer"]
    with pytest.raises(CamscopeError, match=r"is not a valid reference bank.*'layer'"):
        ReferenceBank.load(_write(tmp_path, tensors, metadata))


def test_a_negated_shared_scatter_is_refused(tmp_path):
    tensors, metadata = _parts(_bank("shared"), tmp_path)
    tensors["within"] = -tensors["within"]
    with pytest.raises(CamscopeError, match="within has a negative diagonal"):
        ReferenceBank.load(_write(tmp_path, tensors, metadata))


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("means", torch.float16), ("scatters", torch.float32), ("labels", torch.int32), ("counts", torch.int32)],
)
def test_tensors_of_another_dtype_are_refused_not_converted(tmp_path, name, dtype):
    """A float16 mean moved DiffCAM's maps by up to 0.01 once converted: a file holds what camscope writes."""
    tensors, metadata = _parts(_bank(), tmp_path)
    wanted = str(tensors[name].dtype).removeprefix("torch.")
    tensors[name] = tensors[name].to(dtype)
    shape = str(list(tensors[name].shape)).replace("[", r"\[").replace("]", r"\]")
    got = str(dtype).removeprefix("torch.")
    with pytest.raises(CamscopeError, match=rf"the tensor '{name}' is {got} {shape}, expected {wanted} \["):
        ReferenceBank.load(_write(tmp_path, tensors, metadata))


def test_state_dicts_are_checked_like_files():
    state = _bank().state_dict()
    state["scatters"] = -state["scatters"]
    with pytest.raises(CamscopeError, match=r"not a reference bank state.*negative diagonal"):
        ReferenceBank.from_state_dict(state)
    state = _bank().state_dict()
    state["input_size"] = "abc"
    with pytest.raises(CamscopeError, match="input_size must be a list of positive integers"):
        ReferenceBank.from_state_dict(state)


def test_large_scatters_get_the_cheaper_check(monkeypatch):
    import camscope.stats.class_moments as class_moments

    monkeypatch.setattr(class_moments, "_EIGEN_BUDGET", 0)
    z = torch.randn(50, 6, dtype=torch.float64)
    good = (z.T @ z).expand(3, 6, 6).clone()
    check_scatters(good)
    bad = good.clone()
    bad[1] = torch.eye(6, dtype=torch.float64) - 0.9 * (torch.ones(6, 6, dtype=torch.float64) - torch.eye(6))
    bad[1] = bad[1] + 0.0  # symmetric, unit diagonal, |off-diagonal| < 1, but eigenvalue 1 - 0.9 * 5 < 0
    with pytest.raises(CamscopeError, match=r"scatters\[1\] is not positive semi-definite"):
        check_scatters(bad)
