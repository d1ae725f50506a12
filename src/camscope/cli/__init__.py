"""The ``camscope`` command line.

:func:`main` owns Ctrl-C from its first instruction: the command line imports typer and
its commands inside it, and each command imports torch, matplotlib and the rest when it
runs. ``camscope --version`` and ``camscope -h`` never import torch.

Ctrl-C exits at once with one line and status 130, at any moment: a ``KeyboardInterrupt``
raised inside a C extension while it imports or computes (torch, numpy) can abort the
process, turn into an ``ImportError`` or be swallowed, so the handler does not raise one.
Nothing is left half-written: every file is written to a temporary and renamed
(:func:`camscope.io.atomic_write_bytes`), and the temporaries being written are removed
before the exit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from camscope.cli.interrupts import guarded
from camscope.errors import needs_extra

if TYPE_CHECKING:
    from typer import Typer

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: the process's arguments); returns the exit status.

    A user mistake prints one line on stderr and returns 2; Ctrl-C, at any moment from
    here on (start-up included), prints ``camscope: interrupted`` and exits with 130.
    """
    return guarded(argv, _command_line)


def _command_line() -> Callable[[list[str] | None], int]:
    """The command line's ``run``: typer and the commands are imported here, under :func:`guarded`."""
    with needs_extra("cli", "the command line"):
        import rich  # noqa: F401  (tables and progress bars)
        import typer  # noqa: F401
    from camscope.cli.app import run

    return run


def __getattr__(name: str) -> Any:
    """``app``: the typer app (imports typer and the commands on first access)."""
    if name == "app":
        from camscope.cli.app import app

        return app
    raise AttributeError(f"module 'camscope.cli' has no attribute {name!r}")


if TYPE_CHECKING:
    app: Typer
