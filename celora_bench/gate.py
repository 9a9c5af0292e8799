"""The gate's recheck: a time regression seen in one pass is measured again and judged on the rechecks.

Timing on a shared machine has rare bad moments: in one CI run a single layer
ratio of 770 came out 17% over the baseline (15% allowed) with nothing
changed. Each flagged time finding is therefore measured again, its whole
interleaved group, ``times`` times, with the same budget, threads and malloc
mode the run and the baseline were measured with, and judged on the median of
those rechecks together (the mean of the middle two for an even count). The
first pass is left out of the judgement: it was picked for being over the line,
so it is the one attempt that is biased. One lucky recheck does not clear a
real slowdown (a +20% regression with rechecks at +12% and +22% stays one),
one bad moment does not fail CI. FLOP, memory and case-set findings are exact
and are never rechecked.
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


def recheck(base: Run, cand: Run, findings: list[Finding], rules: list[Rule],
            remeasure: Callable[[list[str], int], Run], times: int) -> list[Finding]:
    """The findings with each timed regression judged on the median of its ``times`` rechecks.

    remeasure(case_ids, i) measures those cases again and returns the run; the
    values seen are kept in Finding.rechecks. A finding that could not be measured
    again (an error) keeps its first-pass judgement.
    """
    flagged = [f for f in findings if f.regression and is_timed(f)]
    seen: dict[tuple, list[float]] = {_key(f): [] for f in flagged}
    if flagged:
        ids = recheck_ids(flagged, cand)
        for i in range(1, times + 1):
            again = {_key(f): f for f in compare(base, remeasure(ids, i), rules)[0]}
            for k in seen:
                if k in again:
                    seen[k].append(again[k].candidate)

    def judged(f: Finding) -> Finding:
        values = seen[_key(f)]
        return replace(f, regression=over(f, statistics.median(values)) if values else f.regression,
                       rechecks=tuple(values))
    return [judged(f) if _key(f) in seen else f for f in findings]
