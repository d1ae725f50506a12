"""One progress bar for every long loop: dataset passes and the perturbation methods' extra passes."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """A rich progress bar on stderr.

    Args:
        total: the number of steps, or None when unknown (a generator).
        description: the text before the bar.
        enabled: True or False forces the bar on or off; None shows it when
            stderr is a terminal.
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
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.delay = delay
        self.start = time.perf_counter()
        self.done = 0
        self._bar: Any = None
        self._task: Any = None

    def advance(self, steps: int = 1) -> None:
        """Count ``steps`` more steps done."""
        self.done += steps
        if not self.enabled:
            return
        if self._bar is None:
            if time.perf_counter() - self.start < self.delay or (
                self.total is not None and self.done >= self.total > 0 and self.delay > 0
            ):
                return
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.done)
        else:
            self._bar.update(self._task, completed=self.done)

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
