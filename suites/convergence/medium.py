"""convergence --medium: the equivalence verdict, decided before the run, the step time measured in the same
run, and the run's progress.

The rule, fixed here before the committed run and not to be changed after it (tests/test_convergence_medium.py
pins every constant, so a change fails a test and makes `celora-bench reverdict --check` call the committed
verdict stale):

- The metric: per seed, an arm's final value minus LoRA's (same seed: same LoRA init where the shapes agree,
  same training problems in the same order, same 300 held-out problems), for the exact-match accuracy
  (points) and the held-out answer loss (nats/token).
- The test: two one-sided t-tests at ALPHA = 5% each (TOST, Schuirmann 1987), i.e. the 90% paired
  t-interval mean ± t(0.95, n-1)·sd/√n over n seeds, against the margins ±ACC_TOL accuracy points and
  ±LOSS_TOL × LoRA's mean final held-out loss.
- The verdict per arm and metric: "equivalent" (PASS) when the interval lies inside the margins; "worse" (FAIL)
  when it lies wholly beyond the margin on the worse side (lower accuracy, higher loss); "better" (PASS: it
  keeps LoRA's accuracy, but is not equivalent) when wholly beyond the other margin; else "undecided" (NOISE).
- How many seeds would decide it: the least n with t(0.95, n-1)·sd/√n < | margin - |mean| |, at the observed
  mean and sd of the differences (up to MAX_SEEDS; more: "over MAX_SEEDS"; mean exactly on the margin: never).
- Step time: each run's median seconds per training step (forward, backward, optimizer; the evaluations are
  not in it); per arm the geometric mean over seeds of those medians with a 95% t-interval of their logs
  (a time stays positive), and the speed-up
  against LoRA, LoRA's median / the arm's, paired by seed (the arms of a seed run one after another), as a
  geometric mean with a 95% t-interval of the logs.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass

from celora_bench import distributed
from celora_bench import intervals as I
from celora_bench.cases import Row
from celora_bench.suite import Check, CheckId
from suites.text_task import weights_label

ACC_TOL = 1.0             # accuracy points
LOSS_TOL = 0.01           # of LoRA's mean final held-out loss
ALPHA = 0.05              # each one-sided test: the 90% two-sided interval
MAX_SEEDS = 200
ORDER = ("lora", "paper", "all", "svd0")
CURVE_N = 100             # the held-out loss curve's looks read the first CURVE_N test problems (the speed of a look)
METRICS = (("accuracy", "accuracy (%)", True), ("eval_loss", "held-out answer loss (nats/token)", False))


@dataclass(frozen=True)
class Decision:
    """The equivalence test of one arm and metric: the paired differences' mean, sd, 90% interval, verdict."""

    mean: float
    sd: float
    lo: float | None
    hi: float | None
    n: int
    tol: float
    word: str           # equivalent, worse, better, undecided (or "one seed" without an interval)
    seeds: int | None   # seeds that would decide it at the observed mean and sd (None: never, or over MAX_SEEDS)

    @property
    def status(self) -> str:
        return {"equivalent": "PASS", "better": "PASS", "worse": "FAIL", "undecided": "NOISE"}.get(self.word, "INFO")


def seeds_to_decide(mean: float, sd: float, tol: float, alpha: float = ALPHA) -> int | None:
    """The least n >= 2 whose interval half-width t(1-alpha, n-1)·sd/√n is below the distance from |mean| to
    the margin: enough seeds to decide, were the mean and sd to stay as observed. None: never (the mean on
    the margin) or more than MAX_SEEDS."""
    gap = abs(tol - abs(mean))
    if gap == 0:
        return None
    if sd == 0:
        return 2
    for n in range(2, MAX_SEEDS + 1):
        if I.t_quantile(1 - alpha, n - 1) * sd / math.sqrt(n) < gap:
            return n
    return None


def decide(diffs: list[float], tol: float, higher_is_better: bool) -> Decision:
    """TOST on the paired differences arm - LoRA against ±tol (see the module docstring)."""
    n = len(diffs)
    mean = statistics.fmean(diffs) if diffs else float("nan")
    if n < 2:
        return Decision(mean, 0.0, None, None, n, tol, "one seed", None)
    sd = statistics.stdev(diffs)
    h = I.t_quantile(1 - ALPHA, n - 1) * sd / math.sqrt(n)
    lo, hi = mean - h, mean + h
    worse_side = hi < -tol if higher_is_better else lo > tol
    better_side = lo > tol if higher_is_better else hi < -tol
    word = ("equivalent" if -tol <= lo and hi <= tol else "worse" if worse_side else "better" if better_side
            else "undecided")
    return Decision(mean, sd, lo, hi, n, tol, word, seeds_to_decide(mean, sd, tol))


def is_medium(rows: list[Row]) -> bool:
    return any(r.case.param("size") == "medium" for r in rows)


def _finals(rows: list[Row], metric: str) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.component == "final" and metric in r.extra:
            out.setdefault(r.case.provider, {})[r.case.param("seed")] = r.extra[metric]
    return out


def _step_medians(rows: list[Row]) -> dict[str, dict[int, float]]:
    """arm -> seed -> the run's median seconds per training step."""
    out: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.component == "step" and r.samples:
            out.setdefault(r.case.provider, {})[r.case.param("seed")] = statistics.median(r.samples)
    return out


def _t95(values: list[float]) -> tuple[float, float | None, float | None]:
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None, None
    h = I.t_quantile(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return m, m - h, m + h


def step_times(rows: list[Row]) -> dict[str, dict]:
    """arm -> {ms, lo, hi (95% over seeds), speedup, s_lo, s_hi (vs LoRA, paired by seed), seeds}."""
    med = _step_medians(rows)
    out = {}
    for arm in [a for a in ORDER if a in med] + sorted(set(med) - set(ORDER)):
        lm, llo, lhi = _t95([math.log(v * 1e3) for v in med[arm].values()])
        ms, lo, hi = math.exp(lm), None if llo is None else math.exp(llo), None if lhi is None else math.exp(lhi)
        seeds = sorted(set(med[arm]) & set(med.get("lora", {})))
        logs = [math.log(med["lora"][s] / med[arm][s]) for s in seeds]
        g, glo, ghi = _t95(logs) if logs else (float("nan"), None, None)
        out[arm] = dict(ms=ms, lo=lo, hi=hi, seeds=len(med[arm]), speedup=math.exp(g),
                        s_lo=None if glo is None else math.exp(glo), s_hi=None if ghi is None else math.exp(ghi))
    return out


def _moved(rows: list[Row], tol_rel: float) -> tuple[int | None, str]:
    """The first look at which LoRA's held-out loss (the curve's problems) sits below the pretrained model's
    by more than the loss margin, with 95% confidence over seeds (t-interval of step0 - loss)."""
    comp = "eval_loss_curve" if any(r.component == "eval_loss_curve" for r in rows) else "eval_loss"
    curves = [r.extra for r in rows if r.component == comp and r.case.provider == "lora"]
    if not curves:
        return None, "no LoRA held-out loss curve"
    steps, base = curves[0]["steps"], curves[0]["values"][0]
    for i, s in enumerate(steps[1:], 1):
        drops = [base - c["values"][i] for c in curves if c["steps"] == steps]
        m, lo, _ = _t95(drops)
        if lo is not None and lo > tol_rel * base:
            return s, (f"LoRA's held-out loss left the pretrained model's {base:.4f} by step {s}: "
                       f"-{m:.4f} (95% interval lower end -{lo:.4f}) over {len(drops)} seeds")
    return None, f"LoRA's held-out loss has not left the pretrained model's {base:.4f} by more than the margin"


MOVED_CHECK = CheckId("moved", "LoRA moved from the pretrained model")
EQUIV_PAPER_CHECK = CheckId("equivalent-paper", "equivalent to LoRA: paper preset", headline=True)
EQUIV_ABLATION_CHECK = CheckId("equivalent-ablation", "equivalent to LoRA: ablation")
STEP_TIME_CHECK = CheckId("step-time", "step time")
CHECKS = (MOVED_CHECK, EQUIV_PAPER_CHECK, EQUIV_ABLATION_CHECK, STEP_TIME_CHECK)


def verdict(rows: list[Row]) -> list[Check]:
    """Per arm and metric, the equivalence verdict; LoRA's movement from the pretrained model; step times."""
    if not rows:
        return []
    label = weights_label(rows[0].case)
    seeds = {r.case.param("seed") for r in rows}
    checks = []
    step, said = _moved(rows, LOSS_TOL)
    acc = _finals(rows, "accuracy").get("lora", {})
    start = next((r.extra["values"][0] for r in rows if r.component == "eval_accuracy"), None)
    if acc and start is not None:
        said += f"; LoRA's accuracy {start:.1f}% -> {statistics.fmean(acc.values()):.1f}% (mean over seeds)"
    checks.append(Check(MOVED_CHECK, f"lora, {len(seeds)} seeds, {label}",
                        "first look below the margin (optimizer step)", step, "reported", "INFO", said, kind="info"))
    for metric, name, higher in METRICS:
        f = _finals(rows, metric)
        lora = f.get("lora", {})
        if not lora:
            continue
        tol = ACC_TOL if higher else LOSS_TOL * statistics.fmean(lora.values())
        unit = "accuracy points" if higher else "nats/token"
        for arm in [a for a in ORDER if a in f and a != "lora"]:
            common = sorted(set(f[arm]) & set(lora))
            d = decide([f[arm][s] - lora[s] for s in common], tol, higher)
            iv = "one seed: no interval" if d.lo is None else f"90% interval [{d.lo:+.4f}, {d.hi:+.4f}]"
            seeds = "—" if d.lo is None else str(d.seeds) if d.seeds else f"over {MAX_SEEDS}"
            need = ("" if d.lo is None else f"; at the observed spread (sd of Δ {d.sd:.4f}) "
                    + (f"{d.seeds} seeds decide it" if d.seeds else f"{seeds} seeds (or never) decide it"))
            what = EQUIV_PAPER_CHECK if arm == "paper" else EQUIV_ABLATION_CHECK
            checks.append(Check(
                what, f"{arm}, {d.n} seeds, {label}", f"Δ {name}, arm - LoRA, paired mean", d.mean,
                f"within ±{tol:.4g} {unit} (TOST, {ALPHA:.0%} each side)", d.status,
                f"{d.word}: {iv}{need}; {arm} {statistics.fmean(f[arm].values()):.4f}, "
                f"LoRA {statistics.fmean(lora.values()):.4f} (means over seeds)", lo=d.lo, hi=d.hi, kind="measured",
                labels=(("arm", arm), ("metric", metric), ("verdict", d.word),
                        ("seeds_to_decide", seeds))))
    for arm, st in step_times(rows).items():
        iv = "" if st["lo"] is None else f" [95% interval {st['lo']:.1f}, {st['hi']:.1f}]"
        sp = ("" if arm == "lora" or st["s_lo"] is None else f"; speed-up vs LoRA {st['speedup']:.3f}x "
              f"[95% interval {st['s_lo']:.3f}, {st['s_hi']:.3f}], paired by seed")
        checks.append(Check(STEP_TIME_CHECK, f"{arm}, {st['seeds']} seeds, {label}",
                            "ms per training step (median of a run, geometric mean over seeds)", st["ms"],
                            "reported", "INFO",
                            f"{st['ms']:.1f} ms{iv}{sp}", lo=st["lo"], hi=st["hi"], kind="info",
                            labels=(("arm", arm),)))
    return checks


class Progress:
    """Prints where a medium run is and how long it has left: this case from its own pace, the cases after it
    in the plan (a --resume skips the finished ones before it) from the cases this process finished."""

    finished: list[float] = []          # seconds per finished case, in this process

    def __init__(self, case, plan: list, t0: float):
        plan = [c.id for c in plan]
        self.index = plan.index(case.id) + 1 if case.id in plan else 0
        self.total, self.case, self.t0 = len(plan), case, t0
        if distributed.is_writer():
            print(f"convergence medium: case {self.index}/{self.total} ({case.provider}, seed {case.param('seed')}): "
                  f"{case.param('steps')} steps, a look every {case.param('eval_every')}", flush=True)

    def say(self, step: int, step_s: list[float], last: dict[str, float]) -> None:
        steps = self.case.param("steps")
        elapsed = time.perf_counter() - self.t0
        case_left = elapsed / step * (steps - step)
        per_case = statistics.fmean(self.finished) if self.finished else elapsed / step * steps
        run_left = case_left + (self.total - self.index) * per_case
        if step == steps:
            Progress.finished.append(elapsed)
        if distributed.is_writer():
            vals = ", ".join(f"{k} {v:.4g}" for k, v in last.items())
            print(f"convergence medium: case {self.index}/{self.total} ({self.case.provider}, seed "
                  f"{self.case.param('seed')}): step {step}/{steps}, {statistics.median(step_s):.2f} s/step, {vals}; "
                  f"this case ~{case_left / 60:.1f} min left, the run ~{run_left / 60:.0f} min left", flush=True,
                  file=sys.stdout)
