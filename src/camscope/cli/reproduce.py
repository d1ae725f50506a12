"""``camscope reproduce``: regenerate the reproduction report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from camscope.cli.outputs import OverwriteOption, claim_outputs
from camscope.errors import CamscopeError

__all__ = ["reproduce_command"]


def reproduce_command(
    quick: Annotated[
        bool, typer.Option("--quick", help="Few images per section: a check of the pipeline (minutes), noisy numbers.")
    ] = False,
    out: Annotated[
        Path, typer.Option(help="Report folder: REPRODUCTION.md and figures/ (the repository's report: --out docs).")
    ] = Path("camscope-out/reproduce"),
    section: Annotated[
        list[str] | None,
        typer.Option(
            "--section",
            help="Only this section (repeatable): finer, prompts, photos, diffcam, ifa, planted, localisation; merged into "
            "an existing report.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    overwrite: OverwriteOption = False,
) -> None:
    """Re-measure the papers' claims on data with known answers and write the report (OUT/REPRODUCTION.md).

    An existing report (REPRODUCTION.md, or figures/SECTION_*.png of a chosen section) is replaced only with --overwrite;
    with --section, only that section's part of an existing report is replaced and the other sections are kept.
    """
    from camscope.passes.distributed import torchrun_world_size
    from camscope.reproduce import SECTIONS, reproduce

    if torchrun_world_size() > 1:  # every process would run and write the whole report
        raise CamscopeError(
            "camscope reproduce runs in one process (its data sets are small and generated in place): "
            "run it without torchrun"
        )
    chosen = section or list(SECTIONS)
    existing = [path for name in chosen for path in sorted((out / "figures").glob(f"{name}_*"))]
    claim_outputs([out / "REPRODUCTION.md", *existing], overwrite)

    report = reproduce(out, quick=quick, sections=section, seed=seed)
    typer.echo(f"wrote {report.path}")
