"""``--weights``/``weights=``: a pickle is refused in one line without running it; tensors must fit the model."""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from torch import nn

from camscope.cli import main
from camscope.errors import CamscopeError
from camscope.models import load_model
from camscope.models.weights import load_state_dict_strict, read_state_dict

SAFE_LINE = (
    "is not a state dict camscope can read safely: give a .safetensors file, or a torch file that holds only tensors"
)


class _Payload:
    """A pickle that would create a file when unpickled (it must not be)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_pickle(path, name: str, marker: str) -> None:
    if name == "model.pt":
        torch.save(nn.Linear(2, 2), path)  # torch.save(model): the whole module pickled
        return
    payload = {"weight": _Payload(marker)}
    if name == "checkpoint.pth":  # a training checkpoint: the state dict next to Python objects
        payload = {"epoch": 3, "state_dict": nn.Linear(2, 2).state_dict(), "args": _Payload(marker)}
    with path.open("wb") as file:
        pickle.dump(payload, file)


@pytest.mark.parametrize("name", ["model.pt", "payload.pt", "checkpoint.pth"])
def test_a_pickle_is_refused_in_one_line_and_never_run(tmp_path, name):
    path = tmp_path / name
    _write_pickle(path, name, str(tmp_path / "ran"))
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with pytest.raises(CamscopeError) as raised:
            read_state_dict(path)
    message = str(raised.value)
    assert not warned, [str(w.message) for w in warned]  # nothing but the one line
    assert "\n" not in message and SAFE_LINE in message and "weights_only=False" not in message
    assert not (tmp_path / "ran").exists()


def test_the_cli_says_it_in_one_line(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save(nn.Linear(2, 2), path)
    assert main(["layers", "--model", "torchvision:resnet18", "--weights", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and SAFE_LINE in lines[0] and "weights_only=False" not in lines[0]


def test_weights_that_do_not_fit_get_one_line(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    state = model.state_dict()
    cases = {
        "shape": ({**state, "0.weight": torch.zeros(4, 3, 5, 5)}, r"'0.weight' is float32 \[4, 3, 5, 5\], expected"),
        "integer buffer": (
            {**state, "1.num_batches_tracked": torch.tensor(0.0)},
            r"'1.num_batches_tracked' is float32 \[\], expected int64 \[\]",
        ),
        "names": ({k: v for k, v in state.items() if k != "0.bias"}, r"1 missing \(0.bias\)"),
        "integer weights": ({**state, "0.weight": state["0.weight"].int()}, r"is int32 .* a floating-point dtype"),
    }
    for name, (edited, pattern) in cases.items():
        torch.save(edited, tmp_path / "w.pt")
        with pytest.raises(CamscopeError, match=pattern) as raised:
            load_state_dict_strict(model, read_state_dict(tmp_path / "w.pt"), tmp_path / "w.pt")
        assert "\n" not in str(raised.value), name
    # a state dict without num_batches_tracked (older PyTorch) still loads, as torch allows it
    torch.save({k: v for k, v in state.items() if "num_batches" not in k}, tmp_path / "old.pt")
    load_state_dict_strict(model, read_state_dict(tmp_path / "old.pt"), tmp_path / "old.pt")


def test_a_torchvision_model_loads_a_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    model = load_model("torchvision:resnet18", weights=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "r.safetensors")
    again = load_model("torchvision:resnet18", weights=tmp_path / "r.safetensors")
    assert torch.equal(again.fc.weight, model.fc.weight)
