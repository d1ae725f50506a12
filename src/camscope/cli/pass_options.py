"""Options of the CLI commands that make a pass over a data folder (``bank build``, ``analyze``, ``evaluate``).

Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE`` > 1) these commands split
their pass over the N processes (``distributed=True``); only rank 0 prints and
writes. ``--device cuda`` means ``cuda:LOCAL_RANK`` there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from camscope.errors import CamscopeError

__all__ = [
    "CheckpointEveryOption",
    "CheckpointOption",
    "PrecisionOption",
    "ResumeOption",
    "WorkersOption",
    "cli_device",
    "is_main_process",
    "pass_options",
]

WorkersOption = Annotated[
    int, typer.Option("--workers", help="Worker processes that load the images (0: load them in this process).")
]
CheckpointOption = Annotated[
    Path | None,
    typer.Option("--checkpoint", help="Save the pass's state to this file (one per process under torchrun)."),
]
CheckpointEveryOption = Annotated[
    int | None, typer.Option("--checkpoint-every", help="Save the checkpoint every N batches (default: at the end).")
]
ResumeOption = Annotated[
    bool, typer.Option("--resume", help="Continue from --checkpoint when it exists (same model, data and options).")
]

PrecisionOption = Annotated[
    str,
    typer.Option(
        "--precision",
        help="fp32, bf16 or fp16: the model's forward under autocast (statistics stay in float64).",
    ),
]


def is_main_process() -> bool:
    """Whether this process prints and writes: rank 0 under torchrun, else always."""
    from camscope.passes.distributed import is_main_process as main_process

    return main_process()


def pass_options(
    workers: int, checkpoint: Path | None, checkpoint_every: int | None, resume: bool, precision: str = "fp32"
) -> dict[str, Any]:
    """The keyword arguments of a dataset pass: the CLI options, and ``distributed=True`` under torchrun.

    Raises:
        CamscopeError: for values the pass cannot take, in the flags' words, before any model is loaded.
    """
    from camscope.passes.distributed import torchrun_world_size
    from camscope.passes.precision import PRECISIONS

    if precision not in PRECISIONS:
        raise CamscopeError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if workers < 0:
        raise CamscopeError(f"--workers must be 0 (load in this process) or more, got {workers}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise CamscopeError(f"--checkpoint-every must be 1 or more batches, got {checkpoint_every}")
    given = [flag for flag, value in (("--resume", resume), ("--checkpoint-every", checkpoint_every)) if value]
    if given and checkpoint is None:
        verb = "needs" if len(given) == 1 else "need"
        raise CamscopeError(f"{' and '.join(given)} {verb} a checkpoint file: add --checkpoint PATH")
    return {
        "precision": precision,
        "distributed": True if torchrun_world_size() > 1 else None,
        "workers": workers,
        "checkpoint": checkpoint,
        "checkpoint_every": checkpoint_every,
        "resume": resume,
    }


def cli_device(device: str | None) -> str | None:
    """``--device``, with ``cuda`` meaning ``cuda:LOCAL_RANK`` under torchrun (None stays None)."""
    from camscope.passes.distributed import resolve_device, torchrun_world_size

    resolved = resolve_device(device, distributed=torchrun_world_size() > 1)
    return None if resolved is None else str(resolved)
