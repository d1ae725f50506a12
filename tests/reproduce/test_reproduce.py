"""``camscope reproduce --quick``: the whole report pipeline, run once, checked for what it must contain."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from camscope.cli.app import main
from camscope.errors import CamscopeError
from camscope.reproduce import FAILS, HOLDS, PARTLY, SECTIONS, Claim, Report, markdown_table, reproduce


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return reproduce(tmp_path_factory.mktemp("report"), quick=True, log=lambda _: None)


@pytest.mark.slow
def test_report_has_every_section_with_claims_figures_and_finite_numbers(quick_report: Report) -> None:
    text = quick_report.path.read_text()
    assert text.startswith("# Reproduction report")
    assert f"`camscope reproduce --quick --out {quick_report.path.parent.as_posix()}`" in text  # as it was made
    assert quick_report.names == list(SECTIONS)
    assert not re.findall(r"\{[a-z_]+(?:\[[^\]]*\])?(?::[^}]*)?\}", text), "a placeholder left unformatted"
    for section in quick_report.sections:
        assert f"## {section.title}" in text
        assert section.claims or section.title.startswith("Real photos"), f"{section.title} states no claim"
        assert section.numbers, f"{section.title} reports no numbers"
        assert all(math.isfinite(value) for value in section.numbers.values()), section.numbers
        for claim in section.claims:
            assert claim.verdict in (HOLDS, PARTLY, FAILS)
            assert f"**{claim.verdict}**" in text


@pytest.mark.slow
def test_every_linked_figure_exists(quick_report: Report) -> None:
    text = quick_report.path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links, "the report links no figure"
    for link in links:
        assert (quick_report.path.parent / link).is_file(), link
    for section in quick_report.sections:
        for figure in section.figures:
            assert figure in links, f"{figure} is written but not shown"


@pytest.mark.slow
def test_tally_counts_the_verdicts(quick_report: Report) -> None:
    claims = [claim for section in quick_report.sections for claim in section.claims]
    line = next(line for line in quick_report.path.read_text().splitlines() if line.startswith("Verdicts: "))
    assert (
        line
        == "Verdicts: " + ", ".join(f"{sum(c.verdict == v for c in claims)} {v}" for v in (HOLDS, PARTLY, FAILS)) + "."
    )


@pytest.mark.slow
def test_every_finer_and_diffcam_claim_on_the_species_is_judged_at_every_level(quick_report: Report) -> None:
    for name in ("finer", "diffcam", "localisation"):
        claims = quick_report.section(name).claims
        levelled = {claim.claim for claim in claims if claim.level is not None}
        assert levelled, name
        for text in levelled:
            assert sorted(c.level or "" for c in claims if c.claim == text) == ["easy", "hard", "medium"], text
    assert len({c.claim for c in quick_report.section("finer").claims}) == 8
    assert [c.level for c in quick_report.section("prompts").claims] == ["easy"]
    header = quick_report.path.read_text().split("\n## ")[0]
    for level, model in (("easy", "species"), ("medium", "species-medium"), ("hard", "species-hard")):
        assert f"| {level} | `{model}` |" in header


def test_markdown_table_and_claim_checks() -> None:
    assert markdown_table(["a", "b|c"], [(1, 0.25), ("x|y", float("nan"))], digits=2).splitlines() == [
        "| a | b|c |",
        "|---|---|",
        "| 1 | 0.25 |",
        "| x\\|y | – |",
    ]
    with pytest.raises(ValueError, match="one cell per header"):
        markdown_table(["a"], [(1, 2)])
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("a claim", "maybe", "")


def test_unknown_section_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CamscopeError, match="choose from finer, prompts, photos, diffcam"):
        reproduce(tmp_path, sections=["gradcam"])
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--section", "nope"]) == 2
    assert "unknown report section" in capsys.readouterr().err
    assert not (tmp_path / "REPRODUCTION.md").exists()


def test_effect_size_rule_and_changed_verdicts() -> None:
    from camscope.reproduce.report import judge_difference

    assert judge_difference(0.748, 0.023, 0.033, 0.044) == "tie"  # significant but 4.4% of the base
    assert judge_difference(0.5, 0.03, 0.05, 0.07) == "better"
    assert judge_difference(0.5, -0.07, -0.05, -0.03) == "worse"
    assert judge_difference(0.5, -0.01, 0.05, 0.11) == "tie"  # not significant
    assert Claim("c", HOLDS, "e", previous=FAILS).changed and not Claim("c", HOLDS, "e", previous=HOLDS).changed
    assert Claim("c", HOLDS, "e").changed  # a new claim
    with pytest.raises(ValueError, match="previous verdict"):
        Claim("c", HOLDS, "e", previous="maybe")


def test_a_section_run_merges_into_the_existing_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--section X`` replaces section X of an existing report and keeps the others (and their verdicts)."""
    import types

    import camscope.reproduce as package
    from camscope.reproduce import Section

    def fake(title: str, verdict: str, previous: str | None) -> types.SimpleNamespace:
        claim = Claim(f"claim of {title}", verdict, f"evidence of {title}", previous=previous, change=f"why {title}")
        return types.SimpleNamespace(run=lambda context: Section(title, f"body of {title}", [claim]))

    modules: dict[str, object] = {f"camscope.reproduce.{name}": fake(name.upper(), HOLDS, FAILS) for name in SECTIONS}
    real = package.importlib.import_module
    monkeypatch.setattr(package.importlib, "import_module", lambda name: modules.get(name) or real(name))
    reproduce(tmp_path, log=lambda _: None)
    first = (tmp_path / "REPRODUCTION.md").read_text()
    assert f"Verdicts: {len(SECTIONS)} holds, 0 partly holds, 0 does not hold." in first
    modules["camscope.reproduce.ifa"] = fake("IFA", PARTLY, PARTLY)
    report = reproduce(tmp_path, sections=["ifa"], log=lambda _: None)
    text = report.path.read_text()
    assert f"Verdicts: {len(SECTIONS) - 1} holds, 1 partly holds, 0 does not hold." in text
    assert "Only ifa ran this time" in text
    for name in SECTIONS:
        assert text.count(f"## {name.upper()}\n") == 1 and f"body of {name.upper()}" in text
    assert text.index("## FINER") < text.index("## IFA") < text.index("## LOCALISATION")
    assert "why FINER" in text and "why IFA" not in text  # kept sections keep their changed-verdict rows


def test_a_merge_keeps_report_order_and_fits_old_rows_to_the_level_column(tmp_path: Path) -> None:
    """New sections follow the section run before them; rows of a report without levels get a level cell."""
    from camscope.reproduce.merge import CHANGES_INTRO, changed_rows, merge_blocks

    old = {"FINER": "f", "DIFFCAM": "d", "IFA": "i"}
    merged = merge_blocks(old, {"FINER": "f2", "PROMPTS": "p", "PHOTOS": "h"})
    assert list(merged) == ["FINER", "PROMPTS", "PHOTOS", "DIFFCAM", "IFA"] and merged["FINER"] == "f2"
    assert list(merge_blocks(old, {"NEW": "n"})) == ["FINER", "DIFFCAM", "IFA", "NEW"]  # ran first: last
    header = "\n".join(
        [
            f"{CHANGES_INTRO}, and why:",
            "",
            "| paper's claim | before | now | what changed |",
            "|---|---|---|---|",
            "| a \\| b | holds | **partly holds** | rule |",
            "| c | easy | new claim | **holds** | – |",
            "",
            "Contents: ...",
        ]
    )
    assert changed_rows(header) == [
        "| a \\| b | – | holds | **partly holds** | rule |",
        "| c | easy | new claim | **holds** | – |",
    ]
    old_intro = header.replace(CHANGES_INTRO, "Verdicts that changed since the previous version of this report")
    assert changed_rows(old_intro) == changed_rows(header)  # reports made before 0.2.0


def test_the_header_says_when_no_verdict_changed() -> None:
    from camscope.reproduce import _changes

    assert "Every verdict of the previous version of this report is unchanged." in _changes([], new_levels=26)
    lines = _changes(["| c | easy | holds | **partly holds** | rule |"])
    assert "every other verdict of the previous version is unchanged" in lines[0]
