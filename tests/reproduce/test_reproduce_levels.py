"""The report at three difficulty levels: shared data and forward passes, claims per level, the header's level
table, the real-photo measures and the prompt section."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from camscope.reproduce import HOLDS, PARTLY, Claim, Section
from camscope.reproduce.merge import count_by_level
from camscope.reproduce.photos import _pairs, mass_moved, region_masses
from camscope.reproduce.report import Context

pytestmark = pytest.mark.usefixtures("one_thread")


def test_context_renders_a_split_once_and_slices_its_prefixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from camscope.data import small_models

    calls: list[int | None] = []
    real = small_models.dataset

    def counted(name: str, split: str = "test", limit: int | None = None) -> object:
        calls.append(limit)
        return real(name, split=split, limit=limit)

    monkeypatch.setattr(small_models, "dataset", counted)
    context = Context(out=tmp_path)
    big = context.data("species-hard", "test", 12)
    small = context.data("species-hard", "test", 5)
    assert calls == [12] and torch.equal(small.images, big.images[:5]) and len(small.batch) == 5
    assert torch.equal(small.part_masks, big.part_masks[:5]) and torch.equal(small.boxes, big.boxes[:5])
    larger = context.data("species-hard", "test", 20)
    assert calls == [12, 20] and torch.equal(larger.images[:12], big.images)  # a prefix is the same images
    logits = context.predictions("species-hard", "test", 5)
    with torch.no_grad():
        assert torch.allclose(logits, context.model("species-hard")(small.images), atol=1e-5)
    assert context.predictions("species-hard", "test", 20).shape == (20, 16)
    assert context.levels == {"easy": "species", "medium": "species-medium", "hard": "species-hard"}


def test_verdict_tables_name_the_level_and_are_counted_per_level() -> None:
    section = Section(
        "S",
        "body",
        [Claim("c1", HOLDS, "e", level="easy"), Claim("c1", PARTLY, "e", level="hard"), Claim("c2", HOLDS, "e")],
    )
    text = section.markdown()
    assert "| paper's claim | level | verdict | here |" in text and "| c2 | – | **holds** | e |" in text
    counts = count_by_level([text])
    assert counts["easy"][HOLDS] == 1 and counts["hard"][PARTLY] == 1 and set(counts) == {"easy", "hard"}
    plain = Section("T", "body", [Claim("c3", HOLDS, "e")]).markdown()
    assert "| paper's claim | verdict | here |" in plain and count_by_level([plain]) == {}


def test_header_reads_gradcam_rd_of_each_level_from_the_finer_tables() -> None:
    from camscope.reproduce import _gradcam_rd

    block = (
        "## Finer-CAM: comparing with similar classes\n\n### Easy level: x\n\n| method | images | Del. | RD@5% |\n"
        "|---|---|---|---|\n| Grad-CAM | 512 | 0.095 | 0.748 |\n\n### Hard level: y\n\n| Grad-CAM | 512 | 0.1 | 0.210 |\n"
    )
    blocks = {"Finer-CAM: comparing with similar classes": block}
    assert _gradcam_rd(blocks, "easy") == "0.748" and _gradcam_rd(blocks, "hard") == "0.210"
    assert _gradcam_rd(blocks, "medium") == "–" and _gradcam_rd({}, "easy") == "–"


def test_mass_moved_and_region_masses_match_loops() -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 5, 6, generator=generator), torch.rand(3, 5, 6, generator=generator)
    b[2] = 0  # an empty map counts as uniform
    first, second = torch.rand(3, 5, 6, generator=generator) > 0.6, torch.rand(3, 5, 6, generator=generator) > 0.5
    moved = mass_moved(a, b)
    masses = region_masses(a, first, second)
    for i in range(3):
        p = a[i].double() / a[i].double().sum()
        q = b[i].double() / b[i].double().sum() if b[i].sum() > 0 else torch.full_like(p, 1 / 30)
        assert float(moved[i]) == pytest.approx(0.5 * float((p - q).abs().sum()))
        expected = [
            float(p[first[i] & second[i]].sum()),
            float(p[first[i] & ~second[i]].sum()),
            float(p[~first[i] & second[i]].sum()),
            float(p[~first[i] & ~second[i]].sum()),
        ]
        assert masses[i].tolist() == pytest.approx(expected)
    assert float(mass_moved(a, a).max()) == pytest.approx(0.0, abs=1e-12)


def test_hesitation_pairs_are_the_top5_classes_above_five_percent() -> None:
    probabilities = torch.zeros(2, 10)
    probabilities[0, [3, 7, 1, 2]] = torch.tensor([0.6, 0.3, 0.06, 0.04])
    probabilities[1, [5, 6]] = torch.tensor([0.97, 0.03])
    assert _pairs(probabilities) == [(0, 3, 7), (0, 3, 1)]
