"""Measures cases from the callables a suite hands over: time, FLOPs and memory per component.

The engine knows nothing of CE-LoRA. A suite's setup(case) gives it a Target:
plain callables for each part (timed alone, on tensors captured from a real
backward), callables for the whole phases (timed in place), one callable that
runs a real forward+backward for counting, and the analytic FLOPs. Cases
measured as a group have each component timed interleaved across the group,
so the ratios between them are measured side by side.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import Callable

from celora_bench import flops as F
from celora_bench import memory
from celora_bench.cases import Case, Row
from celora_bench.timing import TimingBudget, kernel_samples, launch_bound, time_interleaved

PROFILER_WHAT = "bytes allocated by ops inside the component (profiler, gross, not a peak)"
STEP_WHAT = "bytes allocated by every op of one steady-state forward+backward (profiler, gross; deterministic)"


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
    flop_rows: rows of FLOPs only (no timing): name -> the counted scope it
        reads ("other" for everything outside the scopes; None: analytic only),
        with the profiler's seconds in that scope in extra.
    state_bytes: persistent bytes the provider keeps beyond W0 (None: not applicable).
    extra: component -> facts about it (e.g. the kept k) merged into its row's extra.
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
    flop_rows: dict[str, str | None] = field(default_factory=dict)
    count_row: str = "fwd+bwd"
    extra: dict[str, dict] = field(default_factory=dict)   # component -> facts merged into its row's extra


def measure_group(items: list[tuple[Case, Target]], budget: TimingBudget, threads: int) -> list[Row]:
    """Rows for every case of the group; each component is timed across the group A B A B."""
    device = items[0][0].device
    none = F.ScopeProfile({}, {}, {}, None)
    profs = [F.profile_scopes(t.count, t.scopes, c.device) if t.count else none for c, t in items]
    totals = [F.torch_total(t.count) if t.count else None for _, t in items]
    counted, allocated, seconds = ([p.flops for p in profs], [p.bytes for p in profs],
                                   [p.seconds for p in profs])

    times: list[dict] = [{} for _ in items]
    kernels: list[dict] = [{} for _ in items]
    peaks: list[dict] = [{} for _ in items]
    names = list(dict.fromkeys(n for _, t in items for n in (*t.parts, *t.whole)))
    for name in names:           # in declaration order; a whole phase's memory right after its timing
        idx = [i for i, (_, t) in enumerate(items) if name in t.parts or name in t.whole]
        fns = [{**items[i][1].parts, **items[i][1].whole}[name] for i in idx]
        for i, stats in zip(idx, time_interleaved(fns, device, budget, threads)):
            times[i][name] = stats
        if device.startswith("cuda"):     # CPU ops run synchronously: no launch queue to hide behind
            for i, fn in zip(idx, fns):
                kernels[i][name] = kernel_samples(fn, device)
        for i, fn in zip(idx, fns):
            if name in items[i][1].whole:
                peaks[i][name] = memory.phase_peak(fn, items[i][0].device)

    rows: list[Row] = []
    for i, (case, target) in enumerate(items):
        first = len(rows)
        has_count = target.count is not None
        for name, fn in target.parts.items():
            fl, al, note = counted[i].get(name), allocated[i].get(name, 0), target.notes.get(name, "")
            if has_count and fl is None:
                # not in a steady-state step (e.g. an index refresh): count the part alone
                alone = F.profile_scopes(fn, (), case.device)
                fl, al = sum(alone.flops.values()), sum(alone.bytes.values())
                note = "; ".join(x for x in (note, "counted alone: not part of a steady-state step") if x)
            rows.append(Row(case, name, times[i][name].samples, target.analytic.get(name),
                            fl if has_count else None, al if has_count else None, PROFILER_WHAT, note))
        for name, (source, divisor) in target.amortized.items():
            if source in times[i]:
                rows.append(Row(case, name, tuple(s / divisor for s in times[i][source].samples),
                                note=f"{source} / {divisor}"))
        for name in target.whole:
            peak, what = peaks[i][name]
            whole_total = name == target.count_row and has_count
            rows.append(Row(case, name, times[i][name].samples, target.analytic.get(name),
                            totals[i] if whole_total else None, peak, what, target.notes.get(name, ""),
                            {"other_flops": counted[i].get("other", 0)} if whole_total else {}))
        for name, scope in target.flop_rows.items():
            rows.append(Row(case, name, (), target.analytic.get(name),
                            counted[i].get(scope, 0) if scope and has_count else None,
                            note=target.notes.get(name, ""),
                            extra={"profiled_s": seconds[i].get(scope)} if scope else {}))
        rows[first:] = [_with_kernel(replace(r, extra={**r.extra, **target.extra[r.component]})
                                     if r.component in target.extra else r, kernels[i].get(r.component))
                        for r in rows[first:]]
        if has_count:
            rows.append(Row(case, "step.alloc", mem_bytes=sum(allocated[i].values()), mem_what=STEP_WHAT,
                            extra={"flops_by_scope": counted[i], "bytes_by_scope": allocated[i],
                                   "seconds_by_scope": seconds[i], "profiled_wall_s": profs[i].wall_s,
                                   "profiled_device_s": profs[i].device_s}))
        if target.state_bytes is not None:
            rows.append(Row(case, "state", mem_bytes=target.state_bytes, mem_what=target.state_what))
    return rows


def retime(items: list[tuple[Case, Target]], names: set[str], budget: TimingBudget,
           threads: int) -> dict[tuple[str, str], tuple[float, ...]]:
    """(case id, component) -> new time samples of the named components, each timed again across the
    group A B A B as measure_group timed it (derived rows such as "selection.amortized" follow their source)."""
    device = items[0][0].device
    out = {}
    for name in names:
        idx = [i for i, (_, t) in enumerate(items) if name in t.parts or name in t.whole]
        fns = [{**items[i][1].parts, **items[i][1].whole}[name] for i in idx]
        for i, stats in zip(idx, time_interleaved(fns, device, budget, threads)):
            case, target = items[i]
            out[(case.id, name)] = stats.samples
            for derived, (source, divisor) in target.amortized.items():
                if source == name:
                    out[(case.id, derived)] = tuple(t / divisor for t in stats.samples)
    return out


def _with_kernel(row: Row, samples: tuple[float, ...] | None) -> Row:
    """The row with its device-time samples and the launch-bound mark (CUDA only)."""
    if not samples or not row.samples:
        return row
    k = statistics.median(samples)
    return replace(row, extra={**row.extra, "kernel_samples": list(samples), "kernel_s": k,
                               "launch_bound": launch_bound(statistics.median(row.samples), k)})


def measure(case: Case, target: Target, budget: TimingBudget, threads: int) -> list[Row]:
    return measure_group([(case, target)], budget, threads)
