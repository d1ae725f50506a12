"""The built wheel: ``pip install camscope`` (no extras) explains a torchvision model; each missing extra is one line.

Installing torch into a fresh virtual environment takes minutes and gigabytes, so the
environment here is built from this one: a new venv (no ``.pth`` files, no access to this
environment's packages) whose site-packages holds links to the installed core distributions
(torch, torchvision, numpy, Pillow, safetensors) and everything they require, and the wheel
of this source tree installed with ``--no-deps``. The wheel's declared core requirements
must be exactly those distributions.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CORE = {"torch", "torchvision", "numpy", "pillow", "safetensors"}
#: Each extra's feature, as the wheel's environment meets it without the extra.
EXTRAS = {
    "plots": "import camscope.viz",
    "photo": "camscope.models.load_model('efficientnet_lite0')",
    "reproduce": "import camscope.reproduce",
    "clip": "camscope.models.clip.load_clip('open_clip:ViT-B-32')",
    "app": "import camscope.app.server",
}

SCRIPT = """
import importlib, json, sys
import torch
import camscope, camscope.models, camscope.models.clip
from camscope.errors import MissingExtraError
from camscope.progress import ProgressBar

model = camscope.models.load_model("torchvision:resnet18", weights=None)
explanation = camscope.explain(model, torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)), target=3)
with ProgressBar(2, "steps", enabled=True) as bar:  # no rich in the core: plain lines
    bar.advance(); bar.advance()
errors = {}
for extra, code in json.loads(sys.argv[1]).items():
    try:
        exec(code)
    except MissingExtraError as error:
        errors[extra] = str(error)
meta = importlib.metadata
print(json.dumps({
    "maps": list(explanation.maps.shape),
    "finite": bool(explanation.maps.isfinite().all()),
    "camscope": camscope.__file__,
    "requires": meta.requires("camscope"),
    "errors": errors,
}))
"""


def _closure(names: set[str]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions ``names`` need (their requirements without extras, markers evaluated)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in found:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # e.g. CUDA libraries a CPU build of torch runs without
        found[name] = distribution
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def _link_distributions(distributions: dict[str, importlib.metadata.Distribution], site: Path) -> None:
    """Link each distribution's top-level files and folders (its modules and its metadata) into ``site``."""
    for distribution in distributions.values():
        source = Path(str(distribution.locate_file("")))
        for top in {Path(str(file)).parts[0] for file in distribution.files or []}:
            if top in ("..", "__pycache__") or top.endswith(".pth") or (site / top).exists():
                continue
            if (source / top).exists():
                (site / top).symlink_to(source / top)


def _run(*command: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0 or env is not None, done.stderr[-2000:]
    return done


@pytest.mark.slow
def test_the_wheel_with_the_core_only_explains_a_torchvision_model(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info next to the sources
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path)
    (wheel,) = tmp_path.glob("camscope-*.whl")

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    assert site != Path(sysconfig.get_paths()["purelib"])
    _link_distributions(_closure(CORE), site)
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)

    clean = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    done = _run(python, "-I", "-c", SCRIPT, json.dumps(EXTRAS), env=clean)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["maps"] == [1, 64, 64] and result["finite"]
    assert result["camscope"].startswith(str(site))  # the wheel, not this source tree
    core = {Requirement(text).name.lower() for text in result["requires"] if "extra ==" not in text}
    assert core == CORE
    assert set(result["errors"]) == set(EXTRAS), result["errors"]
    for extra, message in result["errors"].items():
        assert message.startswith(f"camscope[{extra}] is needed for ") and f"pip install 'camscope[{extra}]'" in message
        assert "\n" not in message

    cli = _run(venv / "bin" / "camscope", "--version", env=clean)
    assert cli.returncode == 2 and cli.stderr.startswith(
        "camscope: error: camscope[cli] is needed for the command line: pip install 'camscope[cli]'"
    )
    assert cli.stderr.count("\n") == 1
