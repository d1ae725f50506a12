"""``torchrun --nproc_per_node=2 -m camscope bank build``: two processes build the bank one process builds."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from camscope.accumulators.reference_bank import ReferenceBank


def _image_folder(root: Path, classes: list[str], per_class: int = 3, size: int = 32) -> Path:
    from PIL import Image

    g = np.random.default_rng(5)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(g.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_torchrun_bank_build_equals_one_process(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun is not installed")
    data = _image_folder(tmp_path / "data", ["a", "b"], per_class=5)  # 10 images, 5 batches of 2: uneven ranks
    arguments = ["bank", "build", "--data", str(data), "--model", "timm:resnet10t", "--weights", "none"]
    arguments += ["--size", "32", "--batch-size", "2", "--workers", "1"]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    launch = [torchrun, "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    run = subprocess.run(
        [*launch, "-m", "camscope", *arguments, "--out", str(tmp_path / "two.bank")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("10 samples") == 1  # only rank 0 prints
    single = subprocess.run(
        [sys.executable, "-m", "camscope", *arguments, "--out", str(tmp_path / "one.bank")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    two, one = ReferenceBank.load(tmp_path / "two.bank"), ReferenceBank.load(tmp_path / "one.bank")
    assert two.labels == one.labels and torch.equal(two.counts, one.counts)
    torch.testing.assert_close(two.moments.means, one.moments.means, rtol=1e-12, atol=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "one.bank", "two.bank"]  # nothing else written
