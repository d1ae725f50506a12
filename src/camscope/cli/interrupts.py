"""Ctrl-C and start-up errors of the command line: one line on stderr, status 130 (or 2), nothing half-written.

A ``KeyboardInterrupt`` raised inside a C extension while it imports or computes (torch, numpy) can
abort the process, turn into an ``ImportError`` or be swallowed, so the handler does not raise one: it
removes the temporaries being written (:func:`camscope.io.atomic_write_bytes`), says one line and exits.

Example:
    >>> guarded(["--version"], lambda: lambda argv: 0)
    0
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from camscope.errors import MissingExtraError

__all__ = ["INTERRUPTED", "exit_on_ctrl_c", "guarded"]

#: The line a Ctrl-C prints (status 130).
INTERRUPTED = "camscope: interrupted"


def guarded(argv: list[str] | None, start: Callable[[], Callable[[list[str] | None], int]]) -> int:
    """Own Ctrl-C, then run ``start()(argv)``: ``start`` imports the command line (its imports are covered too).

    A missing extra prints one line and returns 2; Ctrl-C prints :data:`INTERRUPTED` and exits with 130.
    """
    previous = _own_ctrl_c()
    try:
        return start()(argv)
    except MissingExtraError as error:
        return _say(f"camscope: error: {error}", 2)
    except KeyboardInterrupt:  # raised by the code itself, or where the handler could not be installed
        return _say(INTERRUPTED, 130)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _own_ctrl_c() -> Any:
    """Install :func:`exit_on_ctrl_c`; returns the handler it replaced (None when it left it alone).

    Only Python's default handler is replaced, in the main thread: a shell that runs the
    command in the background ignores Ctrl-C for it, and that stays so.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None
    return signal.signal(signal.SIGINT, exit_on_ctrl_c)


def exit_on_ctrl_c(signum: int, frame: FrameType | None) -> None:
    """Remove the temporaries being written, say one line, exit with status 130 (see the module's docstring)."""
    del signum, frame  # a signal handler's signature; the exit is the same for every signal and frame
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
