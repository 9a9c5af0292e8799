"""Timing a callable: torch.utils.benchmark on CPU, CUDA events on GPU. Raw samples kept."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils import benchmark

SPREAD_LIMIT = 0.10   # IQR / median above this is flagged, as torch's Measurement warns


@dataclass(frozen=True)
class TimeStats:
    """Seconds per call: the raw samples and what derives from them."""

    samples: tuple[float, ...]

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def iqr(self) -> float:
        if self.count < 2:
            return 0.0
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[2] - q[0]

    @property
    def spread(self) -> bool:
        return self.median > 0 and self.iqr / self.median > SPREAD_LIMIT


@dataclass(frozen=True)
class TimingBudget:
    """How long to measure one callable: at least min_s, at most max_s (seconds)."""

    min_s: float = 0.2
    max_s: float = 1.0
    cuda_warmup: int = 10
    cuda_reps: int = 50

    def __post_init__(self):
        # torch's adaptive_autorange sizes blocks to ~50 ms and needs 4 of them for a spread
        if not 0 < self.min_s <= self.max_s or self.max_s < 0.25:
            raise ValueError(f"TimingBudget min_s={self.min_s}, max_s={self.max_s} is invalid; "
                             f"allowed: 0 < min_s <= max_s, max_s >= 0.25")


def time_cpu(fn: Callable[[], object], budget: TimingBudget, threads: int) -> TimeStats:
    """torch.utils.benchmark: warm-up, then blocks until IQR/median < 10% or max_s ends."""
    fn()  # warm-up outside the timer: first-touch allocations, lazy init
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    m = timer.adaptive_autorange(threshold=SPREAD_LIMIT, min_run_time=budget.min_s,
                                 max_run_time=budget.max_s)
    return TimeStats(tuple(m.times))


def time_cuda(fn: Callable[[], object], budget: TimingBudget) -> TimeStats:
    """CUDA events around each call after warm-up; synchronized before reading."""
    for _ in range(budget.cuda_warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(budget.cuda_reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(budget.cuda_reps)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return TimeStats(tuple(s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)))


def time_fn(fn: Callable[[], object], device: str, budget: TimingBudget, threads: int) -> TimeStats:
    if device.startswith("cuda"):
        return time_cuda(fn, budget)
    return time_cpu(fn, budget, threads)
