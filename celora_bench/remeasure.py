"""Re-measure before judging: which rows of a group were measured too noisily to judge.

A component is timed again across its whole interleaved group, with twice the
budget, when a row the verdict reads (G_y·W0 or fwd+bwd of dense LoRA or
CE-LoRA) has its spread flag set (IQR/median > 10%), or, for fwd+bwd, when the
whole phase took more than GAP_MARGIN (and GAP_MIN_S) longer than the sum of its
parts timed alone: the parts are the same operations, so a larger gap means the
phase was timed in a bad moment (seen: q_proj's fwd+bwd at 108 ms against 60 ms
for its parts). Up to MAX_ATTEMPTS in all; every attempt's samples are kept in
the row (extra["attempts"], with the reasons) and the last is judged.
"""
from __future__ import annotations

from dataclasses import replace

from celora_bench.cases import Row
from celora_bench.timing import TimingBudget

JUDGED = ("fwd+bwd", "bwd.grad_x_frozen")   # the timed rows a layer verdict reads (selection: amortized, and
                                            # its spread is its own: one refresh is short and bimodal)
PROVIDERS = ("dense", "celora")             # the providers the verdict judges
GAP_MARGIN = 0.25           # whole fwd+bwd over the sum of its parts by more than 25%
GAP_MIN_S = 0.005           # and by more than 5 ms: below that the gap is framework overhead (tiny
                            # layers, GPU launches: the launch-bound mark says so), not a bad moment
MAX_ATTEMPTS = 3            # the first measurement and up to two re-measurements
PARTS_PREFIX = ("fwd.", "bwd.")


def reasons(rows: list[Row], judged: tuple[str, ...] = JUDGED) -> dict[tuple[str, str], str]:
    """(case id, component) -> why it must be timed again (empty: the group can be judged)."""
    out: dict[tuple[str, str], str] = {}
    by_case: dict[str, dict[str, Row]] = {}
    for r in rows:
        if r.case.provider in PROVIDERS:
            by_case.setdefault(r.case.id, {})[r.component] = r
    for cid, comps in by_case.items():
        for name in judged:
            t = comps[name].time if name in comps else None
            if t and t.spread:
                out[(cid, name)] = f"{name} IQR/median {t.iqr / t.median:.0%}"
        whole = comps.get("fwd+bwd")
        parts = [r.time.median for n, r in comps.items() if n.startswith(PARTS_PREFIX) and r.time]
        if "fwd+bwd" in judged and whole is not None and whole.time and parts:
            gap = whole.time.median / sum(parts) - 1
            if gap > GAP_MARGIN and whole.time.median - sum(parts) > GAP_MIN_S:
                out[(cid, "fwd+bwd")] = f"fwd+bwd {gap:+.0%} over the sum of its parts"
    return out


def longer(budget: TimingBudget, attempt: int) -> TimingBudget:
    """The budget of re-measurement ``attempt`` (1, 2, ...): twice the time per callable."""
    f = 2
    return replace(budget, min_s=budget.min_s * f, max_s=budget.max_s * f,
                   cuda_reps=budget.cuda_reps * f)


def with_attempts(rows: list[Row], new: dict[tuple[str, str], tuple[float, ...]],
                  why: dict[tuple[str, str], str], attempt: int) -> list[Row]:
    """The rows with the new samples of every re-timed (case, component), each carrying the samples of its
    earlier attempts and why each was timed again."""
    out = []
    for r in rows:
        key = (r.case.id, r.component)
        if key not in new:
            out.append(r)
            continue
        history = list(r.extra.get("attempts", []))
        history.append({"attempt": attempt - 1, "samples": list(r.samples), "reason": why.get(key, "group")})
        out.append(replace(r, samples=new[key], extra={**r.extra, "attempts": history, "judged_attempt": attempt}))
    return out
