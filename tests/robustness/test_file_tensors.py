"""Every file camscope reads holds exactly the dtypes and shapes camscope writes, or is refused in one line.

One file of each kind is written once (a bank with per-class scatters and one with a
shared scatter, an analysis with profiles and the all-classes matrix, a multi-layer
explanation, the checkpoints of a bank, an analysis and an evaluation pass, a small
model of the zoo, a user's weights file); then every tensor of every file is stored
with each other dtype, with an extra dimension and with one more row, and loading
must raise a ``CamscopeError`` whose one line names the tensor, its dtype and shape,
and the expected ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import camscope
from camscope.analyses.ifa import Analysis
from camscope.errors import CamscopeError
from camscope.evaluation.results import EvaluationResults
from camscope.io import load_tensors, save_tensors
from camscope.models import zoo
from camscope.models.weights import load_state_dict_strict, read_state_dict
from camscope.passes.checkpoint import CHECKPOINT_KIND, Checkpoint
from camscope.stats.reference_bank import ReferenceBank
from camscope.stats.reference_bank_files import BANK_KIND

#: Same-kind changes come first (float16 for a float64 mean), then other kinds (int, bool).
DTYPES = (torch.float16, torch.float64, torch.float32, torch.bfloat16, torch.int64, torch.int32, torch.bool)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()


def _data() -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(8, 3, 8, 8, generator=generator), torch.arange(8) % 3)


def _restore(restore: Callable[[dict, torch.device], object]) -> Callable[[Path], object]:
    def load(path: Path) -> object:
        return Checkpoint.load(path).restored(restore, torch.device("cpu"), path)

    return load


def _user_weights(path: Path) -> object:
    return load_state_dict_strict(_model(), read_state_dict(path), path)


def _zoo_model(path: Path) -> object:
    zoo._load.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(zoo, "model_path", lambda name: path)
            return zoo.load_small_model("digits")
    finally:
        zoo._load.cache_clear()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, str | None, Callable[[Path], object]]]:
    """``kind: (file, safetensors kind or None for a plain state dict, loader)``."""
    folder = tmp_path_factory.mktemp("files")
    model, data = _model(), _data()
    found: dict[str, tuple[Path, str | None, Callable[[Path], object]]] = {}
    for scatter in ("class", "shared"):
        bank = ReferenceBank.build(model, data, "1", batch_size=4, scatter=scatter, progress=False)
        found[f"bank ({scatter})"] = (bank.save(folder / f"{scatter}.bank"), BANK_KIND, ReferenceBank.load)
    analysis = camscope.analyze(model, data, layer="1", all_classes=True, profiles=True, bins=16, progress=False)
    found["analysis"] = (analysis.save(folder / "analysis.safetensors"), "analysis", Analysis.load)
    explanation = camscope.explain(model, data.tensors[0][:2], layer=["0", "1"], target=[0, 2])
    found["explanation"] = (explanation.save(folder / "e.safetensors"), "explanation", camscope.Explanation.load)
    passes = {
        "bank": lambda path: ReferenceBank.build(model, data, "1", batch_size=4, checkpoint=path, progress=False),
        "analysis": lambda path: camscope.analyze(
            model, data, layer="1", profiles=True, bins=16, checkpoint=path, progress=False
        ),
        "evaluation": lambda path: camscope.evaluate(
            model, data, methods=["gradcam"], metrics=["sparseness"], layer="1", checkpoint=path, progress=False
        ),
    }
    restores = {
        "bank": lambda state, where: ReferenceBank.from_state_dict(state, device=where),
        "analysis": lambda state, where: Analysis.from_state_dict(state),
        "evaluation": lambda state, where: EvaluationResults([], []).load_state_dict(state),
    }
    for name, run in passes.items():
        run(folder / f"{name}.ckpt")
        found[f"{name} checkpoint"] = (folder / f"{name}.ckpt", CHECKPOINT_KIND, _restore(restores[name]))
    found["zoo model"] = (zoo.model_path("digits"), zoo.MODEL_KIND, _zoo_model)
    torch.save(model.state_dict(), folder / "weights.pt")
    found["weights (torch)"] = (folder / "weights.pt", None, _user_weights)
    return found


def _read(path: Path, kind: str | None) -> tuple[dict[str, torch.Tensor], dict]:
    if kind is None:
        return dict(torch.load(path, weights_only=True)), {}
    tensors, header = load_tensors(path, kind)
    return tensors, {key: value for key, value in header.items() if key not in ("kind", "format_version")}


def _write(folder: Path, kind: str | None, tensors: dict[str, torch.Tensor], header: dict) -> Path:
    if kind is None:
        path = folder / "edited.pt"
        torch.save(tensors, path)
        return path
    return save_tensors(folder / "edited.safetensors", tensors, header, kind=kind)


def _shape_pattern(tensor: torch.Tensor) -> str:
    return re.escape(str(list(tensor.shape)))


def _changes(tensor: torch.Tensor, *, any_float: bool, few: bool) -> list[tuple[str, torch.Tensor]]:
    """Other dtypes (of the same kind, and of another kind), an extra dimension, one row more.

    A user's weights may hold any floating dtype (they load as ``load_state_dict`` copies
    them): there the floating dtypes are not a change. ``few``: one dtype and one shape.
    """
    same = [d for d in DTYPES if d != tensor.dtype and d.is_floating_point == tensor.is_floating_point()]
    other = [d for d in DTYPES if d.is_floating_point != tensor.is_floating_point()]
    dtypes = other[:1] if any_float and tensor.is_floating_point() else (same[:1] + other[-1:])
    changes = [(f"dtype {dtype}", tensor.to(dtype)) for dtype in dtypes]
    changes.append(("extra dimension", tensor.unsqueeze(-1)))
    changes.append(("one row more", torch.cat([tensor.reshape(-1, *tensor.shape[1:])] * 2)))
    return [changes[0], changes[2]] if few else changes


KINDS = [
    "bank (class)",
    "bank (shared)",
    "analysis",
    "explanation",
    "bank checkpoint",
    "analysis checkpoint",
    "evaluation checkpoint",
    "zoo model",
    "weights (torch)",
]


@pytest.mark.parametrize("kind", KINDS)
def test_every_tensor_of_another_dtype_or_shape_is_refused_in_one_line(files, tmp_path, kind):
    path, file_kind, load = files[kind]
    original, header = _read(path, file_kind)
    load(_write(tmp_path, file_kind, dict(original), header))  # the untouched file loads
    checked = 0
    for name, tensor in original.items():
        for change, edited in _changes(tensor, any_float=kind.startswith("weights"), few=kind == "zoo model"):
            if name == "logits" and change == "extra dimension":
                continue  # the model's output: any shape [B, ...] (a segmentation model's is [B, C, H, W])
            with pytest.raises(CamscopeError) as raised:
                load(_write(tmp_path, file_kind, {**original, name: edited}, header))
            message = str(raised.value)
            assert "\n" not in message, message
            # the checkpoint names a tensor by its place in the state (results.gradcam...), not by its file key
            shown = name if "checkpoint" not in kind else ""
            dtype = str(edited.dtype).removeprefix("torch.")
            pattern = rf"'[^']*{re.escape(shown)}' is {dtype} {_shape_pattern(edited)}, expected .+ \["
            assert re.search(pattern, message), f"{kind}, {name}, {change}: {message}"
            checked += 1
    assert checked >= 2 * len(original)


@pytest.mark.parametrize("kind", ["bank (class)", "analysis", "explanation", "analysis checkpoint"])
def test_a_tensor_camscope_does_not_write_is_refused(files, tmp_path, kind):
    path, file_kind, load = files[kind]
    original, header = _read(path, file_kind)
    with pytest.raises(CamscopeError, match=r"'extra'|holds a tensor 'extra'") as raised:
        load(_write(tmp_path, file_kind, {**original, "extra": torch.zeros(2)}, header))
    assert "\n" not in str(raised.value)


def test_a_checkpoint_of_another_dtype_is_refused_when_a_pass_resumes(files, tmp_path):
    path, _, _ = files["bank checkpoint"]
    tensors, header = _read(path, CHECKPOINT_KIND)
    means = next(name for name, tensor in tensors.items() if tensor.dim() == 2)  # the [C, K] means
    tensors[means] = tensors[means].half()
    edited = _write(tmp_path, CHECKPOINT_KIND, tensors, header)
    edited.rename(tmp_path / "bank.ckpt")
    with pytest.raises(
        CamscopeError,
        match=r"the checkpoint .*bank\.ckpt: the tensor 'means' is float16 \[3, 4\], expected float64 \[3, 4\]",
    ):
        ReferenceBank.build(
            _model(), _data(), "1", batch_size=4, checkpoint=tmp_path / "bank.ckpt", resume=True, progress=False
        )


def test_weights_in_another_floating_dtype_load_as_the_model_copies_them(files, tmp_path):
    """A user's float16 weights are a normal release format: they load (upcast exactly); shapes must match."""
    path, _, _ = files["weights (torch)"]
    state = {name: t.half() if t.is_floating_point() else t for name, t in torch.load(path, weights_only=True).items()}
    torch.save(state, tmp_path / "half.pt")
    model = _model()
    load_state_dict_strict(model, read_state_dict(tmp_path / "half.pt"), tmp_path / "half.pt")
    assert torch.equal(model[0].weight, state["0.weight"].float())


def test_the_default_photo_models_bundled_weights_are_checked_too(tmp_path, monkeypatch):
    """The package file of EfficientNet-Lite0's weights (its own key names, mapped on load)."""
    import camscope.models.efficientnet_lite0 as lite0

    state = torch.load(lite0.efficientnet_lite0_weights_path(), weights_only=True, map_location="cpu")
    name = next(key for key, tensor in state.items() if tensor.dim() == 4)  # the stem's convolution
    monkeypatch.setattr(lite0, "efficientnet_lite0_weights_path", lambda: tmp_path / "lite0.pth")
    torch.save({**state, name: state[name].half()}, tmp_path / "lite0.pth")
    with pytest.raises(CamscopeError, match=r"is float16 \[32, 3, 3, 3\], expected float32 \[32, 3, 3, 3\]"):
        lite0.build_efficientnet_lite0("default")
