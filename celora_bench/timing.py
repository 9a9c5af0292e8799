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
    workers: fresh worker processes the rounds are dealt to (celora_bench.workers; 1: in this process).
    """

    all_rounds: int = 3
    rounds: int = 8
    stages: tuple[int, ...] = (16, 24)
    max_run_s: float | None = None
    block_s: float = 0.02
    cuda_warmup: int = 3
    cuda_reps: int = 10
    fixed: int | None = None
    workers: int = 1

    def __post_init__(self):
        if not 1 <= self.all_rounds <= self.rounds:
            raise ValueError(f"TimingBudget all_rounds={self.all_rounds}, rounds={self.rounds} is invalid; "
                             f"allowed: 1 <= all_rounds <= rounds")
        if list(self.stages) != sorted(set(self.stages)) or (self.stages and self.stages[0] <= self.rounds):
            raise ValueError(f"TimingBudget stages={self.stages} is invalid; allowed: increasing totals "
                             f"above rounds={self.rounds}")
        if self.workers < 1:
            raise ValueError(f"TimingBudget workers={self.workers} is invalid; allowed: >= 1")
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
# The profiler's own events, which can carry device time (1.2 ms once on torch 2.11 with CUDA) or wrap the
# whole session: never a call's work.
BOOKKEEPING = ("ProfilerStep", "[memory]", "[OutOfMemory]", "Activity Buffer Request", "Lazy Function Loading",
               "Iteration Start", "Record Window End", "Buffer Flush", "CUPTI", "Overhead")
HOST_KINDS = ("cpu_op", "user_annotation")           # activity types of host ops a call runs
DEVICE_KINDS = ("kernel", "gpu_memcpy", "gpu_memset")  # activity types of device work (not annotations)


@dataclass(frozen=True)
class KernelCount:
    """Device work of one call, counted from the device's events (celora_bench.timing.kernel_counts).

    seconds: what kernel_times reports. CUDA: every kernel, copy and set on the device that started between
        the call's start and the next call's (each call is followed by a synchronize), whichever thread
        launched it and whether or not the profiler links it to a host op. CPU: the time inside the call's
        top-level aten ops.
    host_s: CUDA, the part of that device work the profiler links to host ops (any thread, the profiler's
        bookkeeping excluded) that started inside the call. CPU: seconds.
    unlinked_s: CUDA, device work in the call's window linked to no such host op (e.g. Triton kernels
        launched through the driver API); counted in seconds all the same. CPU: 0.
    """

    seconds: float
    host_s: float
    unlinked_s: float = 0.0

    def agrees(self, tolerance: float = 0.03) -> bool:
        """The cross-check: the window's device work is this call's linked work plus the unlinked, within the
        tolerance (a kernel of another call in the window, or one of this call outside it, breaks it)."""
        return abs(self.seconds - self.host_s - self.unlinked_s) <= tolerance * self.seconds + 1e-9


def kernel_times(fns: Sequence[Callable[[], object]], device: str) -> list[float]:
    """Seconds of device work of one call of each fn, from one profiler session over all of them
    (KernelCount.seconds of kernel_counts)."""
    return [c.seconds for c in kernel_counts(fns, device)]


def kernel_counts(fns: Sequence[Callable[[], object]], device: str) -> list[KernelCount]:
    """Device work of one call of each fn, from one profiler session over all of them.

    CUDA: the device-side events (kernels, copies, sets: not annotations, not the profiler's overhead) in
    each call's time window, whichever thread launched them (autograd runs a CUDA backward on its own
    device thread, whose ops are not under a scope opened on the calling thread) and whether or not the
    profiler links them to a host op; beside it, the part linked to the call's host ops (the cross-check).
    The host ops' own device_time_total is not read: a record_function scope's device-side annotation and
    the profiler's bookkeeping events carry device time there (1.2 ms once), counted twice.
    CPU: the time spent inside top-level aten ops (the compute and its dispatch; the Python between ops is
    left out). Compared with the wall time, what is left is host overhead.
    """
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
    return count_events(list(prof.events()), len(fns), cuda)


def count_events(events: list, calls: int, cuda: bool) -> list[KernelCount]:
    """kernel_counts from a profile's events (torch's FunctionEvent; anything with the same fields)."""
    from torch.autograd import DeviceType

    host = [e for e in events if e.device_type == DeviceType.CPU and not getattr(e, "is_async", False)]
    starts = sorted(((e.time_range.start, e.time_range.end, int(e.name.rsplit(".", 1)[1]))
                     for e in host if e.name.startswith(REP_SCOPE + ".")))
    windows = [(i, t0, t1, starts[j + 1][0] if j + 1 < len(starts) else float("inf"))
               for j, (t0, t1, i) in enumerate(starts)]

    def call_of(t: float, device_side: bool) -> int | None:
        """The call whose window holds t: host, inside its scope; device, up to the next call's start
        (its kernels may finish after the scope closes, never after the synchronize that follows)."""
        for i, t0, t1, nxt in windows:
            if t0 <= t <= t1 or (device_side and t0 <= t < nxt):
                return i
        return None

    seconds, linked, unlinked = [0.0] * calls, [0.0] * calls, [0.0] * calls
    if not cuda:
        for e in host:
            i = call_of(e.time_range.start, False) if _outermost(e) else None
            if i is not None:
                seconds[i] += e.cpu_time_total / 1e6
        return [KernelCount(s, s) for s in seconds]
    call_of_op = {}                                    # host op id -> the call it started in
    for e in host:
        if getattr(e, "activity_type", None) in (None, *HOST_KINDS) and not _bookkeeping(e) \
                and not e.name.startswith(REP_SCOPE):
            i = call_of(e.time_range.start, False)
            if i is not None:
                call_of_op[e.id] = i
    for e in events:
        if e.device_type == DeviceType.CPU or not _device_work(e):
            continue
        d, i = (e.time_range.end - e.time_range.start) / 1e6, call_of(e.time_range.start, True)
        j = call_of_op.get(getattr(e, "linked_correlation_id", 0))
        if i is not None:
            seconds[i] += d
        if j is not None:
            linked[j] += d
        elif i is not None:
            unlinked[i] += d
    return [KernelCount(s, h, u) for s, h, u in zip(seconds, linked, unlinked)]


def _bookkeeping(e) -> bool:
    return any(e.name.startswith(b) for b in BOOKKEEPING)


def _device_work(e) -> bool:
    """A device event that is work (a kernel, copy or set), not an annotation or the profiler's own."""
    kind = getattr(e, "activity_type", None)
    if kind is not None:
        return kind in DEVICE_KINDS and not _bookkeeping(e)
    return not getattr(e, "is_user_annotation", False) and not _bookkeeping(e)


def _all_threads() -> dict:
    """Profiler options that record ops of every thread, not only those that inherit its state
    (autograd's device threads do; a plain thread does only with profile_all_threads, torch >= 2.6)."""
    try:
        return {"experimental_config": torch._C._profiler._ExperimentalConfig(profile_all_threads=True)}
    except (AttributeError, TypeError):
        return {}


def _outermost(e) -> bool:
    """A CPU call's op time is counted once: an aten op with no aten op above it (autograd's node scopes sit
    between), the profiler's bookkeeping left out."""
    if not e.name.startswith("aten::") or _bookkeeping(e):
        return False
    p = e.cpu_parent
    while p is not None:
        if p.name.startswith("aten::"):
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
