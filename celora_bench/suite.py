"""What a suite module provides, and the options every suite receives.

A suite is one module in suites/ with:
    NAME, DESCRIPTION
    cases(opts: Options) -> list[Case]         its sweep, declared once
    setup(case) -> measure.Target              what the engine times, counts and weighs
      or run_case(case, ctx: Context) -> rows  for suites that measure something else
    verdict(rows, machine) -> list[Check]      the rules the suite exists for (machine: the run's machine record)
and optionally group_key(case): cases with the same key are timed interleaved, and JUDGED:
the components its verdict reads (they get more rounds than the rest, celora_bench.runner).
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
    (reported, no target). lo, hi: the 95% interval of a timed value (None for
    exact quantities, or too few rounds). kind: "measured" (a timed value judged
    against a line), "exact" (a count that must equal its rule, e.g. counted FLOPs
    == analytic) or "info" (context, judged by nothing).
    reads: the (case id, component) series a timed check is computed from; the runner gives
    those more rounds while the check is within noise. rounds: how many rounds its interval used.
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
    reads: tuple[tuple[str, str], ...] = ()
    rounds: int = 0

    def to_json(self) -> dict:
        d = asdict(self)
        d["reads"] = [list(k) for k in self.reads]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Check":
        known = {f for f in cls.__dataclass_fields__}
        d = {k: v for k, v in d.items() if k in known}
        d["reads"] = tuple(tuple(k) for k in d.get("reads", ()))
        return cls(**d)


def budget_for(mode: str) -> TimingBudget:
    """Rounds per mode (celora_bench.rounds). Quick: 3 rounds of every component, 8 of those a verdict
    reads, extended to 16 and then 24 rounds for checks still within noise, while the run is under
    150 s (the README's first command must finish in under 3 minutes on a 2-core machine).
    Full: 4, 10, extended to 20 and 30, no run-time limit."""
    if mode == "quick":
        return TimingBudget(all_rounds=2, rounds=6, stages=(12, 18, 24, 32, 40), max_run_s=160.0, block_s=0.03,
                            cuda_warmup=3, cuda_reps=5)
    return TimingBudget(all_rounds=4, rounds=10, stages=(20, 30), block_s=0.05, cuda_warmup=5, cuda_reps=10)
