"""``Explanation.save`` / ``Explanation.load``: every tensor and the metadata round-trip; bad files are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import camscope


def test_round_trip_keeps_tensors_and_metadata(tiny_cnn, images, tmp_path: Path):
    e = camscope.explain(tiny_cnn, images, method="gradcam", target=[1, 2, 3, 0][: images.shape[0]])
    path = e.save(tmp_path / "e.safetensors", model="tiny")
    back = camscope.Explanation.load(path)
    for name in ("raw", "maps", "weights", "contributions", "logits", "scores"):
        assert torch.equal(getattr(back, name), getattr(e, name)), name
    assert back.classes.tolist() == e.classes.tolist()
    assert (back.method, back.layer, back.options["model"]) == ("gradcam", e.layer, "tiny")
    # a saved class target still scores outputs: y_c per sample
    assert torch.equal(back.targets(e.logits), e.logits.gather(1, e.classes[:, None])[:, 0])


def test_multi_layer_metadata_is_a_list_and_per_layer_maps_come_back(tiny_cnn, images, tmp_path: Path):
    names = ["features.1", "features.3"]
    e = camscope.explain(tiny_cnn, images, method="layercam", layer=names)
    path = e.save(tmp_path / "multi.safetensors")
    with safe_open(str(path), "pt") as handle:
        header = json.loads(handle.metadata()["camscope"])
    assert header["layer"] == names and header["layers"] == names  # a JSON list, not a Python repr string
    back = camscope.Explanation.load(path)
    assert back.layer == names and list(back.layers) == names
    for name in names:
        assert torch.equal(back.layers[name].maps, e.layers[name].maps)


def test_finer_options_and_target_are_described(tiny_cnn, images, tmp_path: Path):
    e = camscope.explain(tiny_cnn, images, method="finer-gradcam", gamma=0.8)
    back = camscope.Explanation.load(e.save(tmp_path / "finer.safetensors"))
    assert back.options["gamma"] == 0.8
    assert back.targets.kind == "Finer" and back.classes.tolist() == e.classes.tolist()
    with pytest.raises(camscope.CamscopeError, match="cannot score outputs"):
        back.targets(e.logits)


def test_truncated_or_foreign_file_is_a_clear_error(tiny_cnn, images, tmp_path: Path):
    path = camscope.explain(tiny_cnn, images).save(tmp_path / "e.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(camscope.CamscopeError, match="truncated or corrupt"):
        camscope.Explanation.load(tmp_path / "cut.safetensors")
    bank_like = camscope.io.save_tensors(tmp_path / "other.safetensors", {"x": torch.ones(1)}, {}, kind="bank")
    with pytest.raises(camscope.CamscopeError, match="not a 'explanation'"):
        camscope.Explanation.load(bank_like)
    with pytest.raises(camscope.CamscopeError, match="no such file"):
        camscope.Explanation.load(tmp_path / "missing.safetensors")
