"""One worker thread that owns the models and runs jobs from a queue, with progress and cancellation.

Every call that touches a model (its layers, a prediction, an explanation, a bank of
the data folder) is a :class:`Job` run by the single worker thread of a
:class:`JobQueue`, in submission order. Concurrent requests therefore never run a model
at the same time, and no request sees another's hooks, modes or results.

Progress: while a job runs, every :class:`camscope.progress.ProgressBar` advanced in
the worker (the Score-CAM family's masked passes, Ablation-CAM's passes, dataset passes)
reports to the job (:func:`camscope.progress.observe_progress`). Cancellation sets a
flag; the job stops at its next progress step or check point by raising
:class:`JobCancelledError` in the worker (the library removes its hooks and restores the
model's modes as on any error). A queued job that is cancelled never starts.

Example:
    >>> queue = JobQueue()
    >>> job = queue.submit("double", lambda job: 2 * 21)
    >>> queue.wait(job, timeout=10).result
    42
    >>> queue.close()
"""

from __future__ import annotations

import itertools
import queue as queue_module
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from camscope.errors import CamscopeError
from camscope.progress import observe_progress

__all__ = ["Job", "JobCancelledError", "JobQueue"]

#: The states of a job, in order; the last three are final.
STATES = ("queued", "running", "done", "failed", "cancelled")


class JobCancelledError(Exception):
    """Raised in the worker to stop a job that was cancelled."""


@dataclass
class Job:
    """A unit of work for the worker: ``function(job)`` gives ``result``.

    ``progress`` holds the latest ``{"description", "done", "total"}`` reported by a
    progress bar in the job; ``error`` the one-line message of a failed job.
    """

    id: str
    kind: str
    function: Callable[[Job], Any]
    status: str = "queued"
    progress: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    submitted: float = field(default_factory=time.time)
    finished: float | None = None
    order: int = 0
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def final(self) -> bool:
        """Whether the job is done, failed or cancelled."""
        return self.status in ("done", "failed", "cancelled")

    def check(self) -> None:
        """Raise :class:`JobCancelledError` when the job was cancelled (call between steps)."""
        if self.cancel_requested.is_set():
            raise JobCancelledError

    def report(self, description: str, done: int, total: int | None) -> None:
        """A progress step (the observer of :func:`camscope.progress.observe_progress`); stops a cancelled job."""
        self.progress = {"description": description, "done": done, "total": total}
        self.check()

    def describe(self) -> dict[str, Any]:
        """The job's state as JSON-ready values (the result is the caller's business)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "progress": dict(self.progress),
            "error": self.error,
        }


class JobQueue:
    """A FIFO of jobs run one at a time by one daemon worker thread.

    Args:
        keep: how many finished jobs (and their results) are kept for status queries and
            downloads; older ones are forgotten first.
    """

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue_module.Queue[Job | None] = queue_module.Queue()
        self._counter = itertools.count()
        self._thread = threading.Thread(target=self._work, name="camscope-worker", daemon=True)
        self._thread.start()

    def submit(self, kind: str, function: Callable[[Job], Any]) -> Job:
        """Queue ``function(job)``; returns the job at once."""
        job = Job(id=secrets.token_hex(8), kind=kind, function=function, order=next(self._counter))
        with self._lock:
            self.jobs[job.id] = job
            self._forget_old()
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job:
        """The job with this id (a :class:`CamscopeError` when unknown or forgotten)."""
        with self._lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise CamscopeError(f"no job {job_id!r} (it never existed or was forgotten): run it again")
        return job

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop: a queued job never starts, a running one stops at its next step."""
        job = self.get(job_id)
        job.cancel_requested.set()
        return job

    def wait(self, job: Job, timeout: float | None = None) -> Job:
        """Block until the job is final (or ``timeout`` seconds passed); returns it."""
        job.ended.wait(timeout)
        return job

    def run(self, kind: str, function: Callable[[Job], Any], timeout: float = 600.0) -> Any:
        """Submit a job, wait for it, and return its result (a failure raises :class:`CamscopeError`)."""
        job = self.wait(self.submit(kind, function), timeout)
        if job.status == "done":
            return job.result
        if not job.final:
            raise CamscopeError(f"{kind} did not finish within {timeout:g} s (the worker is busy): try again")
        raise CamscopeError(job.error or f"{kind} was cancelled")

    def close(self, cancel: bool = False) -> None:
        """Stop the worker after the jobs already queued (``cancel``: cancel them, and the running one, first)."""
        if cancel:
            with self._lock:
                for job in self.jobs.values():
                    job.cancel_requested.set()
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _forget_old(self) -> None:
        finished = [job_id for job_id, job in self.jobs.items() if job.final]
        for job_id in finished[: max(0, len(finished) - self.keep)]:
            del self.jobs[job_id]

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._run_one(job)

    def _run_one(self, job: Job) -> None:
        if job.cancel_requested.is_set():
            self._end(job, "cancelled")
            return
        job.status = "running"
        try:
            with observe_progress(job.report):
                result = job.function(job)
        except JobCancelledError:
            self._end(job, "cancelled")
        except CamscopeError as error:
            self._end(job, "failed", str(error))
        except Exception as error:  # noqa: BLE001 - a bug or a model's own error: the worker survives and says what happened
            traceback.print_exc()
            self._end(job, "failed", f"{type(error).__name__}: {error}")
        else:
            job.result = result
            self._end(job, "done")

    def _end(self, job: Job, status: str, error: str | None = None) -> None:
        job.error = error
        job.status = status
        job.finished = time.time()
        job.function = _finished  # release what the closure held
        job.ended.set()


def _finished(job: Job) -> None:
    """The function of a finished job (it never runs again)."""
