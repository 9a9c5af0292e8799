"""convergence's verdict: each arm's final held-out loss (and accuracy) against LoRA's, paired by seed."""
from __future__ import annotations

import math
import statistics

from celora_bench import intervals as I
from celora_bench.cases import Row
from celora_bench.suite import Check, CheckId
from suites.convergence import medium
from suites.text_task import weights_label

ARMS = ("lora", "paper", "all", "no-sample-k", "no-sample-v", "svd0", "tau1", "tau50", "tau1000", "residual_norm")


TASKS = ("lm", "arith")

PAPER_CHECK = CheckId("paper", "vs LoRA: paper preset", headline=True)
ABLATION_CHECK = CheckId("ablation", "vs LoRA: ablation")
ORDER_CHECK = CheckId("order", "arm order")
KV_CHECK = CheckId("kv", "paper: sampling K or V hurts more")
CHECKS = (PAPER_CHECK, ABLATION_CHECK, ORDER_CHECK, KV_CHECK) + medium.CHECKS


LOSS_TOL = 0.01          # of LoRA's mean final eval loss


ACC_TOL = 1.0            # accuracy points


def _task_of(r: Row) -> str:
    return r.case.param("task", "lm")


def finals(rows: list[Row], task: str = "lm") -> dict[str, dict[int, float]]:
    """arm -> seed -> final metric of the task (eval loss for lm, accuracy % for arith)."""
    out: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.component == "final" and _task_of(r) == task:
            out.setdefault(r.case.provider, {})[r.case.param("seed")] = r.extra[r.extra.get("metric", "eval_loss")]
    return out


def _msd(v):
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def _paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int]:
    """Mean and standard error of a - b over the seeds both have (same seed, same data)."""
    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    if len(d) < 2:
        return (d[0] if d else float("nan")), float("nan"), len(d)
    return statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d)), len(d)


def delta(a: dict[int, float], b: dict[int, float]) -> tuple[float, float | None, float | None, int]:
    """Paired Δ = a - b: mean, and the interval mean ± t(0.975, n-1)·SE (None with fewer than 2 seeds)."""
    md, se, n = _paired(a, b)
    if n < 2:
        return md, None, None, n
    h = I.t_quantile(0.975, n - 1) * se
    return md, md - h, md + h, n


def within(lo: float | None, hi: float | None, tol: float) -> str:
    """PASS: the interval lies within ±tol; FAIL: wholly outside it; NOISE: it straddles a line; INFO: no
    interval (fewer than 2 seeds)."""
    return "INFO" if lo is None else I.Interval(0.0, lo, hi).within(-tol, tol)


def _smoke(rows: list[Row]) -> bool:
    seeds = {r.case.param("seed") for r in rows}
    return len(seeds) < 3


def verdict(rows: list[Row], machine: dict | None = None) -> list[Check]:
    """Per arm and task: Δ vs LoRA, paired over seeds, judged against ±tolerance (see the module docstring); a
    --medium run: the equivalence verdict fixed before it ran (suites/convergence/medium.py)."""
    if medium.is_medium(rows):
        return medium.verdict(rows)
    checks = []
    smoke = _smoke(rows)
    for task in [k for k in TASKS if any(_task_of(r) == k for r in rows)]:
        f = finals(rows, task)
        lora = f.get("lora", {})
        if not lora:
            continue
        acc = task == "arith"
        tol = ACC_TOL if acc else LOSS_TOL * statistics.fmean(lora.values())
        unit = "accuracy points" if acc else "nats/token"
        metric = "Δ accuracy (points, paired mean)" if acc else "Δ eval loss (paired mean)"
        label = weights_label(next(r.case for r in rows if _task_of(r) == task))
        for arm in [a for a in ARMS if a in f and a != "lora"]:
            md, lo, hi, n = delta(f[arm], lora)
            m, s_ = _msd(list(f[arm].values()))
            lm, ls = _msd(list(lora.values()))
            status = within(lo, hi, tol)
            side = "" if lo is None or status != "FAIL" else (
                " (better than LoRA)" if (hi < -tol) != acc else " (worse than LoRA)")
            iv = (f"smoke run ({n} seed{'s' * (n != 1)}): no interval" if lo is None
                  else f"95% interval [{lo:+.4f}, {hi:+.4f}]{side}")
            checks.append(Check(PAPER_CHECK if arm == "paper" else ABLATION_CHECK,
                                f"{arm}, {n} seeds, {label}" + (", smoke run" if smoke else ""),
                                metric, md, f"within ±{tol:.4g} {unit}", status,
                                f"{iv}; {arm} {m:.4f} ± {s_:.4f}, LoRA {lm:.4f} ± {ls:.4f} (mean ± sd)",
                                lo=lo, hi=hi, kind="measured", labels=(("task", task), ("arm", arm))))
        means = {a: statistics.fmean(v.values()) for a, v in f.items() if v}
        order = " < ".join(f"{a} {means[a]:.4f}" for a in sorted(means, key=means.get, reverse=acc))
        checks.append(Check(ORDER_CHECK, "all arms" + (", smoke run" if smoke else ""),
                            "order, best first", None, "reported", "INFO", order, kind="info",
                            labels=(("task", task),)))
        for arm, proj in (("no-sample-k", "K"), ("no-sample-v", "V")):
            if arm in f and "all" in f:
                md, lo, hi, n = delta(f[arm], f["all"])
                if lo is None:
                    said = "one seed: no interval (smoke run)"
                elif lo <= 0 <= hi:
                    said = "the interval holds 0: neither confirms nor refutes the paper"
                else:
                    better = (md > 0) if acc else (md < 0)
                    said = "matches the paper's claim" if better else "contradicts the paper's claim"
                checks.append(Check(KV_CHECK,
                                    f"No-Sample-{proj} vs all sampled", metric.replace("(", "vs all ("), md,
                                    ("> 0" if acc else "< 0") + " in the paper", "INFO",
                                    said + ("" if lo is None else f"; 95% interval [{lo:+.4f}, {hi:+.4f}]"),
                                    lo=lo, hi=hi, kind="info", labels=(("task", task), ("arm", arm))))
    return checks

