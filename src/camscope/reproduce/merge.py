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

#: The line that opens the table of changed verdicts in the header.
CHANGES_INTRO = "Verdicts that changed since the previous version of this report"
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
    """The data rows (Markdown lines) of the header's table of changed verdicts."""
    lines = header.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(CHANGES_INTRO)), None)
    if start is None:
        return []
    rows: list[str] = []
    for line in lines[start + 1 :]:
        if not line.strip() and rows:
            break
        if line.startswith("| ") and not line.startswith("| paper's claim"):
            rows.append(line)
    return rows


def merge_blocks(old: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    """The old blocks with the new ones replacing them in place; sections the old report lacks go last."""
    merged = {title: new.get(title, block) for title, block in old.items()}
    for title, block in new.items():
        merged.setdefault(title, block)
    return merged
