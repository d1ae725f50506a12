"""One progress bar for every long loop: dataset passes and the perturbation methods' extra passes.

Besides drawing a bar on a terminal, every :class:`ProgressBar` reports its steps to the
observer installed with :func:`observe_progress` in the current thread (or asyncio task), so
that an application (``camscope serve``) can show the progress of a long call and cancel it: an
observer that raises stops the loop at its next step (the bar is closed and the hooks of the
call are removed as on any error).
"""

from __future__ import annotations

import contextvars
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

__all__ = ["ProgressBar", "ProgressObserver", "log_off_terminal", "observe_progress"]

#: Seconds between two progress lines off a terminal.
LOG_INTERVAL = 10.0

_LOG_OFF_TERMINAL = False


def log_off_terminal(enabled: bool = True) -> None:
    """Report progress off a terminal too, as plain lines on stderr (the command line turns this on).

    Without it, progress that is not asked for explicitly (``progress=None``) is shown on a
    terminal only, so library users whose stderr is a log file see nothing.
    """
    global _LOG_OFF_TERMINAL
    _LOG_OFF_TERMINAL = bool(enabled)


#: Called as ``observer(description, done, total)`` after every step of every bar.
ProgressObserver = Callable[[str, int, "int | None"], None]

_OBSERVER: contextvars.ContextVar[ProgressObserver | None] = contextvars.ContextVar("camscope_progress", default=None)


@contextmanager
def observe_progress(observer: ProgressObserver) -> Iterator[None]:
    """Report the steps of every :class:`ProgressBar` advanced in this context to ``observer``.

    The observer is called as ``observer(description, done, total)`` after each step, in
    the thread that advances the bar; it may raise (for example to cancel a job): the
    exception leaves the loop that advanced the bar. Observers do not nest: the inner one
    replaces the outer one until it exits.

    Example:
        >>> seen = []
        >>> with observe_progress(lambda text, done, total: seen.append((done, total))):
        ...     with ProgressBar(2, "work", enabled=False) as bar:
        ...         bar.advance()
        ...         bar.advance()
        >>> seen
        [(1, 2), (2, 2)]
    """
    token = _OBSERVER.set(observer)
    try:
        yield
    finally:
        _OBSERVER.reset(token)


class ProgressBar:
    """A rich progress bar on stderr; off a terminal (or without rich), a plain line every ``LOG_INTERVAL`` seconds.

    Args:
        total: the number of steps, or None when unknown (a generator).
        description: the text before the bar.
        enabled: True or False forces progress on or off; None shows it when
            stderr is a terminal (and, after :func:`log_off_terminal`, as lines otherwise).
        delay: seconds of work before the bar appears, so that short loops
            print nothing.

    Example:
        >>> with ProgressBar(3, "work", enabled=False) as bar:
        ...     for _ in range(3):
        ...         bar.advance()
        >>> bar.done
        3
    """

    def __init__(self, total: int | None, description: str, enabled: bool | None = None, delay: float = 0.0) -> None:
        self.total = total
        self.description = description
        terminal = sys.stderr.isatty()
        self.enabled = (terminal or _LOG_OFF_TERMINAL) if enabled is None else bool(enabled)
        self.plain = enabled is None and not terminal  # forced on: the rich bar, as asked
        self.delay = delay
        self.start = time.perf_counter()
        self.done = 0
        self._bar: Any = None
        self._task: Any = None
        self._logged = self.start
        self._lines = 0
        self._finished = False

    def advance(self, steps: int = 1) -> None:
        """Count ``steps`` more steps done (and tell the observer of :func:`observe_progress`, if any)."""
        self.done += steps
        observer = _OBSERVER.get()
        if observer is not None:
            observer(self.description, self.done, self.total)
        if not self.enabled:
            return
        if self.plain:
            self._log_line()
            return
        if self._bar is None:
            if time.perf_counter() - self.start < self.delay or (
                self.total is not None and self.done >= self.total > 0 and self.delay > 0
            ):
                return
            try:
                from rich.console import Console
                from rich.progress import Progress
            except ModuleNotFoundError:  # the core install (no camscope[cli]): plain lines instead of a bar
                self.plain = True
                self._log_line()
                return
            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.done)
        else:
            self._bar.update(self._task, completed=self.done)

    def _log_line(self) -> None:
        """Off a terminal: one line every ``LOG_INTERVAL`` seconds, and a last one when done."""
        now = time.perf_counter()
        finished = self.total is not None and self.done >= self.total
        due = now - self._logged >= LOG_INTERVAL and now - self.start >= self.delay
        last = finished and self._lines > 0 and not self._finished
        if not (due or last) or self._finished:
            return
        self._finished = finished
        counted = (
            f"{self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%)" if self.total else str(self.done)
        )
        sys.stderr.write(f"camscope: {self.description}: {counted}, {now - self.start:.0f} s\n")
        sys.stderr.flush()
        self._logged = now
        self._lines += 1

    def close(self) -> None:
        """Remove the bar from the terminal."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
