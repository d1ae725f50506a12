"""``camscope reproduce``: the papers' claims re-measured where the right answer is known.

The report runs on camscope's own ground truth (:mod:`camscope.data.synthetic`,
whose images come with a mask per part and the parts that differ between any two
classes, and scikit-learn's digits, :mod:`camscope.data.digits`) with the two
small models shipped in :mod:`camscope.models.zoo`. Each section puts its tables beside
the paper's claim and gives a verdict; :func:`reproduce` writes
``REPRODUCTION.md`` and its figures (``figures/``) from scratch.

Sections (one module each, run in this order):

* :mod:`camscope.reproduce.finer`: Finer-CAM against its base methods (Table 1,
  Figure 6b);
* :mod:`camscope.reproduce.diffcam`: DiffCAM counterfactuals against the
  differing-part masks (Table 2's analogue) and the digits figures (Figures 3, 4);
* :mod:`camscope.reproduce.ifa`: consistency with and without the common scale
  (Table I's analogue) and accuracy with principal features (Table II's analogue);
* :mod:`camscope.reproduce.localisation`: localisation and the sanity check for
  every method.

``quick=True`` runs every section on fewer images (a test of the pipeline, a few
minutes on 2 CPUs); the numbers of the committed report come from the full run.
Everything is seeded, so a run on the same software gives the same report.

Example:
    >>> from camscope.reproduce import reproduce
    >>> path = reproduce("docs", quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import importlib
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from camscope.errors import CamscopeError

__all__ = [
    "FAILS",
    "HOLDS",
    "PARTLY",
    "SECTIONS",
    "Claim",
    "Context",
    "Report",
    "Section",
    "Verdict",
    "markdown_table",
    "reproduce",
]

#: Section modules, in report order; each defines ``run(context: Context) -> Section``.
SECTIONS: tuple[str, ...] = ("finer", "diffcam", "ifa", "localisation")

#: How a claim fared.
Verdict = str
HOLDS: Verdict = "holds"
PARTLY: Verdict = "partly holds"
FAILS: Verdict = "does not hold"
_VERDICTS = (HOLDS, PARTLY, FAILS)


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
    """One claim of a paper, what was measured here, and the verdict."""

    claim: str
    verdict: Verdict
    evidence: str

    def __post_init__(self) -> None:
        if self.verdict not in _VERDICTS:
            raise ValueError(f"verdict must be one of {_VERDICTS}, got {self.verdict!r}")


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
            lines += [
                "**Verdicts**",
                "",
                markdown_table(
                    ["paper's claim", "verdict", "here"],
                    [(c.claim, f"**{c.verdict}**", c.evidence) for c in self.claims],
                ),
                "",
            ]
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
    log: Callable[[str], None] = print

    @property
    def figures(self) -> Path:
        """Folder for figures (``out/figures``); link them as ``figures/NAME.png``."""
        path = self.out / "figures"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def count(self, full: int, quick: int) -> int:
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full

    def model(self, name: str) -> torch.nn.Module:
        """A shipped small model (``"digits"`` or ``"species"``), in eval mode."""
        return self._models[name]

    def data(self, name: str, split: str = "test", limit: int | None = None) -> Any:
        """:func:`camscope.models.zoo.dataset` of ``name``, cached per (name, split, limit)."""
        key = (name, split, limit)
        if key not in self._data:
            from camscope.models import zoo

            self._data[key] = zoo.dataset(name, split=split, limit=limit)
        return self._data[key]

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the report's seed (plus ``offset`` to keep streams apart)."""
        return torch.Generator().manual_seed(self.seed + offset)

    @cached_property
    def _models(self) -> dict[str, torch.nn.Module]:
        from camscope.models import zoo

        return {name: zoo.load_small_model(name) for name in zoo.SMALL_MODELS}

    @cached_property
    def _data(self) -> dict[tuple[str, str, int | None], Any]:
        return {}


@dataclass
class Report:
    """What :func:`reproduce` wrote: the report's ``path`` and its ``sections``."""

    path: Path
    sections: list[Section]

    def section(self, name: str) -> Section:
        """The section produced by module ``name`` (one of :data:`SECTIONS`)."""
        return self.sections[self.names.index(name)]

    names: list[str] = field(default_factory=list)


def _header(quick: bool, sections: Sequence[Section], seconds: float) -> str:
    from camscope import __version__
    from camscope.models import zoo

    mode = (
        "`camscope reproduce --quick` (a pipeline check on few images: numbers are noisy)"
        if quick
        else "`camscope reproduce`"
    )
    models = ", ".join(
        f"`{name}` ({100 * zoo.model_info(name)['test_accuracy']:.1f}% test accuracy)" for name in zoo.SMALL_MODELS
    )
    verdicts = [claim for section in sections for claim in section.claims]
    tally = ", ".join(f"{sum(c.verdict == v for c in verdicts)} {v}" for v in _VERDICTS)
    return "\n".join(
        [
            "# Reproduction report",
            "",
            f"Generated by {mode} (camscope {__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
            f"{datetime.date.today().isoformat()}, {seconds / 60:.1f} min on {torch.get_num_threads()} CPU threads). "
            "Do not edit by hand: every number and figure below is regenerated by the command.",
            "",
            "No fine-grained data set, ImageNet subset or medical data can be downloaded where camscope is built, so the "
            "papers' claims are re-measured where the right answer is known: on `camscope.data.synthetic`, fine-grained "
            '"species" whose images come with a mask per part and, for any two classes, the mask of the parts that differ '
            "(many pairs differ in exactly one part), and on scikit-learn's handwritten digits. The models are the two small "
            f"CNNs shipped in `camscope.models.zoo`: {models}. Small models on synthetic data are not the papers' settings: a claim "
            "that holds here is evidence, not proof, and one that fails here is reported as it is.",
            "",
            f"Verdicts: {tally}.",
            "",
            "Contents: " + ", ".join(f"[{s.title}](#{_anchor(s.title)})" for s in sections) + ".",
            "",
        ]
    )


def _anchor(title: str) -> str:
    keep = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -")
    return keep.replace(" ", "-")


def reproduce(
    out: str | os.PathLike[str] = "docs",
    quick: bool = False,
    sections: Sequence[str] | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Report:
    """Run the report's sections and write ``out/REPRODUCTION.md`` and ``out/figures/``.

    Args:
        out: report folder.
        quick: few images per section (a check of the pipeline, minutes on 2 CPUs).
        sections: a subset of :data:`SECTIONS` (default: all).
        seed: seed of every random choice.
        log: where progress lines go (default: stderr).

    Returns:
        The :class:`Report`: its path and sections.
    """
    names = list(SECTIONS if sections is None else sections)
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise CamscopeError(f"unknown report section(s) {unknown or names}: choose from {', '.join(SECTIONS)}")
    if log is None:
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    context = Context(out=Path(out), quick=quick, seed=seed, log=log)
    context.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done: list[Section] = []
    for name in names:
        log(f"reproduce: {name}...")
        begin = time.perf_counter()
        torch.manual_seed(seed)
        section: Section = importlib.import_module(f"camscope.reproduce.{name}").run(context)
        section.seconds = time.perf_counter() - begin
        log(f"reproduce: {name} done in {section.seconds:.0f} s")
        done.append(section)
    text = _header(quick, done, time.perf_counter() - start) + "\n" + "\n".join(s.markdown() for s in done)
    from camscope.io import atomic_write_bytes

    path = atomic_write_bytes(context.out / "REPRODUCTION.md", text.encode())
    return Report(path=path, sections=done, names=names)
