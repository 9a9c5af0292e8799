"""The gate's recheck: a time regression seen in one pass must show again before it fails CI.

Timing on a shared machine has rare bad moments: in one CI run a single layer
ratio of 770 came out 17% over the baseline (15% allowed) with nothing
changed. A real slowdown (an index refreshed every step, a silent dense
fallback) shows in every measurement, so each flagged time finding is measured
again, interleaved as before and with a longer budget, and stays a regression
only if every recheck is over the threshold too. FLOP, memory and case-set
findings are exact and are never rechecked.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from celora_bench.compare import Finding, Rule, block_id, compare, group_of
from celora_bench.results import Run
from celora_bench.timing import TimingBudget

TIMED = ("ratio", "time.median", "time.min")
RECHECK_BUDGET = TimingBudget(min_s=0.25, max_s=1.0)


def is_timed(f: Finding) -> bool:
    return f.rule.split(":")[0] in TIMED


def _key(f: Finding) -> tuple[str, str, str]:
    return f.rule, f.case_id, f.component


def recheck_ids(findings: list[Finding], run: Run) -> list[str]:
    """Every case timed together with a flagged one: its dense partner, and every layer of a flagged block."""
    flagged = {f.case_id for f in findings if f.regression and is_timed(f)}
    groups = set()
    for r in run.rows:
        if r.case.id in flagged or block_id(r.case) in flagged:
            groups.add(group_of(r.case))
    return sorted({r.case.id for r in run.rows if group_of(r.case) in groups})


def recheck(base: Run, cand: Run, findings: list[Finding], rules: list[Rule],
            remeasure: Callable[[list[str], int], Run], times: int) -> list[Finding]:
    """The findings with each timed regression rechecked up to ``times`` times.

    remeasure(case_ids, i) measures those cases again and returns the run. A
    finding stays a regression only if it is one in every recheck; the values
    seen are kept in Finding.rechecks.
    """
    seen: dict[tuple, list[float]] = {_key(f): [] for f in findings if f.regression and is_timed(f)}
    live = set(seen)
    for i in range(1, times + 1):
        if not live:
            break
        ids = recheck_ids([f for f in findings if _key(f) in live], cand)
        again = {_key(f): f for f in compare(base, remeasure(ids, i), rules)[0]}
        for k in list(live):
            f = again.get(k)
            if f is None:                  # not measured again (an error): keep it as it was
                continue
            seen[k].append(f.candidate)
            if not f.regression:
                live.discard(k)
    return [replace(f, regression=_key(f) in live, rechecks=tuple(seen[_key(f)]))
            if _key(f) in seen else f for f in findings]
