"""Step timing shared by the benchmarks: the median of synchronised wall times, which shrugs
off the slow steps a shared machine throws in."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_step_time(step: Callable[[], None], iters: int, device: torch.device,
                     warmup: int = 1) -> float:
    """Seconds of one `step()`: the median over `iters` timed calls after `warmup` untimed."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
