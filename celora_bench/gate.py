"""The gate's recheck: a time regression seen in one pass is measured again and judged on every attempt.

Timing on a shared machine has rare bad moments: in one CI run a single layer
ratio of 770 came out 17% over the baseline (15% allowed) with nothing
changed. Each flagged time finding is therefore measured again, its whole
interleaved group, with the same budget the baseline was measured with (so the
two sides are measured alike), and judged on the median of all its attempts
(the first pass and every recheck): one bad moment among three does not fail
CI, and one lucky recheck does not clear a real slowdown, which shows in most
attempts. Rechecks stop as soon as the median is decided. FLOP, memory and
case-set findings are exact and are never rechecked.
"""
from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Callable

from celora_bench.compare import Finding, Rule, block_id, compare, group_of
from celora_bench.results import Run

TIMED = ("ratio", "time.median", "time.min")


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


def over(f: Finding, value: float) -> bool:
    """Whether a candidate value of this finding is over its rule's threshold."""
    return value > f.limit


def _decided(f: Finding, values: list[float], times: int) -> bool:
    """True once the remaining rechecks cannot change which side of the line the median falls on."""
    n_over = sum(over(f, v) for v in values)
    total = 1 + times
    need = total // 2 + 1
    return n_over >= need or (len(values) - n_over) >= need


def recheck(base: Run, cand: Run, findings: list[Finding], rules: list[Rule],
            remeasure: Callable[[list[str], int], Run], times: int) -> list[Finding]:
    """The findings with each timed regression judged on the median of its first pass and its rechecks.

    remeasure(case_ids, i) measures those cases again and returns the run. Up to
    ``times`` rechecks; the values seen are kept in Finding.rechecks.
    """
    firsts = {_key(f): f for f in findings if f.regression and is_timed(f)}
    seen: dict[tuple, list[float]] = {k: [] for k in firsts}
    live = set(firsts)
    for i in range(1, times + 1):
        if not live:
            break
        ids = recheck_ids([firsts[k] for k in live], cand)
        again = {_key(f): f for f in compare(base, remeasure(ids, i), rules)[0]}
        for k in list(live):
            f = again.get(k)
            if f is not None:               # not measured again (an error): nothing to add
                seen[k].append(f.candidate)
            if _decided(firsts[k], [firsts[k].candidate] + seen[k], times):
                live.discard(k)

    def judged(f: Finding) -> Finding:
        values = [f.candidate] + seen[_key(f)]
        return replace(f, regression=over(f, statistics.median(values)), rechecks=tuple(seen[_key(f)]))
    return [judged(f) if _key(f) in seen else f for f in findings]
