"""Measures one case from the callables a suite hands over: time, FLOPs and memory per component.

The engine knows nothing of CE-LoRA. A suite's setup(case) gives it a Target:
plain callables for each part (timed alone, on tensors captured from a real
backward), callables for the whole phases (timed in place), one callable that
runs a real forward+backward for counting, and the analytic FLOPs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from celora_bench import flops as F
from celora_bench import memory
from celora_bench.cases import Case, Row
from celora_bench.timing import TimingBudget, time_fn

PROFILER_WHAT = "bytes allocated by ops inside the component (profiler, gross, not a peak)"
WHOLE = ("fwd", "bwd", "fwd+bwd")


@dataclass
class Target:
    """What a suite hands the engine for one case.

    parts: component -> callable, each timed alone.
    whole: "fwd" / "bwd" / "fwd+bwd" -> callable, timed in place; their peak
        memory is measured as a phase.
    count: one real forward+backward (``.backward()``, not autograd.grad), run
        under the profiler and FlopCounterMode.
    scopes: the record_function names that split the counted FLOPs.
    analytic: component (or whole phase) -> FLOPs by formula.
    amortized: derived component -> (source component, divisor), e.g.
        {"selection.amortized": ("selection", tau)}.
    state_bytes: persistent bytes the provider keeps beyond W0 (None: not applicable).
    """

    parts: dict[str, Callable] = field(default_factory=dict)
    whole: dict[str, Callable] = field(default_factory=dict)
    count: Callable | None = None
    scopes: tuple[str, ...] = ()
    analytic: dict[str, int] = field(default_factory=dict)
    amortized: dict[str, tuple[str, int]] = field(default_factory=dict)
    state_bytes: int | None = None
    state_what: str = ""
    notes: dict[str, str] = field(default_factory=dict)


def measure(case: Case, target: Target, budget: TimingBudget, threads: int) -> list[Row]:
    rows: list[Row] = []
    counted, allocated = ({}, {})
    total = None
    if target.count is not None:
        counted, allocated = F.profile_scopes(target.count, target.scopes, case.device)
        total = F.torch_total(target.count)
    times = {}
    for name, fn in target.parts.items():
        times[name] = time_fn(fn, case.device, budget, threads)
        rows.append(Row(case, name, times[name].samples, target.analytic.get(name),
                        counted.get(name, 0) if target.count else None,
                        allocated.get(name, 0) if target.count else None, PROFILER_WHAT,
                        target.notes.get(name, "")))
    for name, (source, divisor) in target.amortized.items():
        if source in times:
            samples = tuple(s / divisor for s in times[source].samples)
            rows.append(Row(case, name, samples, note=f"{source} / {divisor}"))
    for name, fn in target.whole.items():
        stats = time_fn(fn, case.device, budget, threads)
        peak, what = memory.phase_peak(fn, case.device)
        flops_counted = total if name == "fwd+bwd" else None
        extra = {"other_flops": counted.get("other", 0)} if name == "fwd+bwd" and target.count else {}
        rows.append(Row(case, name, stats.samples, target.analytic.get(name), flops_counted,
                        peak, what, target.notes.get(name, ""), extra))
    if target.state_bytes is not None:
        rows.append(Row(case, "state", mem_bytes=target.state_bytes, mem_what=target.state_what))
    return rows
