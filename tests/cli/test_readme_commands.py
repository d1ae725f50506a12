"""Every ``camscope`` command of the README runs as written (the README is the fixture).

The commands are read from the README's ``bash`` blocks in order (a line ending in ``\\`` continues
on the next one) and run in a fresh folder holding what they name: the photos ``make demo``
writes to ``camscope-out/demo/photos/``, ``img.jpg``, ``scene.png`` (a test scene of the shipped scene
models), ``species.png`` (a synthetic species, written as the README's Python snippet writes it), and
ImageFolder trees ``train/``, ``test/`` and ``val/`` of the bundled photos (class folders named by ImageNet
classes). ``camscope ...`` runs in this process (``camscope.cli.app.main`` with the command's arguments), ``torchrun``
as a subprocess; ``camscope serve`` (a server that runs until stopped) runs last, as a subprocess
that must print its address and answer there before it is stopped. The commands that cannot run
here are listed in ``NOT_RUN`` with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from camscope.cli.app import main
from camscope.data.small_models import dataset, scene_data
from camscope.models import sample_images
from camscope.viz.figures import save_image

README = Path(__file__).resolve().parents[2] / "README.md"

#: Commands (by their start) that this suite does not run, and why.
NOT_RUN = {
    "make demo": "installs the packages into .venv (needs the package registries); the command it runs, "
    "`camscope demo --out camscope-out/demo --overwrite`, is tested in tests/cli/test_cli.py",
    "make test": "installs the packages into .venv and runs the test suite, this file included",
    "pip install": "installs from the package registry: tests/test_packaging.py installs the built wheel "
    "with the core only and checks each extra's one-line message",
    ".venv/bin/camscope prompts photo.jpg --model DIR": "needs a CLIP model folder (DIR is a placeholder for "
    "one saved with save_pretrained): the same command runs on a tiny saved CLIP in "
    "tests/models/test_clip.py::test_load_clip_from_a_folder_and_the_prompts_cli",
    "torchrun --nproc_per_node=8": "needs 8 GPUs and ImageNet: the same command on 2 CPU processes runs above",
    "torchrun --nnodes=2": "needs two machines with GPUs and ImageNet: the same command on 2 CPU processes runs above",
}


def readme_commands() -> list[str]:
    """The shell commands of the README's bash blocks, continuation lines joined, comments kept."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        pending = ""
        for line in block.splitlines():
            text = pending + line.strip()
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            if text and not text.startswith("#"):
                commands.append(text)
    return commands


def _listed(command: str) -> str | None:
    return next((reason for start, reason in NOT_RUN.items() if command.startswith(start)), None)


def test_every_readme_command_is_a_camscope_command_that_runs_or_is_listed_with_a_reason():
    commands = readme_commands()
    assert len(commands) >= 15, commands
    for command in commands:
        first = shlex.split(command, comments=True)[0]
        assert first in (".venv/bin/camscope", "torchrun", "make", "pip"), command
    for start in NOT_RUN:
        assert any(command.startswith(start) for command in commands), f"{start!r} is no longer in the README"


def _photos(root: Path) -> None:
    """What the commands name: the demo's photos, img.jpg, scene.png (a test scene of the shipped scene
    models), and train/, test/, val/ of the bundled photos."""
    photos = sample_images()
    for name, rgb in photos.items():
        save_image(root / "camscope-out" / "demo" / "photos" / f"{name}.png", rgb / 255.0)
    save_image(root / "img.jpg", photos["coffee"] / 255.0)
    save_image(root / "scene.png", scene_data("scenes-detector", "test", limit=1).images[0].permute(1, 2, 0).numpy())
    species = dataset("species-clip", split="test", limit=1)  # species.png: a species of the image-text model
    save_image(root / "species.png", species.images[0].permute(1, 2, 0).numpy())
    # class folders named by ImageNet classes: two views of each photo
    classes = {"tabby": photos["chelsea"], "espresso": photos["coffee"], "missile": photos["rocket"]}
    for split in ("train", "test"):
        for name, rgb in classes.items():
            save_image(root / split / name / "0.jpg", rgb / 255.0)
            save_image(root / split / name / "1.jpg", np.ascontiguousarray(rgb[:, ::-1]) / 255.0)
    save_image(root / "val" / "espresso" / "0.jpg", photos["coffee"] / 255.0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve_answers(argv: list[str]) -> None:
    """Start ``camscope serve`` as written, wait for its address, check that the page answers, stop it."""
    import urllib.request

    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    server = subprocess.Popen(
        [sys.executable, "-m", "camscope", *argv[1:]], env=environment, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        line = ""
        while "http://" not in line:
            line = server.stdout.readline()
            assert line or server.poll() is None, f"{' '.join(argv)} exited with {server.poll()}"
        address = re.search(r"http://\S+", line)
        assert address is not None, line
        with urllib.request.urlopen(address.group(0), timeout=60) as page:
            assert page.status == 200 and b"camscope" in page.read()
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path)
    ran = skipped = 0
    servers = []
    for command in readme_commands():
        if _listed(command) is not None:
            skipped += 1
            continue
        argv = shlex.split(command, comments=True)
        if argv[1:2] == ["serve"]:
            servers.append(argv)  # after the commands that build the bank and the analysis it loads
            continue
        if argv[0] == "torchrun":
            torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
            environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
            environment["PET_MASTER_PORT"] = str(_free_port())  # torchrun's --master-port, set from outside
            done = subprocess.run(
                [torchrun, *argv[1:]], env=environment, capture_output=True, text=True, timeout=900, check=False
            )
            assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        else:
            status = main(argv[1:])
            assert status == 0, f"{command}\n{capsys.readouterr().err[-3000:]}"
        ran += 1
    for argv in servers:
        _serve_answers(argv)
        ran += 1
    assert ran == len(readme_commands()) - skipped > 0
    assert (tmp_path / "camscope-out" / "explain" / "chelsea.png__gradcam+layercam.png").is_file()
    assert (tmp_path / "ifa" / "report.md").is_file() and (tmp_path / "eval" / "summary.csv").is_file()
