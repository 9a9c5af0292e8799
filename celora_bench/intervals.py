"""Intervals for time-based quantities, by bootstrap over the raw samples.

A verdict quantity is a function of medians (a share comp/whole, a ratio
celora/dense, a speed-up over an Amdahl bound). Its interval resamples each
sample list with replacement and recomputes the quantity from the resampled
medians. Lists timed interleaved (A B A B ...: sample j of each comes from the
same round) are resampled with the same round indices, so drift that hit both
sides of a ratio in one round cancels as it did in the measurement; lists timed
in different loops are resampled independently.

The bootstrap sees only the spread within one run. Between runs of the same
commit a machine drifts further (the README quotes the spreads of three runs),
so every interval is widened to at least ±FLOOR of its value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

LEVEL = 0.95          # two-sided coverage
N_BOOT = 2000
FLOOR = 0.05          # at least ±5% of the value: the between-run drift the bootstrap cannot see. Three quick
                      # runs on this 2-core machine: the timed verdict values moved by a median half-range of
                      # 4.5% between runs (p90 10%); with a 2% floor 2 of 128 checks were PASS in one run and
                      # FAIL in another, with 5% none (README, "Does the verdict stand still?")


@dataclass(frozen=True)
class Interval:
    value: float
    lo: float
    hi: float

    def judge(self, line: float, above: bool) -> str:
        """PASS when the whole interval clears the line, FAIL when the whole interval misses it, else NOISE.

        above: the quantity must be >= line (True) or <= line (False).
        """
        if above:
            return "PASS" if self.lo >= line else "FAIL" if self.hi < line else "NOISE"
        return "PASS" if self.hi <= line else "FAIL" if self.lo > line else "NOISE"

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.lo:.4g}, {self.hi:.4g}]"


def _boot_medians(samples: Sequence[float], idx: np.ndarray) -> np.ndarray:
    a = np.asarray(samples, dtype=float)
    return np.median(a[idx], axis=1)                      # (N_BOOT, n) -> (N_BOOT,)


def bootstrap(stat: Callable[..., np.ndarray], lists: Sequence[Sequence[float]],
              paired: Sequence[Sequence[int]] = (), seed: int = 0, floor: float = FLOOR) -> Interval:
    """The interval of stat(median(lists[0]), median(lists[1]), ...).

    stat: a function of one median per list; it is called with numpy arrays of
        bootstrap medians, so write it with array arithmetic.
    paired: groups of list positions timed in the same interleaved rounds; each
        group is resampled with shared round indices over its common length.
    """
    rng = np.random.default_rng(seed)
    value = float(stat(*[np.median(np.asarray(s, dtype=float)) for s in lists]))
    medians: list[np.ndarray | None] = [None] * len(lists)
    for group in paired:
        n = min(len(lists[i]) for i in group)
        idx = rng.integers(0, n, size=(N_BOOT, n))
        for i in group:
            medians[i] = _boot_medians(lists[i][:n], idx)
    for i, s in enumerate(lists):
        if medians[i] is None:
            medians[i] = _boot_medians(s, rng.integers(0, len(s), size=(N_BOOT, len(s))))
    boot = np.asarray(stat(*medians), dtype=float)
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = (float(v) for v in np.percentile(boot, [tail, 100 - tail]))
    return Interval(value, min(lo, value - abs(value) * floor), max(hi, value + abs(value) * floor))


def ratio(num: Sequence[float], den: Sequence[float], paired: bool) -> Interval:
    """median(num) / median(den)."""
    return bootstrap(lambda a, b: a / b, [num, den], [(0, 1)] if paired else ())


def exact(value: float) -> Interval:
    """A quantity without sampling noise (counted FLOPs): its interval is the point."""
    return Interval(value, value, value)
