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
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16", "float64")


def resolve_device(name: str) -> str:
    """"auto": CUDA when available, else the CPU; anything else as given."""
    if name != "auto":
        return name
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> str:
    """bf16 where people fine-tune (CUDA), fp32 on the CPU (whose bf16 matmuls are emulated and slow)."""
    return "bfloat16" if device.startswith("cuda") else "float32"


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
    fsdp: bool = False             # under torchrun: FSDP2 (fully_shard) instead of DDP
    checkpointing: bool = False    # gradient (activation) checkpointing, as the paper trains


@dataclass(frozen=True)
class Context:
    """How to measure: the timing budget and thread count, fixed for a run."""

    budget: TimingBudget
    threads: int
    options: Options


@dataclass(frozen=True)
class Check:
    """One verdict line.

    status: PASS (the whole interval clears the line), FAIL (the whole interval
    misses it), NOISE ("within noise": the interval straddles the line) or INFO
    (reported, no target). lo, hi: the interval of a timed value (None for exact
    quantities such as FLOPs). kind: "measured" (a measurement judged against a
    line), "exact" (a consistency check, e.g. counted FLOPs == analytic) or "info".
    """

    check: str
    scope: str
    metric: str
    value: float | None
    target: str
    status: str
    detail: str = ""
    lo: float | None = None
    hi: float | None = None
    kind: str = "measured"

    def to_json(self) -> dict:
        return asdict(self)


def budget_for(mode: str) -> TimingBudget:
    """CPU: seconds per callable; CUDA: events over cuda_reps calls after cuda_warmup (fewer in quick,
    whose ~100 GPU cases must fit in a few minutes)."""
    if mode == "quick":
        return TimingBudget(min_s=0.05, max_s=0.25, cuda_warmup=5, cuda_reps=25)
    return TimingBudget(min_s=0.1, max_s=0.5)
