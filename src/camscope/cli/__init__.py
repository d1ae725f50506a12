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

import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from camscope.errors import MissingExtraError, needs_extra

if TYPE_CHECKING:
    from typer import Typer

__all__ = ["app", "main"]

#: The line a Ctrl-C prints (status 130).
INTERRUPTED = "camscope: interrupted"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: the process's arguments); returns the exit status.

    A user mistake prints one line on stderr and returns 2; Ctrl-C, at any moment from
    here on (start-up included), prints ``camscope: interrupted`` and exits with 130.
    """
    previous = _own_ctrl_c()
    try:
        with needs_extra("cli", "the command line"):
            import rich  # noqa: F401  (tables and progress bars)
            import typer  # noqa: F401
        from camscope.cli.app import run

        return run(argv)
    except MissingExtraError as error:
        return _say(f"camscope: error: {error}", 2)
    except KeyboardInterrupt:  # raised by the code itself, or where the handler could not be installed
        return _say(INTERRUPTED, 130)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _own_ctrl_c() -> Any:
    """Install :func:`_exit_on_ctrl_c`; returns the handler it replaced (None when it left it alone).

    Only Python's default handler is replaced, in the main thread: a shell that runs the
    command in the background ignores Ctrl-C for it, and that stays so.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None
    return signal.signal(signal.SIGINT, _exit_on_ctrl_c)


def _exit_on_ctrl_c(signum: int, frame: FrameType | None) -> None:
    """Remove the temporaries being written, say one line, exit with status 130 (see the module's docstring)."""
    io = sys.modules.get("camscope.io")
    if io is not None:
        io.discard_temporaries()
    terminal = "\r\x1b[2K\x1b[?25h" if sys.stderr.isatty() else ""  # clear a progress bar, show the cursor
    os.write(2, f"{terminal}{INTERRUPTED}\n".encode())
    os._exit(130)


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
