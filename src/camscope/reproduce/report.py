"""The report's building blocks: verdicts, Markdown tables, claims, sections, the run context and the report.

Example:
    >>> from camscope.reproduce.report import HOLDS, Claim, markdown_table
    >>> Claim("a claim", HOLDS, "measured").verdict
    'holds'
    >>> print(markdown_table(["a", "b"], [(1, 0.5)], digits=1))
    | a | b |
    |---|---|
    | 1 | 0.5 |
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from camscope.models.zoo import SmallCNN

__all__ = [
    "FAILS",
    "HOLDS",
    "MIN_RELATIVE_CHANGE",
    "PARTLY",
    "VERDICTS",
    "Claim",
    "Context",
    "Report",
    "Section",
    "Verdict",
    "judge_difference",
    "markdown_table",
    "write_line",
]

#: How a claim fared.
Verdict = str
HOLDS: Verdict = "holds"
PARTLY: Verdict = "partly holds"
FAILS: Verdict = "does not hold"
VERDICTS = (HOLDS, PARTLY, FAILS)


def write_line(line: str, stream: Any = None) -> None:
    """Write ``line`` and a newline to ``stream`` (default: stdout) and flush: the report's progress log."""
    stream = sys.stdout if stream is None else stream
    stream.write(f"{line}\n")
    stream.flush()


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    """A GitHub Markdown table; floats are printed with ``digits`` decimals, NaN as an en dash."""

    def cell(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            value = value.item()
        if isinstance(value, float):
            return "–" if value != value else f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    if any(len(row) != len(headers) for row in rows):
        raise ValueError("every row needs one cell per header")
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Claim:
    """One claim of a paper, what was measured here, and the verdict.

    ``previous`` is the verdict the previous version of the report gave (``None`` for a
    new claim) and ``change`` says why a different verdict differs (the protocol or
    rule that changed); the report lists every claim whose verdict changed. ``level``
    is the difficulty level of the synthetic species the claim was measured at
    (:data:`camscope.data.synthetic.LEVELS`), None for a claim measured elsewhere.
    """

    claim: str
    verdict: Verdict
    evidence: str
    previous: Verdict | None = None
    change: str = ""
    level: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.previous is not None and self.previous not in VERDICTS:
            raise ValueError(f"previous verdict must be one of {VERDICTS} or None, got {self.previous!r}")

    @property
    def changed(self) -> bool:
        """Whether the verdict differs from the previous version's (a new claim counts as changed)."""
        return self.previous != self.verdict


@dataclass
class Section:
    """A report section: Markdown ``body`` (tables, figure links relative to the report), and its claims.

    ``figures`` are the paths written (relative to the report folder); ``numbers``
    holds the key measurements as plain floats, so tests can check the pipeline
    without parsing Markdown.
    """

    title: str
    body: str
    claims: list[Claim] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", self.body.strip(), ""]
        if self.claims:
            levelled = any(c.level is not None for c in self.claims)
            table = (
                markdown_table(
                    ["paper's claim", "level", "verdict", "here"],
                    [(c.claim, c.level or "–", f"**{c.verdict}**", c.evidence) for c in self.claims],
                )
                if levelled
                else markdown_table(
                    ["paper's claim", "verdict", "here"],
                    [(c.claim, f"**{c.verdict}**", c.evidence) for c in self.claims],
                )
            )
            lines += ["**Verdicts**", "", table, ""]
        return "\n".join(lines)


@dataclass
class Context:
    """What a section needs: the mode, sizes, seeds, output folders and the shared models and data.

    Sections take their sample counts from :meth:`count` so that ``quick`` runs are
    small, and their models and data from :meth:`model` and :meth:`data`, which are
    loaded once per report.
    """

    out: Path
    quick: bool = False
    seed: int = 0
    log: Callable[[str], None] = write_line

    @property
    def figures(self) -> Path:
        """Folder for figures (``out/figures``); link them as ``figures/NAME.png``."""
        path = self.out / "figures"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def count(self, full: int, quick: int) -> int:
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full

    @property
    def levels(self) -> dict[str, str]:
        """The difficulty levels of the synthetic species and their models' names (``{"easy": "species", ...}``)."""
        from camscope.models import zoo

        return dict(zoo.SPECIES_LEVELS)

    def model(self, name: str) -> SmallCNN:
        """A shipped small classifier (one of :data:`camscope.models.zoo.SMALL_MODELS`), in eval mode."""
        return self._models[name]

    def data(self, name: str, split: str = "test", limit: int | None = None) -> Any:
        """:func:`camscope.data.small_models.dataset` of ``name``: the first ``limit`` images (None: all).

        A split's images are rendered once for the largest prefix asked so far; a smaller
        ``limit`` is a slice of it (a split's prefix is the same images whatever its length).
        """
        from camscope.data import small_models

        key = (name, split)
        cached = self._data.get(key)
        covered = cached is not None and (cached[1] is None or (limit is not None and limit <= cached[1]))
        if cached is None or not covered:
            cached = self._data[key] = (small_models.dataset(name, split=split, limit=limit), limit)
        data = cached[0]
        return data if limit is None or limit >= len(data) else _prefix(data, limit)

    def predictions(self, name: str, split: str = "test", limit: int | None = None) -> Tensor:
        """``[N, C]`` logits of model ``name`` on :meth:`data` (``no_grad``), computed once per image prefix."""
        data = self.data(name, split, limit)
        key = (name, split)
        cached = self._logits.get(key)
        if cached is None or cached.shape[0] < len(data):
            model = self.model(name)
            with torch.no_grad():
                cached = torch.cat([model(data.images[i : i + 512]) for i in range(0, len(data), 512)])
            self._logits[key] = cached
        return cached[: len(data)]

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the report's seed (plus ``offset`` to keep streams apart)."""
        return torch.Generator().manual_seed(self.seed + offset)

    @cached_property
    def _models(self) -> dict[str, SmallCNN]:
        from camscope.models import zoo

        return {name: zoo.load_small_model(name) for name in zoo.SMALL_MODELS}

    @cached_property
    def _data(self) -> dict[tuple[str, str], tuple[Any, int | None]]:
        return {}

    @cached_property
    def _logits(self) -> dict[tuple[str, str], Tensor]:
        return {}


def _prefix(data: Any, count: int) -> Any:
    """The first ``count`` images of an :class:`~camscope.data.small_models.EvaluationData`."""
    from dataclasses import replace

    return replace(
        data,
        images=data.images[:count],
        labels=data.labels[:count],
        part_masks=None if data.part_masks is None else data.part_masks[:count],
        boxes=None if data.boxes is None else data.boxes[:count],
        batch=None if data.batch is None else data.batch[:count],
    )


@dataclass
class Report:
    """What :func:`reproduce` wrote: the report's ``path`` and its ``sections``."""

    path: Path
    sections: list[Section]

    def section(self, name: str) -> Section:
        """The section produced by module ``name`` (one of :data:`SECTIONS`)."""
        return self.sections[self.names.index(name)]

    names: list[str] = field(default_factory=list)


#: The effect-size criterion of every "better / worse" verdict: a difference counts only when its 95% interval
#: excludes 0 *and* its mean is at least this share of the baseline's value (5% relative).
MIN_RELATIVE_CHANGE = 0.05


def judge_difference(base: float, low: float, mean: float, high: float, minimum: float = MIN_RELATIVE_CHANGE) -> str:
    """``"better"``, ``"worse"`` or ``"tie"`` for a paired difference (new - base) with 95% interval ``[low, high]``.

    Better: ``low > 0`` and ``mean >= minimum * |base|``; worse: ``high < 0`` and
    ``-mean >= minimum * |base|``; anything else (not significant, or significant but
    smaller than the effect-size criterion) is a tie.

    Example:
        >>> judge_difference(0.10, 0.004, 0.005, 0.006)  # significant, but 5% of 0.10 is 0.005: just enough
        'better'
        >>> judge_difference(0.748, 0.023, 0.033, 0.044)  # significant, 4.4% of the base: too small
        'tie'
    """
    floor = minimum * abs(base) - 1e-12
    if low > 0 and mean >= floor:
        return "better"
    if high < 0 and -mean >= floor:
        return "worse"
    return "tie"
