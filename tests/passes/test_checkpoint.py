"""Checkpoints: a pass killed with SIGKILL resumes to the uninterrupted result; other passes' checkpoints are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import camscope
from camscope.accumulators.reference_bank import ReferenceBank
from camscope.errors import CamscopeError
from camscope.passes.checkpoint import Checkpoint

_SETUP = """
import time
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


class SlowData(TensorDataset):
    delay = 0.0
    seen = []

    def __getitem__(self, index):
        self.seen.append(index)
        if index >= 4:
            time.sleep(self.delay)
        return super().__getitem__(index)


def data():
    generator = torch.Generator().manual_seed(2)
    return SlowData(torch.randn(12, 3, 8, 8, generator=generator), torch.arange(12) % 3)
"""

_RUN = {
    "bank": "ReferenceBank.build(model(), data, '0', batch_size=2, progress=False, **options)",
    "analysis": "camscope.analyze(model(), data, layer='0', batch_size=2, profiles=True, progress=False, **options)",
}


def _namespace() -> dict[str, object]:
    namespace: dict[str, object] = {}
    exec(_SETUP, namespace)  # the child's model and data, built the same way here
    return namespace


def _run(kind: str, namespace: dict[str, object], **options: object) -> object:
    return eval(_RUN[kind], {**namespace, "ReferenceBank": ReferenceBank, "camscope": camscope, "options": options})


def _same(kind: str, resumed: object, whole: object) -> None:
    if kind == "bank":
        assert isinstance(resumed, ReferenceBank) and isinstance(whole, ReferenceBank)
        assert torch.equal(resumed.counts, whole.counts)
        torch.testing.assert_close(resumed.moments.means, whole.moments.means, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            resumed.state_dict()["scatters"], whole.state_dict()["scatters"], rtol=1e-12, atol=1e-12
        )
        return
    assert isinstance(resumed, camscope.Analysis) and isinstance(whole, camscope.Analysis)
    assert resumed.n_samples == whole.n_samples == 12
    for key, value in whole.values.state_dict().items():
        assert torch.equal(torch.as_tensor(resumed.values.state_dict()[key]), torch.as_tensor(value)), key
    torch.testing.assert_close(resumed.importance, whole.importance, rtol=1e-12, atol=1e-12)
    assert resumed.profiles is not None and whole.profiles is not None
    assert torch.equal(resumed.profile_ids, whole.profile_ids)
    torch.testing.assert_close(resumed.profiles, whole.profiles, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["bank", "analysis"])
def test_a_killed_pass_resumes_to_the_uninterrupted_result(kind: str, tmp_path: Path) -> None:
    checkpoint = tmp_path / "pass.ckpt"
    script = tmp_path / "child.py"
    script.write_text(
        "import camscope\nfrom camscope.accumulators.reference_bank import ReferenceBank\n"
        + _SETUP
        + textwrap.dedent(f"""
            SlowData.delay = 0.5
            data = data()
            options = dict(checkpoint={str(checkpoint)!r}, checkpoint_every=1)
            {_RUN[kind]}
            """)
    )
    child = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 120
        done = 0
        while done < 2 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)
            if checkpoint.is_file():
                done = Checkpoint.load(checkpoint).batches
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL and done >= 2
    saved = Checkpoint.load(checkpoint).batches
    assert 2 <= saved < 6  # killed mid-pass
    namespace = _namespace()
    data = namespace["data"]()  # type: ignore[operator]
    resumed = _run(kind, namespace | {"data": data}, checkpoint=checkpoint, resume=True)
    assert min(data.seen) == 2 * saved  # the resumed pass loads only the batches not yet done
    whole = _run(kind, namespace | {"data": namespace["data"]()})  # type: ignore[operator]
    _same(kind, resumed, whole)
    again = _run(kind, namespace | {"data": namespace["data"]()}, checkpoint=checkpoint, resume=True)
    _same(kind, again, whole)  # a finished checkpoint gives the result at once


def test_checkpoints_of_other_passes_are_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "bank.ckpt"
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    ReferenceBank.build(model, TensorDataset(x, y), "0", batch_size=2, checkpoint=checkpoint, progress=False)
    with pytest.raises(CamscopeError, match=r"belongs to another pass.*batch_size"):
        ReferenceBank.build(model, TensorDataset(x, y), "0", batch_size=3, checkpoint=checkpoint, resume=True)
    with pytest.raises(CamscopeError, match=r"belongs to another pass.*data"):
        ReferenceBank.build(model, TensorDataset(x[:5], y[:5]), "0", batch_size=2, checkpoint=checkpoint, resume=True)
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(CamscopeError, match=r"belongs to another pass.*other weights"):
        ReferenceBank.build(other, TensorDataset(x, y), "0", batch_size=2, checkpoint=checkpoint, resume=True)
    with pytest.raises(CamscopeError, match=r"belongs to another pass.*analyzing"):
        camscope.analyze(
            nn.Sequential(model, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)),
            TensorDataset(x, y),
            layer="0.0",
            batch_size=2,
            checkpoint=checkpoint,
            resume=True,
        )
    (tmp_path / "not.ckpt").write_bytes(b"garbage")
    with pytest.raises(CamscopeError, match="not a camscope safetensors file"):
        ReferenceBank.build(model, x, "0", checkpoint=tmp_path / "not.ckpt", resume=True)
    with pytest.raises(CamscopeError, match="need a checkpoint file"):
        ReferenceBank.build(model, x, "0", checkpoint_every=2)
    fresh = ReferenceBank.build(model, x, "0", checkpoint=tmp_path / "new.ckpt", resume=True, progress=False)
    assert fresh.count == 6 and (tmp_path / "new.ckpt").is_file()  # nothing to resume: a whole pass


class _Failing(TensorDataset):
    fail_from: int | None = None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if self.fail_from is not None and index >= self.fail_from:
            raise KeyboardInterrupt  # an interruption mid-pass
        return super().__getitem__(index)


def test_evaluation_and_consistency_resume_after_an_interruption(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x, y = torch.randn(7, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    runs = {
        "evaluate": lambda data, **o: camscope.evaluate(
            model, data, methods=["gradcam"], metrics=["sparseness"], layer="0", batch_size=2, progress=False, **o
        ),
        "consistency": lambda data, **o: camscope.metrics.consistency(
            model, data, layer="0", batch_size=2, progress=False, **o
        ),
    }
    for name, run in runs.items():
        checkpoint = tmp_path / f"{name}.ckpt"
        broken = _Failing(x, y)
        broken.fail_from = 4
        with pytest.raises(KeyboardInterrupt):
            run(broken, checkpoint=checkpoint, checkpoint_every=1)
        assert Checkpoint.load(checkpoint).batches == 2
        resumed, whole = run(_Failing(x, y), checkpoint=checkpoint, resume=True), run(_Failing(x, y))
        if name == "evaluate":
            assert resumed.samples == whole.samples == [str(i) for i in range(7)]
            got, expected = resumed.results["gradcam"]["sparseness"], whole.results["gradcam"]["sparseness"]
            assert torch.equal(got.values["gini"], expected.values["gini"])
        else:
            assert torch.equal(resumed.cam_sums, whole.cam_sums) and torch.equal(resumed.logits, whole.logits)


def test_a_resumed_in_order_loader_loads_only_the_batches_not_done(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    x, y = torch.randn(12, 3, 8, 8), torch.arange(12) % 3
    checkpoint = tmp_path / "loader.ckpt"
    broken = _Counting(x, y)
    broken.seen, broken.fail_from = [], 8  # batches of 4: two done, the third interrupted
    with pytest.raises(KeyboardInterrupt):
        ReferenceBank.build(model, DataLoader(broken, batch_size=4), "0", checkpoint=checkpoint, checkpoint_every=1)
    seen: list[int] = []
    counting = _Counting(x, y)
    counting.seen = seen
    resumed = ReferenceBank.build(
        model, DataLoader(counting, batch_size=4), "0", checkpoint=checkpoint, resume=True, progress=False
    )
    assert seen == [8, 9, 10, 11]  # only the batch not done was loaded
    whole = ReferenceBank.build(model, DataLoader(_Failing(x, y), batch_size=4), "0", progress=False)
    _same("bank", resumed, whole)
    with pytest.raises(CamscopeError, match=r"belongs to another pass.*data"):
        ReferenceBank.build(model, DataLoader(counting, batch_size=3), "0", checkpoint=checkpoint, resume=True)


class _Counting(_Failing):
    seen: list[int]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        self.seen.append(index)
        return super().__getitem__(index)


def test_resuming_with_another_number_of_processes_is_refused(tmp_path: Path) -> None:
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    ReferenceBank.build(model, TensorDataset(x, y), "0", batch_size=2, checkpoint=tmp_path / "one.ckpt", progress=False)
    for rank in (0, 1):  # what two torchrun processes leave for --checkpoint bank.ckpt
        (tmp_path / f"bank.rank{rank}-of-2.ckpt").write_bytes((tmp_path / "one.ckpt").read_bytes())
    with pytest.raises(CamscopeError, match=r"written by 2 process\(es\), this pass runs 1.*nproc_per_node=2"):
        ReferenceBank.build(model, TensorDataset(x, y), "0", checkpoint=tmp_path / "bank.ckpt", resume=True)
    assert not (tmp_path / "bank.ckpt").exists()  # nothing was started or written
