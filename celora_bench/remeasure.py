"""Re-measure before judging: which cases of a group were measured too noisily to judge.

A case is re-measured (its whole interleaved group, with a longer budget) when a
row the verdict reads has its spread flag set (IQR/median > 10%), or when its
whole forward+backward took more than GAP_MARGIN (and GAP_MIN_S) longer than
the sum of its parts timed alone: the parts are the same operations, so a larger gap means the
phase was timed in a bad moment (seen: q_proj's fwd+bwd at 108 ms against 60 ms
for its parts). Every attempt is kept in the rows (extra["attempts"]); the last
attempt is the one judged.
"""
from __future__ import annotations

from dataclasses import replace

from celora_bench.cases import Row
from celora_bench.timing import TimingBudget

JUDGED = ("fwd+bwd", "bwd.grad_x_frozen", "selection")   # the rows a layer verdict reads
GAP_MARGIN = 0.25           # whole fwd+bwd over the sum of its parts by more than 25%
GAP_MIN_S = 0.005           # and by more than 5 ms: below that the gap is framework overhead (tiny
                            # layers, GPU launches: the launch-bound mark says so), not a bad moment
MAX_ATTEMPTS = 3            # the first measurement and up to two re-measurements
PARTS_PREFIX = ("fwd.", "bwd.")


def reasons(rows: list[Row], judged: tuple[str, ...] = JUDGED) -> dict[str, list[str]]:
    """case id -> why it must be measured again (empty dict: the group can be judged)."""
    out: dict[str, list[str]] = {}
    by_case: dict[str, dict[str, Row]] = {}
    for r in rows:
        by_case.setdefault(r.case.id, {})[r.component] = r
    for cid, comps in by_case.items():
        why = [f"{name} IQR/median {comps[name].time.iqr / comps[name].time.median:.0%}"
               for name in judged if name in comps and comps[name].time and comps[name].time.spread]
        whole = comps.get("fwd+bwd")
        parts = [r.time.median for n, r in comps.items() if n.startswith(PARTS_PREFIX) and r.time]
        if whole is not None and whole.time and parts:
            gap = whole.time.median / sum(parts) - 1
            if gap > GAP_MARGIN and whole.time.median - sum(parts) > GAP_MIN_S:
                why.append(f"fwd+bwd {gap:+.0%} over the sum of its parts")
        if why:
            out[cid] = why
    return out


def longer(budget: TimingBudget, attempt: int) -> TimingBudget:
    """The budget of re-measurement ``attempt`` (1, 2, ...): twice the time per callable."""
    f = 2
    return replace(budget, min_s=budget.min_s * f, max_s=budget.max_s * f,
                   cuda_reps=budget.cuda_reps * f)


def with_attempts(new: list[Row], old: list[Row], why: dict[str, list[str]], attempt: int) -> list[Row]:
    """The new rows, each carrying the samples of every earlier attempt of its (case, component)."""
    before = {(r.case.id, r.component): r for r in old}
    out = []
    for r in new:
        prev = before.get((r.case.id, r.component))
        history = list(prev.extra.get("attempts", [])) if prev is not None else []
        if prev is not None and prev.samples:
            history.append({"attempt": attempt - 1, "samples": list(prev.samples),
                            "reasons": why.get(r.case.id, [])})
        out.append(replace(r, extra={**r.extra, "attempts": history, "judged_attempt": attempt})
                   if history else r)
    return out
