"""The README's Python snippets run exactly as written, in order, in one namespace; every public name imports.

The snippets are the README's ``python`` blocks, executed one after the other in one namespace
(as a reader pastes them into one session), in a fresh folder holding what they name: the photo
``make demo`` writes to ``camscope-out/demo/photos/chelsea.png``, and ImageFolder trees ``train/``
and ``test/`` of the bundled photos whose class folders are ImageNet classes. Nothing is patched:
the model is the one the first snippet loads (the default, offline).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import camscope
from camscope.models import sample_images
from camscope.viz.figures import save_image

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _folders(root: Path) -> None:
    """What the snippets name: the demo's photo and train/, test/ with two small photos per ImageNet class."""
    photos = sample_images()
    save_image(root / "camscope-out" / "demo" / "photos" / "chelsea.png", photos["chelsea"] / 255.0)
    classes = {"tabby": ("chelsea", "astronaut"), "espresso": ("coffee", "motorcycle"), "missile": ("rocket",)}
    for split in ("train", "test"):
        for name, sources in classes.items():
            for index, source in enumerate(sources):
                picture = photos[source][::2, ::2] if split == "train" else photos[source][::3, ::3]
                save_image(root / split / name / f"{index}.png", picture / 255.0)


def test_every_public_name_imports() -> None:
    for name in camscope.__all__:
        assert getattr(camscope, name) is not None, name


@pytest.mark.slow
def test_readme_snippets_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snippets = _snippets()
    assert len(snippets) >= 5, "the README lost Python snippets"
    monkeypatch.chdir(tmp_path)
    _folders(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for number, snippet in enumerate(snippets, start=1):
        exec(compile(snippet, f"README.md, python block {number}", "exec"), namespace)
    # what the blocks say they make
    assert (tmp_path / "chelsea_gradcam.png").is_file()
    assert camscope.Explanation.load("fused.safetensors").layer == ["blocks.5", "bn2"]
    bank, analysis, e = namespace["bank"], namespace["analysis"], namespace["e"]
    assert bank.class_names == ["espresso", "missile", "tabby"] and bank.layer == "bn2"
    assert analysis.layer == "bn2" and analysis.class_counts[[281, 657, 967]].tolist() == [2, 1, 2]
    assert e.classes.tolist() == [281] and e.raw.shape == (1, 7, 7)
    # detection, segmentation, heads, embeddings, several inputs
    assert namespace["labels"].maps.shape == (3, 64, 64) and namespace["colour"].maps.shape == (2, 64, 64)
