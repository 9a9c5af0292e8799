"""Intervals for time-based quantities, taken between rounds.

A run measures every interleaved group in rounds spread over the run (celora_bench.rounds): in
each round every callable gets one timed block. On a shared machine most of the noise sits between
moments of the run, not within one block (a neighbour's load, the clock, the cache state), so a
quantity is judged on its *round values*: a verdict quantity (a share comp/whole, a ratio
celora/dense, a speed-up over an Amdahl bound) is computed once per round from that round's samples
of every series it reads, paired by round, so drift that hit both sides of a ratio in one round
cancels as it did in the measurement.

The value and the interval come from exactly those round values, on the log scale (every quantity
here is a positive ratio): the 20% trimmed mean of the logs, and Yuen's interval around it
(the Tukey–McLaughlin standard error from the winsorized variance, Student's t with h − 1 degrees of
freedom, h the rounds left after trimming). Trimming keeps one disturbed round (seen here: a round
where a neighbour doubled one call) from deciding or widening the interval; the winsorized variance
keeps it honest about the spread that remains. No floor, no constant fitted to a set of runs: the
width is the rounds' own variation. tests/test_intervals.py checks the coverage on simulated runs
with a between-round random effect; results/readme/agreement/ checks it on real runs it was not
tuned on.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

LEVEL = 0.95          # two-sided coverage
TRIM = 0.2            # fraction of the rounds trimmed from each end
MIN_ROUNDS = 3        # fewer common rounds: no interval


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


def trimmed(values: Sequence[float], level: float = LEVEL, trim: float = TRIM) -> tuple[float, float | None]:
    """(trimmed mean, half-width of its interval) of values; half-width None below MIN_ROUNDS values."""
    mean, se, df = trimmed_se(values, trim)
    return mean, None if se is None else t_quantile(1 - (1 - level) / 2, df) * se


def of_values(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The interval of a positive quantity from its round values (log scale)."""
    if not values:
        raise ValueError("no round values")
    if min(values) <= 0:          # not a positive ratio: the same method on the plain scale
        mean, half = trimmed(values, level)
        return Interval(mean, None if half is None else mean - half, None if half is None else mean + half,
                        len(values))
    mean, half = trimmed([math.log(v) for v in values], level)
    if half is None:
        return Interval(math.exp(mean), None, None, len(values))
    return Interval(math.exp(mean), math.exp(mean - half), math.exp(mean + half), len(values))


# ---- quantities over series measured in rounds ----------------------------------------

@dataclass(frozen=True)
class Series:
    """Samples of one timed callable and the round each was taken in.

    A constant (Series.constant) is one sample without rounds. A series from a file written before
    rounds existed has samples without rounds: it can be summarized alone (by_round: one "round" per
    sample), never paired with another.
    """

    samples: tuple[float, ...]
    rounds: tuple[int, ...]

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


class Unpaired(ValueError):
    """A series without rounds (a legacy results file) cannot be paired with another."""


def round_values(stat: Callable[..., float], series: Sequence[Series]) -> list[float]:
    """stat over every round that all timed series share, one value per round, in round order."""
    if any(not s.rounds and not s.is_constant for s in series):
        raise Unpaired("samples without rounds (a results file from before rounds): re-measure to pair them")
    timed = [s.by_round() for s in series if s.rounds]
    common = sorted(set.intersection(*(set(t) for t in timed))) if timed else []
    out = []
    for r in common:
        args, it = [], iter(timed)
        for s in series:
            args.append(next(it)[r] if s.rounds else s.samples[0])
        out.append(float(stat(*args)))
    return out


def over_rounds(stat: Callable[..., float], series: Sequence[Series], level: float = LEVEL) -> Interval | None:
    """The interval of stat(one value per series), from its round values; None when no round is shared."""
    values = round_values(stat, series)
    return of_values(values, level) if values else None


def paired_ratio(num: Series, den: Series, level: float = LEVEL) -> Interval | None:
    """num / den from the rounds both share (timed interleaved in one sampler)."""
    return over_rounds(lambda a, b: a / b, [num, den], level)


def unpaired_ratio(num: Series, den: Series, level: float = LEVEL) -> Interval:
    """num / den for series timed apart (no shared rounds: e.g. models too large to be alive at once):
    the two trimmed means of the logs and Yuen's two-sample interval (Welch's degrees of freedom)."""
    a, b = num.by_round(), den.by_round()
    m1, se1, df1 = trimmed_se([math.log(v) for v in a.values()])
    m2, se2, df2 = trimmed_se([math.log(v) for v in b.values()])
    n = min(len(a), len(b))
    value = math.exp(m1 - m2)
    if se1 is None or se2 is None:
        return Interval(value, None, None, n)
    se = math.sqrt(se1 ** 2 + se2 ** 2)
    df = max(1, round(se ** 4 / (se1 ** 4 / df1 + se2 ** 4 / df2))) if se > 0 else min(df1, df2)
    half = t_quantile(1 - (1 - level) / 2, df) * se
    return Interval(value, math.exp(m1 - m2 - half), math.exp(m1 - m2 + half), n)
