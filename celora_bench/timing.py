"""Timing one block of a callable (wall clock on the CPU, CUDA events on a GPU) and its device time.

The sampling design that decides *when* each block runs (rounds spread over the run, randomized
order) is celora_bench.rounds; this module only times. Raw samples are kept by the caller.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

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
    """How many rounds each callable gets, and how long one block lasts.

    all_rounds: rounds of every timed callable (the descriptive breakdown).
    rounds: rounds of the callables a verdict reads (a suite's JUDGED components), >= all_rounds.
    stages: further totals of rounds for the callables of checks still undecided after the
        previous look, e.g. (16, 24): extend to 16 rounds, look, extend to 24, look.
    max_run_s: no extension starts once the run has lasted this long (None: no limit).
    block_s: a CPU block repeats its callable until it has lasted this long (at least one call).
    cuda_warmup: calls of each callable before its first round (CUDA).
    cuda_reps: calls per CUDA block (one pair of events around them).
    fixed: exactly this many rounds of one-call blocks, no extension (data-parallel ranks must agree).
    """

    all_rounds: int = 3
    rounds: int = 8
    stages: tuple[int, ...] = (16, 24)
    max_run_s: float | None = None
    block_s: float = 0.02
    cuda_warmup: int = 3
    cuda_reps: int = 10
    fixed: int | None = None

    def __post_init__(self):
        if not 1 <= self.all_rounds <= self.rounds:
            raise ValueError(f"TimingBudget all_rounds={self.all_rounds}, rounds={self.rounds} is invalid; "
                             f"allowed: 1 <= all_rounds <= rounds")
        if list(self.stages) != sorted(set(self.stages)) or (self.stages and self.stages[0] <= self.rounds):
            raise ValueError(f"TimingBudget stages={self.stages} is invalid; allowed: increasing totals "
                             f"above rounds={self.rounds}")
        if self.block_s <= 0 or self.cuda_reps < 1 or self.cuda_warmup < 0:
            raise ValueError(f"TimingBudget block_s={self.block_s}, cuda_reps={self.cuda_reps}, "
                             f"cuda_warmup={self.cuda_warmup} is invalid; allowed: block_s > 0, "
                             f"cuda_reps >= 1, cuda_warmup >= 0")


def cpu_block(fn: Callable[[], object], block_s: float, one_call: bool = False) -> float:
    """Seconds per call of fn: the mean over as many back-to-back calls as fill block_s (at least one)."""
    calls = 0
    t0 = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if one_call or elapsed >= block_s:
            return elapsed / calls


class CudaBlocks:
    """CUDA events around blocks of calls, read after one synchronization per batch."""

    def __init__(self, reps: int):
        self.reps = reps
        self.marks: list[tuple[object, object]] = []

    def time(self, fn: Callable[[], object]) -> int:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(self.reps):
            fn()
        e.record()
        self.marks.append((s, e))
        return len(self.marks) - 1

    def read(self) -> list[float]:
        """Seconds per call of every block timed since the last read, in order."""
        torch.cuda.synchronize()
        out = [s.elapsed_time(e) / 1e3 / self.reps for s, e in self.marks]
        self.marks = []
        return out


def call_seconds(fn: Callable[[], object], device: str) -> float:
    """Seconds of one call of fn: CUDA events read after a synchronization, or the wall clock."""
    if device.startswith("cuda"):
        blocks = CudaBlocks(1)
        blocks.time(fn)
        return blocks.read()[0]
    return cpu_block(fn, 0.0, one_call=True)


REP_SCOPE = "celora_bench.rep"
LAUNCH_MARGIN = 0.25   # wall time over kernel time by more than 25%: the row is launch-bound


def kernel_times(fns: Sequence[Callable[[], object]], device: str) -> list[float]:
    """Seconds of device work of one call of each fn, from one profiler session over all of them.

    CUDA: the device time of every kernel launched while the call ran, from any thread. Autograd
    runs a CUDA backward on its own device thread, whose ops are not under a scope opened on the
    calling thread, so the kernels are attributed by time window: every top-level host op (of any
    thread) that started inside the call's window counts with all the device time it launched.
    CPU: the same windows over the time spent inside top-level aten ops (the compute and its
    dispatch; the Python between ops is left out). Compared with the wall time, what is left is
    host overhead: launch latency, Python, synchronisation.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    from celora_bench.flops import _quiet_stderr

    cuda = device.startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with _quiet_stderr(), profile(activities=acts, **_all_threads()) as prof:
        for i, fn in enumerate(fns):
            with record_function(f"{REP_SCOPE}.{i}"):
                fn()
            if cuda:
                torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type == DeviceType.CPU]
    windows = {}
    for e in events:
        if e.name.startswith(REP_SCOPE + "."):
            windows[int(e.name.rsplit(".", 1)[1])] = (e.time_range.start, e.time_range.end)
    out = [0.0] * len(fns)
    for e in events:
        if not _outermost(e, cuda):
            continue
        for i, (t0, t1) in windows.items():
            if t0 <= e.time_range.start <= t1:
                out[i] += (e.device_time_total if cuda else e.cpu_time_total) / 1e6
                break
    return out


def _all_threads() -> dict:
    """Profiler options that record ops of every thread, not only those that inherit its state
    (autograd's device threads do; a plain thread does only with profile_all_threads, torch >= 2.6)."""
    try:
        return {"experimental_config": torch._C._profiler._ExperimentalConfig(profile_all_threads=True)}
    except (AttributeError, TypeError):
        return {}


def _outermost(e, cuda: bool) -> bool:
    """Counted once: CUDA, a host op with no parent but the rep scope (its device time includes its
    children's kernels); CPU, an aten op with no aten op above it (autograd's node scopes sit between)."""
    if e.name.startswith(REP_SCOPE) or not (cuda or e.name.startswith("aten::")):
        return False
    p = e.cpu_parent
    while p is not None:
        if (cuda and not p.name.startswith(REP_SCOPE)) or p.name.startswith("aten::"):
            return False
        p = p.cpu_parent
    return True


def kernel_samples(fn: Callable[[], object], device: str, reps: int = 5) -> tuple[float, ...]:
    """Seconds of device work per call, one sample per call (kernel_times over reps calls of fn)."""
    fn()                                               # not the first call: caches and allocator warm
    return tuple(kernel_times([fn] * reps, device))


def launch_bound(wall_median: float, kernel_median: float, margin: float = LAUNCH_MARGIN) -> bool:
    """True when the wall time exceeds the device (kernel) time by more than the margin."""
    return kernel_median > 0 and wall_median > kernel_median * (1 + margin)
