"""Timing, peak-memory and table helpers shared by the benchmark scripts.

Contenders run interleaved: every contender once per round, the order rotating round to round, so that a
drift in the machine's load hits all alike; a table gives each contender's median and its ratios to the
model's plain forward pass (``torch.no_grad``) and to the peer library's implementation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch

__all__ = [
    "FORWARD",
    "Runs",
    "arguments",
    "forward_pass",
    "interleaved",
    "medians",
    "peak_bytes",
    "peer_rows",
    "prepare",
    "sync",
    "timed",
]

#: Contenders by name: each a call that runs once.
Runs = dict[str, Callable[[], object]]

#: The name of the plain forward pass, the floor every ratio is taken to.
FORWARD = "forward pass (no_grad, best batch size)"


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (a no-op on a CPU), so that a clock reads the work done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of one call of ``fn``, synchronised on a GPU."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak of the live bytes torch allocates during ``fn`` (CUDA's statistics; the profiler's memory events on a CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    # The profiler's start/stop and GPU-probe log lines would split the printed table.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    items = []
    for event in prof.events():
        if event.name == "[memory]":
            items.append((event.time_range.start, event.cpu_memory_usage))
        elif event.self_cpu_memory_usage:
            items.append((event.time_range.end, event.self_cpu_memory_usage))
    live = peak = 0
    for _, change in sorted(items, key=lambda item: item[0]):
        live += change
        peak = max(peak, live)
    return peak


def forward_pass(model: torch.nn.Module, x: object) -> Callable[[], object]:
    """The floor of the ratios: the model's plain forward pass (``torch.no_grad``) on ``x`` at its best batch size.

    A batch tensor runs in chunks of the fastest size among 1, 2, 4, ... up to its length (each size timed on
    the same images, best of two after a first untimed call), as a user who only wanted the forward pass would
    batch it; any other input (one image, a list of images) runs as it is.
    """

    def chunked(size: int) -> Callable[[], object]:
        def forward() -> object:
            with torch.no_grad():
                if not isinstance(x, torch.Tensor) or size >= x.shape[0]:
                    return model(x)
                return [model(x[start : start + size]) for start in range(0, x.shape[0], size)]

        return forward

    if not isinstance(x, torch.Tensor) or x.shape[0] < 2:
        return chunked(1)
    sizes = [2**k for k in range(x.shape[0].bit_length()) if 2**k < x.shape[0]] + [x.shape[0]]
    runs = {size: chunked(size) for size in sizes}
    for run in runs.values():
        run()
    best = min(sizes, key=lambda size: min(timed(runs[size], x.device) for _ in range(2)))
    return runs[best]


def interleaved(runs: Runs, repeats: int, device: torch.device, warm_up: bool = True) -> dict[str, list[float]]:
    """Seconds of every run of each contender over ``repeats`` rounds, the order rotating each round.

    ``warm_up``: run every contender once first, untimed (first calls pay for allocations and set-up).
    """
    names = list(runs)
    if warm_up:
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            times[name].append(timed(runs[name], device))
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """The median of each contender's seconds."""
    return {name: statistics.median(values) for name, values in times.items()}


def arguments(
    description: str, repeats: int, batch: int, device: bool = True, memory: bool = True
) -> argparse.ArgumentParser:
    """The flags the comparison benchmarks share: ``--repeats``, ``--batch``, ``--size``, ``--threads`` and, where
    asked, ``--device`` and ``--no-memory``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    if device:
        parser.add_argument("--device", default="cpu")
    if memory:
        parser.add_argument("--no-memory", action="store_true", help="skip the (untimed) peak-memory runs")
    return parser


def prepare(args: argparse.Namespace) -> torch.device:
    """Quiet the peers' warnings, set ``--threads`` and seed torch (the models' random weights); the device."""
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(getattr(args, "device", "cpu"))
    torch.manual_seed(0)
    return device


def peer_rows(
    method: str,
    runs: Runs,
    repeats: int,
    device: torch.device,
    peaks: list[Callable[[Callable[[], object]], int]],
    memory: bool = True,
) -> None:
    """Print one table row per contender of ``method`` (``runs`` holds :data:`FORWARD` and the peer).

    Columns: median seconds, the ratio to the forward pass, the ratio to the peer (the first contender of
    grad-cam or torchcam), then each of ``peaks`` in MB, measured in separate, untimed runs (``-`` without
    ``memory``).
    """
    times = medians(interleaved(runs, repeats, device))
    peer = next(value for name, value in times.items() if name.startswith(("grad-cam", "torchcam")))
    for name, median in times.items():
        shown = " | ".join(f"{peak(runs[name]) / 1e6:.0f}" if memory else "-" for peak in peaks)
        versus = f"{median / peer:.2f}x" if name != FORWARD else ""
        print(f"| {method} | {name} | {median:.3f} | {median / times[FORWARD]:.2f}x | {versus} | {shown} |", flush=True)
