"""The ``camscope`` command line.

:func:`main` catches Ctrl-C from its first instruction: the command line imports typer
and its commands inside it, and each command imports torch, matplotlib and the rest
when it runs, so an interrupt at any moment of start-up prints one line and exits
with status 130. ``camscope --version`` and ``camscope -h`` never import torch.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from camscope.errors import MissingExtraError, needs_extra

if TYPE_CHECKING:
    from typer import Typer

__all__ = ["app", "main"]

#: The line a Ctrl-C prints (status 130).
INTERRUPTED = "camscope: interrupted"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: the process's arguments); returns the exit status.

    A user mistake prints one line on stderr and returns 2; Ctrl-C, at any moment
    from here on (start-up included), prints ``camscope: interrupted`` and returns 130.
    """
    try:
        with needs_extra("cli", "the command line"):
            import rich  # noqa: F401  (tables and progress bars)
            import typer  # noqa: F401
        from camscope.cli.app import run

        return run(argv)
    except MissingExtraError as error:
        return _say(f"camscope: error: {error}", 2)
    except KeyboardInterrupt:
        return _say(INTERRUPTED, 130)


def _say(line: str, status: int) -> int:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    return status


def __getattr__(name: str) -> Any:
    """``app``: the typer app (imports typer and the commands on first access)."""
    if name == "app":
        from camscope.cli.app import app

        return app
    raise AttributeError(f"module 'camscope.cli' has no attribute {name!r}")


if TYPE_CHECKING:
    app: Typer
