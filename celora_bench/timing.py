"""Timing callables: torch.utils.benchmark on CPU, CUDA events on GPU. Raw samples kept.

Callables that will be compared are timed interleaved (A B A B ...), so drift
in the machine's speed lands on both sides of a ratio.
"""
from __future__ import annotations

import statistics
import time
import timeit
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.utils import benchmark

SPREAD_LIMIT = 0.10   # IQR / median above this is flagged, as torch's Measurement warns
MIN_SAMPLES = 4
BLOCK_S = 0.005       # each sample is the mean of enough calls to last about this long (5 ms)


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
    def quartiles(self) -> tuple[float, float]:
        """(Q1, Q3), inclusive method; both the median for a single sample."""
        if self.count < 2:
            return self.median, self.median
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[0], q[2]

    @property
    def iqr(self) -> float:
        q1, q3 = self.quartiles
        return q3 - q1

    @property
    def spread(self) -> bool:
        return self.median > 0 and self.iqr / self.median > SPREAD_LIMIT


@dataclass(frozen=True)
class TimingBudget:
    """Per callable: at least MIN_SAMPLES samples; stop once past min_s seconds with
    IQR/median under SPREAD_LIMIT, or once past max_s."""

    min_s: float = 0.2
    max_s: float = 1.0
    cuda_warmup: int = 10
    cuda_reps: int = 50
    fixed: int | None = None      # exactly this many one-call samples (data-parallel ranks must agree)

    def __post_init__(self):
        if not 0 < self.min_s <= self.max_s:
            raise ValueError(f"TimingBudget min_s={self.min_s}, max_s={self.max_s} is invalid; "
                             f"allowed: 0 < min_s <= max_s")


def _settled(samples: list[float]) -> bool:
    return len(samples) >= MIN_SAMPLES and not TimeStats(tuple(samples)).spread


def time_cpu_interleaved(fns: Sequence[Callable[[], object]], budget: TimingBudget,
                         threads: int) -> list[TimeStats]:
    """Round robin over the callables, one block each per round, until each has settled or spent its budget.

    torch.utils.benchmark.Timer.timeit runs two warm-up calls before every block
    (tripling the cost of a 200 ms op), so blocks are timed by the stdlib
    timeit.Timer that it wraps, under its thread setting; one warm-up per callable.
    """
    if budget.fixed:
        return _fixed_rounds(fns, budget.fixed, threads)
    samples: list[list[float]] = [[] for _ in fns]
    with benchmark.utils.common.set_torch_threads(threads):
        timers, numbers = [], []
        for fn in fns:
            t0 = time.perf_counter()
            fn()                                   # warm-up
            one = time.perf_counter() - t0
            if one < BLOCK_S:                      # a short call: estimate from a warm second call
                t0 = time.perf_counter()
                fn()
                one = max(time.perf_counter() - t0, 1e-7)
            numbers.append(max(1, int(BLOCK_S / one)))
            timers.append(timeit.Timer(stmt="fn()", globals={"fn": fn}))
        spent = [0.0] * len(fns)
        active = set(range(len(fns)))
        while active:
            for i in sorted(active):
                block = timers[i].timeit(numbers[i])
                samples[i].append(block / numbers[i])
                spent[i] += block
                if len(samples[i]) >= MIN_SAMPLES and (
                        spent[i] >= budget.max_s or (spent[i] >= budget.min_s and _settled(samples[i]))):
                    active.discard(i)
    return [TimeStats(tuple(s)) for s in samples]


def _fixed_rounds(fns, rounds: int, threads: int) -> list[TimeStats]:
    """One warm-up, then exactly ``rounds`` single calls each, interleaved: the same calls on every rank."""
    samples: list[list[float]] = [[] for _ in fns]
    with benchmark.utils.common.set_torch_threads(threads):
        for fn in fns:
            fn()
        for _ in range(rounds):
            for i, fn in enumerate(fns):
                t0 = time.perf_counter()
                fn()
                samples[i].append(time.perf_counter() - t0)
    return [TimeStats(tuple(s)) for s in samples]


def time_cuda_interleaved(fns: Sequence[Callable[[], object]], budget: TimingBudget) -> list[TimeStats]:
    """CUDA events around each call after warm-up, alternating the callables; one sync at the end."""
    for fn in fns:
        for _ in range(budget.cuda_warmup):
            fn()
    torch.cuda.synchronize()
    events = [[] for _ in fns]
    for _ in range(budget.cuda_reps):
        for i, fn in enumerate(fns):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            events[i].append((s, e))
    torch.cuda.synchronize()
    return [TimeStats(tuple(s.elapsed_time(e) / 1e3 for s, e in ev)) for ev in events]


def time_interleaved(fns: Sequence[Callable[[], object]], device: str, budget: TimingBudget,
                     threads: int) -> list[TimeStats]:
    if device.startswith("cuda"):
        return time_cuda_interleaved(fns, budget)
    return time_cpu_interleaved(fns, budget, threads)


def time_fn(fn: Callable[[], object], device: str, budget: TimingBudget, threads: int) -> TimeStats:
    return time_interleaved([fn], device, budget, threads)[0]


REP_SCOPE = "celora_bench.rep"
LAUNCH_MARGIN = 0.25   # wall time over kernel time by more than 25%: the row is launch-bound


def kernel_samples(fn: Callable[[], object], device: str, reps: int = 5) -> tuple[float, ...]:
    """Seconds of device work per call, one sample per call, from the profiler.

    CUDA: the device time of every kernel the call launched. CPU: the time spent
    inside the call's top-level aten ops (the compute and its dispatch; the
    Python between ops is left out). Compared with the wall time, what is left is
    host overhead: launch latency, Python, synchronisation.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device.startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    from celora_bench.flops import _quiet_stderr

    fn()                                               # not the first call: caches and allocator warm
    with _quiet_stderr(), profile(activities=acts) as prof:
        for _ in range(reps):
            with record_function(REP_SCOPE):
                fn()
        if cuda:
            torch.cuda.synchronize()
    out = []
    for e in prof.events():
        if e.name != REP_SCOPE or e.device_type != DeviceType.CPU:
            continue
        if cuda:
            out.append(e.device_time_total / 1e6)
        else:
            out.append(sum(c.cpu_time_total for c in e.cpu_children if c.name.startswith("aten::")) / 1e6)
    return tuple(out)


def launch_bound(wall_median: float, kernel_median: float, margin: float = LAUNCH_MARGIN) -> bool:
    """True when the wall time exceeds the device (kernel) time by more than the margin."""
    return kernel_median > 0 and wall_median > kernel_median * (1 + margin)
