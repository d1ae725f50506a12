"""Tiny seeded models shared by the tests, and the rules that keep tests independent of their order.

The suite runs in a random order (pytest-randomly; the seed is printed at the end, rerun an order with
``-p randomly --randomly-seed=N``, or keep file order with ``-p no:randomly``). Every test starts with
torch's global generator seeded from its own name, and must leave the process as it found it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn


class TinyCNN(nn.Module):
    """Two stride-1 convolutions (the layer keeps the input size), global pooling, a linear head."""

    def __init__(self, classes: int = 5, channels: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class TinyStridedCNN(nn.Module):
    """Downsamples by 4, so maps are upsampled; a BatchNorm to check eval mode."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage(self.stem(x)))


class Tiny3DCNN(nn.Module):
    """A volume classifier (Conv3d), as in the IFA paper's MRI models."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv3d(6, 8, 3, stride=2, padding=1), nn.ReLU()
        )
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3, 4)))


class TinyViT(nn.Module):
    """Patch embedding, class + register tokens, two transformer blocks, class-token head."""

    def __init__(self, classes: int = 4, dim: int = 16, patch: int = 4, registers: int = 2) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1 + registers, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(2)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.norm(self.blocks(tokens))[:, 0])


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def _seeded(cls: type[nn.Module], **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return cls(**kwargs).eval()


@pytest.fixture(scope="module")
def one_thread():
    """Many small element-wise ops (rendering, small models): one thread is much faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_cnn() -> nn.Module:
    return _seeded(TinyCNN)


@pytest.fixture
def strided_cnn() -> nn.Module:
    return _seeded(TinyStridedCNN)


@pytest.fixture
def tiny_3d() -> nn.Module:
    return _seeded(Tiny3DCNN)


@pytest.fixture
def tiny_vit() -> nn.Module:
    return _seeded(TinyViT)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


class FeatureNet(nn.Module):
    """Conv features (the explained layer), global pooling, an optional linear head (float64 for exact checks)."""

    def __init__(self, channels: int = 6, classes: int | None = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        )
        self.head = nn.Linear(channels, classes) if classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(2, 3))
        return self.head(pooled) if self.head is not None else pooled


def feature_net(classes: int | None = 3, seed: int = 0) -> nn.Module:
    """A seeded float64 FeatureNet in eval mode (exact checks of DiffCAM and reference banks)."""
    torch.manual_seed(seed)
    return FeatureNet(classes=classes).double().eval()


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as module ``name``, with the scripts' folder on ``sys.path`` while it loads.

    The training scripts import their shared helpers (``scripts/training.py``) from their own folder, as they
    do when run as ``python scripts/<name>.py``; the path is restored afterwards.
    """
    folder = str(Path(__file__).resolve().parents[1] / "scripts")
    spec = importlib.util.spec_from_file_location(name, Path(folder) / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


@pytest.fixture(scope="module")
def start_serve():
    """Start ``python -m camscope serve --port 0 ARGS...`` with this checkout's sources; returns the URL line.

    A server that does not print its URL fails the test with its output; every server is stopped
    when the module's tests are done.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    source = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    processes: list[subprocess.Popen] = []

    def start(*args: str) -> str:
        process = subprocess.Popen(
            [sys.executable, "-m", "camscope", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("camscope explorer: "):
            process.kill()
            pytest.fail(f"camscope serve did not start: {line}{process.stdout.read()}")
        return line

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


# Set by libraries on import (torch's compiler cache, open_clip's tokenizers, scikit-learn's and joblib's OpenMP
# settings): not a test's doing.
_LIBRARY_ENVIRONMENT = {
    "TORCHINDUCTOR_CACHE_DIR",
    "TOKENIZERS_PARALLELISM",
    "KMP_INIT_AT_FORK",
    "KMP_DUPLICATE_LIB_OK",
    "PYTEST_CURRENT_TEST",
}


def _process_state() -> dict[str, object]:
    """What one test must not leave changed for the next (the suite passes in any order, twice in one process).

    Threads: camscope's own and any non-daemon thread (libraries' daemon pools, e.g. AnyIO's or tqdm's
    monitor, come and go by themselves).
    """
    import os
    import signal
    import threading

    return {
        "threads": sorted(
            t.name
            for t in threading.enumerate()
            if t is not threading.main_thread() and (t.name.startswith("camscope") or not t.daemon)
        ),
        "torch threads": torch.get_num_threads(),
        "default dtype": torch.get_default_dtype(),
        "grad enabled": torch.is_grad_enabled(),
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "autocast (cpu)": torch.is_autocast_enabled("cpu"),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "SIGINT handler": signal.getsignal(signal.SIGINT),
        "cwd": os.getcwd(),
        "environment": {k: v for k, v in os.environ.items() if k not in _LIBRARY_ENVIRONMENT},
    }


@pytest.fixture(autouse=True)
def _leaves_process_state_unchanged(request: pytest.FixtureRequest):
    """Fails a test that leaves global state changed: the next test would depend on it.

    Module- and session-scoped fixtures are set up before this one, so their threads and settings
    are part of the state a test starts from.
    """
    before = _process_state()
    yield
    after = _process_state()
    changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    if "environment" in changed:
        old, new = changed["environment"]
        assert isinstance(old, dict) and isinstance(new, dict)
        changed["environment"] = {
            k: (old.get(k), new.get(k)) for k in old.keys() | new.keys() if old.get(k) != new.get(k)
        }
    assert not changed, f"{request.node.nodeid} left process state changed: {changed}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Seed torch's global generator from the test's name, before its fixtures: the same draws in any order."""
    torch.manual_seed(zlib.crc32(item.nodeid.encode()))


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    seed = getattr(config.option, "randomly_seed", None)  # absent with -p no:randomly
    if seed is not None:
        terminalreporter.write_line(f"test order: --randomly-seed={seed} (pytest-randomly)")


# The explorer's browser tests' browser (tests/app/test_explorer_browser.py): Debian's Chromium driven by
# Playwright, one per test process. These fixtures live here, not in the test module, so that a module collected
# twice (make test-order runs the suite twice in one process) shares them: Playwright's sync API cannot start
# a second time in a thread where it is running.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """The Chromium binary, or a skip that says what is missing."""
    pytest.importorskip("fastapi", reason="the app extra is not installed: pip install 'camscope[app]'")
    pytest.importorskip(
        "playwright.sync_api", reason="Playwright for Python is not installed: pip install 'camscope[test]'"
    )
    path = os.environ.get("CAMSCOPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.skip(
            f"no Chromium browser at {path}: install Debian's chromium (apt-get install chromium) to run the browser tests"
        )
    return path


@pytest.fixture(scope="session")
def browser(chromium_executable: str) -> Iterator[Any]:
    """One headless Chromium for the session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_ARGS)
        except Exception as error:  # noqa: BLE001 - a browser that cannot start here (missing libraries) skips
            pytest.skip(f"Chromium at {chromium_executable} does not start: {error}")
        yield launched
        launched.close()
