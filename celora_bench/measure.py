"""Measures cases from the callables a suite hands over: time, FLOPs and memory per component.

The engine knows nothing of CE-LoRA. A suite's setup(case) gives it a Target:
plain callables for each part (timed alone, on tensors captured from a real
backward), callables for the whole phases (timed in place), one callable that
runs a real forward+backward for counting, and the analytic FLOPs.

``prepare`` does everything that is measured once (FLOPs by scope, memory of each phase) and hands
back the group's timing slots; celora_bench.rounds times the slots
of every group alive at once in rounds; ``rows`` turns the group's slots into result rows.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import Callable

from celora_bench import flops as F
from celora_bench import memory
from celora_bench.cases import Case, Row
from celora_bench.rounds import Slot
from celora_bench.timing import launch_bound

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
    notes: component -> a note for its row, or a callable making it (prepare calls it: a worker that only
        times never pays for it).
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
    notes: dict[str, str | Callable[[], str]] = field(default_factory=dict)   # a costly note: a callable
    flop_rows: dict[str, str | None] = field(default_factory=dict)
    count_row: str = "fwd+bwd"
    extra: dict[str, dict] = field(default_factory=dict)   # component -> facts merged into its row's extra
    bytes: dict[str, int] = field(default_factory=dict)    # component -> analytic bytes moved (the roofline's)

    @property
    def timed(self) -> dict[str, Callable]:
        return {**self.parts, **self.whole}


@dataclass
class Prepared:
    """One group after its one-off measurements: what rows() needs besides the timing slots."""

    items: list[tuple[Case, Target]]
    profs: list[F.ScopeProfile]
    totals: list[int | None]
    peaks: list[dict[str, tuple[int | None, str]]]
    slots: list[Slot]
    alone: list[dict[str, F.ScopeProfile]]      # parts outside the steady-state step, counted on their own


def prepare(items: list[tuple[Case, Target]], group: int) -> Prepared:
    """FLOPs by scope and in total (one profiled forward+backward each; a part the step does not run, such
    as an index refresh, profiled alone), the peak memory of every whole phase (its first calls); and a
    timing slot per timed callable (celora_bench.rounds warms them up)."""
    for _, t in items:          # a costly note (fvcore's trace) is made here, once per case in a run
        t.notes = {k: v() if callable(v) else v for k, v in t.notes.items()}
    none = F.ScopeProfile({}, {}, {}, None)
    profs = [F.profile_scopes(t.count, t.scopes, c.device) if t.count else none for c, t in items]
    alone = [{name: F.profile_scopes(fn, (), c.device) for name, fn in t.parts.items()
              if t.count is not None and name not in prof.flops} for (c, t), prof in zip(items, profs)]
    totals = [F.torch_total(t.count) if t.count else None for _, t in items]
    peaks: list[dict] = []
    for case, target in items:
        peaks.append({name: memory.phase_peak(fn, case.device) for name, fn in target.whole.items()})
    return Prepared(items, profs, totals, peaks, slots_of(items, group), alone)


def slots_of(items: list[tuple[Case, Target]], group: int) -> list[Slot]:
    """A timing slot per timed callable of every case (a worker that only times needs nothing else)."""
    return [Slot(group, case.id, name, fn) for case, target in items for name, fn in target.timed.items()]


def rows(p: Prepared) -> list[Row]:
    """Rows for every case of the group from what its slots measured so far."""
    slot = {s.key: s for s in p.slots}
    out: list[Row] = []
    for i, (case, target) in enumerate(p.items):
        counted, allocated, seconds = p.profs[i].flops, p.profs[i].bytes, p.profs[i].seconds
        first = len(out)
        has_count = target.count is not None

        def timed(name):
            s = slot[(case.id, name)]
            return dict(samples=tuple(s.samples), rounds=tuple(s.rounds))

        for name in target.parts:
            fl, al, note = counted.get(name), allocated.get(name, 0), target.notes.get(name, "")
            if name in p.alone[i]:                  # not in a steady-state step: counted alone, in prepare
                alone = p.alone[i][name]
                fl, al = sum(alone.flops.values()), sum(alone.bytes.values())
                note = "; ".join(x for x in (note, "counted alone: not part of a steady-state step") if x)
            out.append(Row(case, name, flops_analytic=target.analytic.get(name),
                           flops_counted=fl if has_count else None, mem_bytes=al if has_count else None,
                           mem_what=PROFILER_WHAT, note=note, **timed(name)))
        for name, (source, divisor) in target.amortized.items():
            src = slot.get((case.id, source))
            if src is not None:
                out.append(Row(case, name, tuple(t / divisor for t in src.samples), note=f"{source} / {divisor}",
                               rounds=tuple(src.rounds), extra={"amortized_from": [source, divisor]}))
        for name in target.whole:
            peak, what = p.peaks[i][name]
            whole_total = name == target.count_row and has_count
            out.append(Row(case, name, flops_analytic=target.analytic.get(name),
                           flops_counted=p.totals[i] if whole_total else None, mem_bytes=peak, mem_what=what,
                           note=target.notes.get(name, ""),
                           extra={"other_flops": counted.get("other", 0)} if whole_total else {}, **timed(name)))
        for name, scope in target.flop_rows.items():
            out.append(Row(case, name, (), target.analytic.get(name),
                           counted.get(scope, 0) if scope and has_count else None,
                           note=target.notes.get(name, ""),
                           extra={"profiled_s": seconds.get(scope)} if scope else {}))
        out[first:] = [_with_kernel(replace(r, extra={**r.extra, **target.extra.get(r.component, {}),
                                                      **_bytes(target, r.component)}),
                                    slot.get((case.id, r.component))) for r in out[first:]]
        if has_count:
            out.append(Row(case, "step.alloc", mem_bytes=sum(allocated.values()), mem_what=STEP_WHAT,
                           extra={"flops_by_scope": counted, "bytes_by_scope": allocated,
                                  "seconds_by_scope": seconds, "profiled_wall_s": p.profs[i].wall_s,
                                  "profiled_device_s": p.profs[i].device_s}))
        if target.state_bytes is not None:
            out.append(Row(case, "state", mem_bytes=target.state_bytes, mem_what=target.state_what))
    return out


def _bytes(target: Target, component: str) -> dict:
    return {"bytes_analytic": target.bytes[component]} if component in target.bytes else {}


def _with_kernel(row: Row, slot: Slot | None) -> Row:
    """The row with its device-time samples, their rounds and the launch-bound mark (CUDA only)."""
    if slot is None or not slot.kernel or not row.samples:
        return row
    k = statistics.median(slot.kernel)
    return replace(row, extra={**row.extra, "kernel_samples": list(slot.kernel),
                               "kernel_rounds": list(slot.kernel_rounds), "kernel_s": k,
                               "launch_bound": launch_bound(statistics.median(row.samples), k)})


def measure_group(items: list[tuple[Case, Target]], budget, threads: int, seed: int = 0) -> list[Row]:
    """One group alone: prepared, warmed up and timed for budget.rounds rounds (no extension, no verdict):
    for scripts and tests; runs go through celora_bench.runner."""
    from celora_bench.rounds import Sampler

    p = prepare(items, 0)
    sampler = Sampler(p.slots, items[0][0].device, budget, threads, seed)
    sampler.warm_up()
    for _ in range(budget.fixed or budget.rounds):
        sampler.round()
    return rows(p)
