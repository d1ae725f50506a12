"""The README's Python snippets run as written, and every public name imports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.models import resnet18

import camscope
from camscope.models import sample_image

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_every_public_name_imports() -> None:
    for name in camscope.__all__:
        assert getattr(camscope, name) is not None, name


@pytest.mark.slow
def test_readme_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snippets = _snippets()
    assert len(snippets) == 5, "the README's snippets changed: update this test"
    monkeypatch.chdir(tmp_path)
    photos = tmp_path / "camscope-out" / "demo" / "photos"
    photos.mkdir(parents=True)
    Image.fromarray(sample_image("chelsea")).save(photos / "chelsea.png")

    namespace: dict = {}
    exec(snippets[0], namespace)  # tour: default model and photo
    assert camscope.Explanation.load("fused.safetensors").layer == ["blocks.5", "bn2"]
    exec(snippets[1], namespace)  # Finer-CAM
    assert namespace["e"].maps.shape == (1, 224, 224)

    # DiffCAM and IFA snippets name a ResNet layer and read train/: give them a small ResNet and folder.
    torch.manual_seed(0)
    images = torch.rand(6, 3, 64, 64)
    for index, name in enumerate(["tabby", "lynx", "espresso"] * 2):
        for split in ("train", "test"):
            (tmp_path / split / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray((images[index].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(
                tmp_path / split / name / f"{index}.png"
            )
    namespace.update(model=resnet18(num_classes=1000).eval(), x=images[:1])
    exec(snippets[2], namespace)
    assert namespace["e"].method == "diffcam"
    assert sorted(namespace["bank"].class_names) == ["espresso", "lynx", "tabby"]
    exec(snippets[3], namespace)
    assert namespace["analysis"].class_counts[[281, 287, 967]].tolist() == [2, 2, 2]  # folders named by classes
    assert namespace["e"].raw.shape == (1, 2, 2)
    tasks: dict = {}
    exec(snippets[4], tasks)  # detection, segmentation, heads, embeddings, several inputs: self-contained
    assert tasks["labels"].maps.shape == (3, 64, 64) and tasks["colour"].maps.shape == (2, 64, 64)
