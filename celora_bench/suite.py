"""What a suite module provides, and the options every suite receives.

A suite is one module in suites/ with:
    NAME, DESCRIPTION
    cases(opts: Options) -> list[Case]         its sweep, declared once
    setup(case) -> measure.Target              what the engine times, counts and weighs
      or run_case(case, ctx: Context) -> rows  for suites that measure something else
    verdict(rows) -> list[Check]               the rules the suite exists for
and optionally group_key(case): cases with the same key are timed interleaved.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from celora_bench.timing import TimingBudget

MODES = ("quick", "full")
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16", "float64")


@dataclass(frozen=True)
class Options:
    mode: str = "quick"
    device: str = "cpu"
    dtype: str = "float32"
    model: str | None = None       # None: the suite's default
    data: str | None = None        # a local text/JSONL file, for suites that train
    model_path: str | None = None  # a local transformers checkpoint
    batch: int | None = None
    seq: int | None = None


@dataclass(frozen=True)
class Context:
    """How to measure: the timing budget and thread count, fixed for a run."""

    budget: TimingBudget
    threads: int
    options: Options


@dataclass(frozen=True)
class Check:
    """One verdict line. status: PASS, FAIL or INFO (reported, no target)."""

    check: str
    scope: str
    metric: str
    value: float | None
    target: str
    status: str
    detail: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def budget_for(mode: str) -> TimingBudget:
    return TimingBudget(min_s=0.05, max_s=0.25) if mode == "quick" else TimingBudget(min_s=0.1, max_s=0.5)
