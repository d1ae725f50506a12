"""Merging a run of some sections into an existing report: the other sections are kept as they are.

``camscope reproduce --section X`` regenerates section X only. The existing
``REPRODUCTION.md`` is split at its ``## `` headings; the blocks of the sections
that ran are replaced (or added, in report order), the others kept, and the
header is rebuilt: the tally counts the verdict rows of every section's verdict
table, and the table of changed verdicts keeps the rows of the kept sections.

Example:
    >>> text = "# R\\n\\nintro\\n\\n## A\\n\\na\\n\\n## B\\n\\nb\\n"
    >>> header, blocks = split_report(text)
    >>> list(blocks), blocks["B"]
    (['A', 'B'], '## B\\n\\nb\\n')
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from camscope.reproduce.report import VERDICTS

__all__ = ["CHANGES_INTRO", "changed_rows", "count_by_level", "count_verdicts", "merge_blocks", "split_report"]

#: The line that opens the table of new and changed verdicts in the header.
CHANGES_INTRO = "Verdicts new or changed since the previous version of this report"
#: How reports made before camscope 0.2.0 opened that table.
_OLD_INTRO = "Verdicts that changed since the previous version of this report"
_HEADING = re.compile(r"^## (.+)$", re.MULTILINE)
_LEVEL_ROW = re.compile(
    r"^\| .* \| (\w+) \| \*\*(" + "|".join(map(re.escape, VERDICTS)) + r")\*\* \| .*\|$", re.MULTILINE
)
_VERDICT_ROW = re.compile(r"^\| .* \| \*\*(" + "|".join(map(re.escape, VERDICTS)) + r")\*\* \| .*\|$", re.MULTILINE)


def split_report(text: str) -> tuple[str, dict[str, str]]:
    """``(header, {section title: its block from the heading to the next one})``."""
    found = list(_HEADING.finditer(text))
    if not found:
        return text, {}
    blocks = {}
    for index, match in enumerate(found):
        end = found[index + 1].start() if index + 1 < len(found) else len(text)
        blocks[match.group(1).strip()] = text[match.start() : end]
    return text[: found[0].start()], blocks


def count_verdicts(blocks: Sequence[str]) -> dict[str, int]:
    """How many verdict-table rows of each verdict the section blocks hold."""
    counts = dict.fromkeys(VERDICTS, 0)
    for block in blocks:
        for match in _VERDICT_ROW.finditer(block):
            counts[match.group(1)] += 1
    return counts


def count_by_level(blocks: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{level: {verdict: count}}`` over the verdict rows that name a level (``| claim | level | **verdict** |``)."""
    found: dict[str, dict[str, int]] = {}
    for block in blocks:
        for match in _LEVEL_ROW.finditer(block):
            found.setdefault(match.group(1), dict.fromkeys(VERDICTS, 0))[match.group(2)] += 1
    return found


def changed_rows(header: str) -> list[str]:
    """The data rows (Markdown lines) of the header's table of changed verdicts, with a level cell.

    Reports made before the difficulty levels have no level column: their rows get "–" as their level, so that
    kept rows fit the table (claim, level, before, now, what changed).

    Example:
        >>> changed_rows(CHANGES_INTRO + ":\\n\\n| paper's claim | before | now | why |\\n|---|---|---|---|\\n| a | x | y | z |\\n")
        ['| a | – | x | y | z |']
    """
    lines = header.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith((CHANGES_INTRO, _OLD_INTRO))), None)
    if start is None:
        return []
    rows: list[str] = []
    for line in lines[start + 1 :]:
        if not line.strip() and rows:
            break
        if line.startswith("| ") and not line.startswith("| paper's claim") and not line.startswith("|---"):
            cells = line.strip()[2:-2].split(" | ")  # an escaped pipe in a cell is "\\|"
            if len(cells) == 4:
                cells.insert(1, "–")
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def merge_blocks(old: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    """The old blocks with the new ones replacing them in place.

    A section the old report lacks follows the section that ran just before it in this run (report order), or
    goes last if it ran first.

    Example:
        >>> list(merge_blocks({"A": "a", "C": "c"}, {"A": "a2", "B": "b", "D": "d"}))
        ['A', 'B', 'D', 'C']
    """
    merged = {title: new.get(title, block) for title, block in old.items()}
    after: str | None = None
    for title, block in new.items():
        if title not in merged:
            titles = list(merged)
            at = titles.index(after) + 1 if after is not None else len(titles)
            merged = {t: merged.get(t, block) for t in [*titles[:at], title, *titles[at:]]}
        after = title
    return merged
