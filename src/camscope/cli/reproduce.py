"""``camscope reproduce``: regenerate the reproduction report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["reproduce_command"]


def reproduce_command(
    quick: Annotated[
        bool, typer.Option("--quick", help="Few images per section: a check of the pipeline (minutes), noisy numbers.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Report folder: REPRODUCTION.md and figures/.")] = Path("docs"),
    section: Annotated[
        list[str] | None,
        typer.Option("--section", help="Only this section (repeatable): finer, diffcam, ifa, localisation."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
) -> None:
    """Re-measure the papers' claims on data with known answers and write the report (docs/REPRODUCTION.md)."""
    from camscope.reproduce import reproduce

    report = reproduce(out, quick=quick, sections=section, seed=seed)
    typer.echo(f"wrote {report.path}")
