"""Intervals for time-based quantities, taken between rounds and between worker processes.

A run measures every interleaved group in rounds spread over the run (celora_bench.rounds), and on the
CPU those rounds are dealt to several fresh worker processes (celora_bench.workers). A verdict quantity
(a share comp/whole, a ratio celora/dense, a speed-up over an Amdahl bound) is computed once per round
from that round's samples of every series it reads, paired by round, so drift that hit both sides of a
ratio in one round cancels as it did in the measurement.

The noise has two levels, and both are in the interval (a two-level random-effects model, Kalibera &
Jones' "repeat at the level that varies"):
- between rounds: a neighbour's load, the clock, the cache state in that moment;
- between processes: what a fresh interpreter draws once and keeps (address-space layout, the
  allocator's state, where its buffers landed). Rounds inside one process cannot see it: on this
  machine it made runs disagree 1.3-1.6x more than one-process intervals allowed.
So the value is the mean over processes of each process's mean (20% trimmed, on the log scale: every
quantity here is a positive ratio), and its standard error is the spread of those process means,
with P - 1 degrees of freedom (the exact nested t interval). With a single process (a file from before
workers, a distributed run, CUDA) it is Yuen's interval over the rounds.

A third level no run can see from inside: the run itself. All of a run's processes share its minutes
(the machine's state then: a neighbour's memory traffic, the host's clock), and on the 2-core EPYC the
README's figures come from, five quick runs' values disagreed beyond their nested intervals (coverage
84% at 4 processes). That component is measured between runs (results/readme/agreement/agreement.py
estimates it from runs made one after the other) and carried as a known variance: se² + RUN_SD² on the
log scale, Satterthwaite's degrees of freedom (the known part has infinitely many). Each results file
records the figure it was judged with (machine_info["run_sd"]); files without it are judged without,
so no stored verdict changes. CELORA_BENCH_RUN_SD overrides the default for a machine measured apart.

Looks: the runner looks at the verdict several times and gives more rounds only to what is still
undecided (celora_bench.runner). Every extra look spends error, so the looks follow a Haybittle-Peto
boundary: an interim look decides only at level INTERIM_LEVEL (99.9%), the final verdict (every
interval a file or a table shows) at FINAL_LEVEL = 1 - (0.05 - 0.001·(MAX_LOOKS - 1)). By the union
bound a check whose true value sits on its line is decided at most 5% of the time over all looks;
tests/test_intervals.py simulates the whole procedure with process effects and a drift over the run.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

MAX_LOOKS = 6         # looks a run may take at a check (quick: after 4, 8, 12, 16, 20 and 24 rounds)
INTERIM_ALPHA = 0.001
INTERIM_LEVEL = 1 - INTERIM_ALPHA                         # Haybittle-Peto: an interim look decides at 99.9%
FINAL_LEVEL = 1 - (0.05 - INTERIM_ALPHA * (MAX_LOOKS - 1))  # 0.955: all looks together spend at most 5%
LEVEL = FINAL_LEVEL   # what every stored and shown interval uses
TRIM = 0.2            # fraction of the rounds trimmed from each end
MIN_ROUNDS = 3        # fewer common rounds: no interval
# between-run sd on the log scale, beyond the nested intervals: chosen by agreement.py --fit-run-sd (the
# smallest sd on a grid whose coverage reaches 93%) on five quick runs at 94946da on a 2-core AMD EPYC VM
# (results/readme/agreement/tuning/), validated on five fresh runs (results/readme/agreement/)
RUN_SD = 0.035
MAX_DF = 200          # beyond this, t is the normal quantile to 3 digits

_level = contextvars.ContextVar("interval_level", default=FINAL_LEVEL)
_run_sd = contextvars.ContextVar("run_sd", default=0.0)


@contextlib.contextmanager
def interim():
    """Intervals taken inside are at INTERIM_LEVEL: the runner's looks before the last."""
    token = _level.set(INTERIM_LEVEL)
    try:
        yield
    finally:
        _level.reset(token)


def current_level() -> float:
    return _level.get()


def default_run_sd() -> float:
    """The between-run sd a new run records: CELORA_BENCH_RUN_SD (a number >= 0) or RUN_SD."""
    raw = os.environ.get("CELORA_BENCH_RUN_SD")
    if raw is None:
        return RUN_SD
    try:
        sd = float(raw)
    except ValueError:
        sd = -1.0
    if not 0 <= sd < 1:
        raise ValueError(f"CELORA_BENCH_RUN_SD={raw!r}: allowed is a between-run sd on the log scale in [0, 1), "
                         f"e.g. {RUN_SD}")
    return sd


@contextlib.contextmanager
def run_effect(sd: float):
    """Intervals taken inside carry a between-run sd of `sd` (log scale): a results file's recorded figure."""
    token = _run_sd.set(float(sd or 0.0))
    try:
        yield
    finally:
        _run_sd.reset(token)


def with_run_effect(se: float, df: int, sd: float | None = None) -> tuple[float, int]:
    """(standard error, degrees of freedom) with a known between-run variance sd² added to se²
    (Welch-Satterthwaite; the known part has infinite degrees of freedom, so df only grows)."""
    sd = _run_sd.get() if sd is None else sd
    if sd <= 0:
        return se, df
    total = math.sqrt(se * se + sd * sd)
    return total, MAX_DF if se == 0 else min(MAX_DF, max(df, int(total ** 4 / (se ** 4 / df))))


@dataclass(frozen=True)
class Interval:
    """A value with its interval; lo/hi are None when there were too few rounds to have one."""

    value: float
    lo: float | None
    hi: float | None
    rounds: int = 0

    def judge(self, line: float, above: bool) -> str:
        """PASS when the whole interval clears the line, FAIL when the whole interval misses it, else NOISE.

        above: the quantity must be >= line (True) or <= line (False).
        """
        if self.lo is None or self.hi is None:
            return "NOISE"
        if above:
            return "PASS" if self.lo >= line else "FAIL" if self.hi < line else "NOISE"
        return "PASS" if self.hi <= line else "FAIL" if self.lo > line else "NOISE"

    def within(self, lo: float, hi: float) -> str:
        """PASS when the interval lies inside [lo, hi], FAIL when it lies wholly outside, else NOISE."""
        if self.lo is None or self.hi is None:
            return "NOISE"
        if lo <= self.lo and self.hi <= hi:
            return "PASS"
        if self.hi < lo or self.lo > hi:
            return "FAIL"
        return "NOISE"

    def undecided_why(self, line: float) -> str:
        """For a NOISE verdict: why the interval cannot decide (too few rounds, or wider than its distance)."""
        if self.lo is None or self.hi is None:
            return f"{self.rounds} common rounds: too few for an interval"
        half = (self.hi - self.lo) / 2
        return (f"interval ±{half:.3g} is wider than its distance {abs(self.value - line):.3g} to the line "
                f"after {self.rounds} rounds")

    def __str__(self) -> str:
        if self.lo is None or self.hi is None:
            return f"{self.value:.4g} [no interval]"
        return f"{self.value:.4g} [{self.lo:.4g}, {self.hi:.4g}]"


# ---- Student's t quantile (exact for integer degrees of freedom; no scipy) ---------------

def _t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with integer df (Abramowitz & Stegun 26.7.3 and 26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:                       # odd: (2/π)(θ + sinθ cosθ (1 + 2/3 c² + 2·4/(3·5) c⁴ + ...))
        term, acc = 1.0, 1.0
        for j in range(1, (df - 1) // 2):
            term *= c2 * (2 * j) / (2 * j + 1)
            acc += term
        a = 2 / math.pi * (theta + (s * math.cos(theta) * acc if df > 1 else 0.0))
    else:                            # even: sinθ (1 + 1/2 c² + 1·3/(2·4) c⁴ + ...)
        term, acc = 1.0, 1.0
        for j in range(1, df // 2):
            term *= c2 * (2 * j - 1) / (2 * j)
            acc += term
        a = s * acc
    return (1 + a) / 2


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with df >= 1 degrees of freedom, by bisection on the exact CDF."""
    if not 0 < p < 1 or df < 1:
        raise ValueError(f"t_quantile: p={p} must be in (0, 1) and df={df} >= 1")
    lo, hi = -1e4, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# ---- the trimmed mean and Yuen's interval -------------------------------------------

def trimmed_se(values: Sequence[float], trim: float = TRIM) -> tuple[float, float | None, int]:
    """(trimmed mean, its Tukey–McLaughlin standard error, degrees of freedom h − 1) of values;
    the error is None below MIN_ROUNDS values."""
    x = sorted(values)
    n = len(x)
    g = int(trim * n)
    core = x[g:n - g]
    mean = sum(core) / len(core)
    h = n - 2 * g
    if n < MIN_ROUNDS:
        return mean, None, max(1, h - 1)
    wins = [x[g]] * g + core + [x[n - g - 1]] * g               # winsorized sample
    wm = sum(wins) / n
    var_w = sum((v - wm) ** 2 for v in wins) / (n - 1)
    return mean, math.sqrt(var_w) / ((1 - 2 * g / n) * math.sqrt(n)), h - 1


def trimmed(values: Sequence[float], level: float | None = None, trim: float = TRIM) -> tuple[float, float | None]:
    """(trimmed mean, half-width of its interval) of values; half-width None below MIN_ROUNDS values."""
    mean, se, df = trimmed_se(values, trim)
    return mean, None if se is None else t_quantile(1 - (1 - _at(level)) / 2, df) * se


def _at(level: float | None) -> float:
    return current_level() if level is None else level


def nested_se(values: Sequence[float], procs: Sequence[int], trim: float = TRIM) -> tuple[float, float | None, int]:
    """(mean, standard error, degrees of freedom) of values taken in several processes: each process's
    trimmed mean, their plain mean, and the spread of those process means (P - 1 degrees of freedom).
    One process: Yuen's (trimmed_se). The error is None with fewer than MIN_ROUNDS values or two
    processes with a single value between them."""
    per: dict[int, list[float]] = {}
    for v, w in zip(values, procs):
        per.setdefault(w, []).append(v)
    if len(per) < 2:
        return trimmed_se(values, trim)
    means = [trimmed_se(v, trim)[0] for v in per.values()]
    P = len(means)
    grand = sum(means) / P
    if len(values) < MIN_ROUNDS:
        return grand, None, P - 1
    var = sum((m - grand) ** 2 for m in means) / (P - 1)
    return grand, math.sqrt(var / P), P - 1


def of_values(values: Sequence[float], level: float | None = None, procs: Sequence[int] | None = None) -> Interval:
    """The interval of a positive quantity from its round values (log scale), at level (default: the
    current one, FINAL_LEVEL outside the runner's interim looks), with the current between-run sd
    (run_effect); procs: the process each round ran in. A quantity that is not positive (no log scale)
    gets no between-run part: it is not a relative figure."""
    if not values:
        raise ValueError("no round values")
    procs = procs if procs is not None and len(procs) == len(values) else [0] * len(values)
    q = 1 - (1 - _at(level)) / 2
    if min(values) <= 0:          # not a positive ratio: the same method on the plain scale
        mean, se, df = nested_se(values, procs)
        half = None if se is None else t_quantile(q, df) * se
        return Interval(mean, None if half is None else mean - half, None if half is None else mean + half,
                        len(values))
    mean, se, df = nested_se([math.log(v) for v in values], procs)
    if se is None:
        return Interval(math.exp(mean), None, None, len(values))
    se, df = with_run_effect(se, df)
    half = t_quantile(q, df) * se
    return Interval(math.exp(mean), math.exp(mean - half), math.exp(mean + half), len(values))


# ---- quantities over series measured in rounds ----------------------------------------

@dataclass(frozen=True)
class Series:
    """Samples of one timed callable, the round each was taken in and the process that took it.

    A constant (Series.constant) is one sample without rounds. A series from a file written before
    rounds existed has samples without rounds: it can be summarized alone (by_round: one "round" per
    sample), never paired with another. procs is empty where every sample came from one process.
    """

    samples: tuple[float, ...]
    rounds: tuple[int, ...]
    procs: tuple[int, ...] = ()

    @classmethod
    def constant(cls, value: float) -> "Series":
        return cls((value,), ())

    @property
    def is_constant(self) -> bool:
        return not self.rounds and len(self.samples) == 1

    def by_round(self) -> dict[int, float]:
        """Round -> the median of that round's samples (one sample per round, as the engine times)."""
        rounds = self.rounds or range(len(self.samples))
        per: dict[int, list[float]] = {}
        for s, r in zip(self.samples, rounds):
            per.setdefault(r, []).append(s)
        return {r: statistics.median(v) for r, v in per.items()}

    def proc_of_round(self) -> dict[int, int]:
        """Round -> the process it ran in (one process per round; 0 for all without procs)."""
        rounds = self.rounds or range(len(self.samples))
        return dict(zip(rounds, self.procs or [0] * len(self.samples)))


class Unpaired(ValueError):
    """A series without rounds (a legacy results file) cannot be paired with another."""


def round_values_procs(stat: Callable[..., float], series: Sequence[Series]) -> tuple[list[float], list[int]]:
    """stat over every round that all timed series share, one value per round in round order, and the
    process each of those rounds ran in."""
    if any(not s.rounds and not s.is_constant for s in series):
        raise Unpaired("samples without rounds (a results file from before rounds): re-measure to pair them")
    timed = [s.by_round() for s in series if s.rounds]
    common = sorted(set.intersection(*(set(t) for t in timed))) if timed else []
    proc = next((s.proc_of_round() for s in series if s.rounds), {})
    out, procs = [], []
    for r in common:
        args, it = [], iter(timed)
        for s in series:
            args.append(next(it)[r] if s.rounds else s.samples[0])
        out.append(float(stat(*args)))
        procs.append(proc.get(r, 0))
    return out, procs


def round_values(stat: Callable[..., float], series: Sequence[Series]) -> list[float]:
    """stat over every round that all timed series share, one value per round, in round order."""
    return round_values_procs(stat, series)[0]


def over_rounds(stat: Callable[..., float], series: Sequence[Series], level: float | None = None) -> Interval | None:
    """The interval of stat(one value per series), from its round values and their processes; None when
    no round is shared."""
    values, procs = round_values_procs(stat, series)
    return of_values(values, level, procs) if values else None


def paired_ratio(num: Series, den: Series, level: float | None = None) -> Interval | None:
    """num / den from the rounds both share (timed interleaved in one sampler)."""
    return over_rounds(lambda a, b: a / b, [num, den], level)


def log_estimate(series: Sequence[Series], stat: Callable[..., float]) -> tuple[float, float | None, int]:
    """(mean, standard error, df) of log stat over the shared rounds, process-nested (nested_se)."""
    values, procs = round_values_procs(stat, series)
    if not values or min(values) <= 0:
        raise ValueError("log_estimate needs positive round values")
    return nested_se([math.log(v) for v in values], procs)


def difference(a: tuple[float, float | None, int], b: tuple[float, float | None, int],
               level: float | None = None, n: int = 0) -> Interval:
    """exp(a - b) for two independent log estimates (mean, se, df), with Welch's degrees of freedom:
    a ratio of quantities measured in different processes (e.g. the gate's candidate over its base)."""
    (m1, se1, df1), (m2, se2, df2) = a, b
    value = math.exp(m1 - m2)
    if se1 is None or se2 is None:
        return Interval(value, None, None, n)
    se = math.sqrt(se1 ** 2 + se2 ** 2)
    df = max(1, round(se ** 4 / (se1 ** 4 / df1 + se2 ** 4 / df2))) if se > 0 else min(df1, df2)
    half = t_quantile(1 - (1 - _at(level)) / 2, df) * se
    return Interval(value, math.exp(m1 - m2 - half), math.exp(m1 - m2 + half), n)


def unpaired_ratio(num: Series, den: Series, level: float | None = None) -> Interval:
    """num / den for series timed apart (no shared rounds: e.g. models too large to be alive at once):
    each side's log estimate (process-nested where it has processes) and Welch's interval."""
    a = nested_se([math.log(v) for v in num.by_round().values()],
                  [num.proc_of_round()[r] for r in num.by_round()])
    b = nested_se([math.log(v) for v in den.by_round().values()],
                  [den.proc_of_round()[r] for r in den.by_round()])
    return difference(a, b, level, min(len(num.by_round()), len(den.by_round())))
