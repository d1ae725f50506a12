"""CLI start-up: ``--version`` and ``-h`` import no torch; Ctrl-C at any moment of start-up is one line and status 130.

A child process runs exactly what the ``camscope`` console script runs (``from camscope.cli
import main; sys.exit(main())``) and prints a line just before it calls ``main``; the SIGINT
is sent a chosen delay after that line. ``main`` handles Ctrl-C from its first instruction;
before it, the interpreter starts (Python's own) and imports ``camscope`` and ``camscope.cli``,
which import nothing heavy (a few milliseconds; the first test checks that no torch is imported).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from camscope.stats.reference_bank import ReferenceBank
from camscope.viz.figures import save_image

#: What the console script runs, with a line just before ``main`` is called.
CHILD = "import sys; from camscope.cli import main; print('ready', flush=True); sys.exit(main(sys.argv[1:]))"
HEAVY = ("torch", "torchvision", "numpy", "PIL", "matplotlib", "scipy", "timm", "safetensors")


def _environment() -> dict[str, str]:
    source = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}


def test_version_and_help_import_no_torch():
    code = (
        "import sys\nfrom camscope.cli import main\n"
        "codes = [main(argv) for argv in (['--version'], ['-h'], ['explain', '-h'], ['bank', 'build', '-h'])]\n"
        f"print('CODES', codes, 'HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_environment(), timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("camscope ") and "CODES [0, 0, 0, 0] HEAVY []" in done.stdout, done.stdout[-500:]


def _interrupt(argv: list[str], delay: float) -> tuple[int | None, str]:
    """Start the CLI with ``argv``, send SIGINT ``delay`` seconds after ``main`` is called; ``(status, stderr)``."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environment(),
        # a shell that started the tests in the background may ignore SIGINT: the child gets the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert child.stdout is not None
    ready = child.stdout.readline()
    time.sleep(delay)
    finished_early = child.poll() is not None
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert ready == b"ready\n" and not finished_early, f"{argv} ended before the signal: {err.decode()[-500:]}"
    return child.returncode, err.decode()


def _assert_interrupted(argv: list[str], delay: float, status: int | None, err: str) -> None:
    assert (status, err) == (130, "camscope: interrupted\n"), f"{argv} at {delay} s: status {status}, stderr {err!r}"


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.7, 1.5])
def test_ctrl_c_during_start_up_is_one_line_and_status_130(tmp_path, delay):
    """The start-up path of a command that imports everything (typer, the commands, torch, torchvision, the model).

    Score-CAM's 512 forward passes keep the command running well past the last delay, so the
    signal always meets a running command (one that has finished cannot be interrupted).
    """
    save_image(tmp_path / "a.png", np.zeros((16, 16, 3), dtype=np.uint8))
    argv = ["explain", str(tmp_path / "a.png"), "--model", "torchvision:resnet18", "--weights", "none"]
    argv += ["--method", "scorecam"]
    _assert_interrupted(argv, delay, *_interrupt([*argv, "--out", str(tmp_path / "out")], delay))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("startup")
    (folder / "data" / "cat").mkdir(parents=True)
    for i in range(2):
        save_image(folder / "data" / "cat" / f"{i}.png", np.full((16, 16, 3), 40 * i, dtype=np.uint8))
    banks = []
    for i in range(2):
        bank = ReferenceBank(3, "layer4", class_names=["a", "b"]).update(torch.randn(4, 3), [0, 1, 0, 1])
        banks.append(str(bank.save(folder / f"{i}.bank")))
    return {
        "image": str(folder / "data" / "cat" / "0.png"),
        "data": str(folder / "data"),
        "banks": banks,
        "out": str(folder / "out"),
    }  # type: ignore[dict-item]


def _commands(inputs: dict) -> dict[str, list[str]]:
    image, data, out = inputs["image"], inputs["data"], inputs["out"]
    model = ["--model", "torchvision:resnet18", "--weights", "none"]
    return {
        "methods": ["methods", "--details"],
        "layers": ["layers", *model],
        "explain": ["explain", image, *model, "--out", f"{out}/explain"],
        "demo": ["demo", "--out", f"{out}/demo"],
        "similarity": ["similarity", *model, "--out", f"{out}/similarity"],
        "prompts": ["prompts", image, "--prompt", "cat", "--prompt", "dog", "--out", f"{out}/prompts"],
        "analyze": ["analyze", "--data", data, *model, "--out", f"{out}/analyze"],
        "evaluate": ["evaluate", "--data", data, *model, "--out", f"{out}/evaluate"],
        "reproduce": ["reproduce", "--quick", "--out", f"{out}/reproduce"],
        "serve": ["serve", "--port", "0", "--model", "torchvision:resnet18=none"],
        "bank build": ["bank", "build", "--data", data, *model, "--out", f"{out}/b.bank"],
        "bank info": ["bank", "info", inputs["banks"][0]],
        "bank merge": ["bank", "merge", *inputs["banks"], "--out", f"{out}/merged.bank"],
        "bank counterfactual": ["bank", "counterfactual", image, "--bank", inputs["banks"][0], "--versus", "b", *model],
    }


def test_ctrl_c_during_the_start_up_of_every_command(inputs):
    """Each command once, all at the same time, each at its own early delay (0.1 s to 0.75 s after start-up)."""
    commands = _commands(inputs)
    delays = {name: 0.1 + 0.05 * index for index, name in enumerate(commands)}
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        results = {name: pool.submit(_interrupt, argv, delays[name]) for name, argv in commands.items()}
    for name, result in results.items():
        _assert_interrupted(commands[name], delays[name], *result.result())


def test_ctrl_c_while_a_file_is_written_leaves_no_temporary(tmp_path, monkeypatch, capfd):
    """The handler exits at once (no ``finally`` runs): it removes the temporaries being written first."""
    import camscope.cli
    from camscope.io import atomic_write_bytes

    def interrupted_write(descriptor: int) -> None:
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temporary exists now
        camscope.cli._exit_on_ctrl_c(signal.SIGINT, None)

    def exit_now(status: int) -> None:
        left.extend(p.name for p in tmp_path.iterdir())  # what an exit that runs no finally block leaves
        raise SystemExit(status)

    left: list[str] = []
    monkeypatch.setattr(os, "fsync", interrupted_write)
    monkeypatch.setattr(os, "_exit", exit_now)
    with pytest.raises(SystemExit) as exited:
        atomic_write_bytes(tmp_path / "bank.safetensors", b"data")
    assert exited.value.code == 130 and left == [] and sorted(p.name for p in tmp_path.iterdir()) == []
    assert capfd.readouterr().err == "camscope: interrupted\n"
