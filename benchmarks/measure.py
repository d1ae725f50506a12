"""Timing and peak-memory helpers shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

__all__ = ["peak_bytes", "timed"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

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
