"""The suite interface, and the options every suite receives.

A suite is a package (or module) in suites/ that declares itself once as `SUITE = Suite(...)`; the registry
(celora_bench/registry.py) lists those packages by name and hands the harness their Suite objects, so the
harness reads plain fields and never probes a module or imports a suite by name.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from celora_bench.timing import TimingBudget

MODES = ("quick", "medium", "full")        # medium: convergence on a real model in about an hour of CPU
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


class BadSuite(TypeError):
    """A suite declared without what the harness needs; the message says what is missing."""


@dataclass(frozen=True)
class CheckId:
    """What a check answers, declared once by its suite; Suite.CHECKS gives their order.

    id: stable, in exports and results files; title: what every view shows; headline: its measured checks
    answer the suite's question at a look; gated: "lower" or "higher" (which way is better) where the
    stored-baseline gate compares its value between runs, "" where it does not; slack: that gate's threshold
    is multiplied by it, for a quantity that moves between runs more than its interval within one shows."""

    id: str
    title: str
    headline: bool = False
    gated: str = ""
    slack: float = 1.0

    def __post_init__(self):
        if self.gated not in ("", "lower", "higher"):
            raise BadSuite(f"check {self.id!r}: gated must be '', 'lower' or 'higher', not {self.gated!r}")


@dataclass(frozen=True)
class Check:
    """One verdict line.

    check: its CheckId (what it answers); scope, metric: what it was measured on, as text.

    status: PASS (the whole interval clears the line), FAIL (the whole interval
    misses it), NOISE ("within noise": the interval straddles the line) or INFO
    (reported, no target). lo, hi: the 95.5% interval of a timed value (None for
    exact quantities, or too few rounds). kind: "measured" (a timed value judged
    against a line), "exact" (a count that must equal its rule, e.g. counted FLOPs
    == analytic) or "info" (context, judged by nothing).
    reads: the (case id, component) series a timed check is computed from; the runner gives
    those more rounds while the check is within noise. rounds: how many rounds its interval used.
    labels: the scope as fields, (name, value) pairs such as ("layer", "down_proj"), ("p", "0.25"),
    ("r0", "0"), ("mode", "lean"): exports give each its own column, so nothing parses scope back apart.
    line: the number it was judged against (None: reported only), which a figure of checks draws beside it.
    """

    check: CheckId
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
    labels: tuple[tuple[str, str], ...] = ()
    line: float | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["check"], d["title"] = self.check.id, self.check.title
        d["reads"] = [list(k) for k in self.reads]
        d["labels"] = [list(k) for k in self.labels]
        return d


@dataclass(frozen=True)
class CheckPlot:
    """A figure drawn from a suite's checks alone (celora_bench.render.figures.check_plot): a row of panels per
    CheckId in checks, a panel per value of the label `panel`, x the numeric label `x`, a marker per value of
    the `series` labels; every point is a check's value with its interval and a dash at its line. One file
    per value of the `split` labels: <prefix><values joined by "-">.png."""

    prefix: str
    caption: str
    checks: tuple[CheckId, ...]
    x: str
    panel: str
    series: tuple[str, ...] = ()
    split: tuple[str, ...] = ()


# CUDA quick: one look after the base rounds and one extension, under 25 s of run time, so that
# scripts/gpu_check.sh's steps (40-50 s each, set-up included) end with their rounds measured
CUDA_QUICK = TimingBudget(all_rounds=2, rounds=6, stages=(12,), max_run_s=25.0, cuda_warmup=3, cuda_reps=5)
DEFAULT_WORKERS = 4      # each holds every case of a chunk: the 24 quick cases take 3.6-3.9 GB per worker
WORKERS_ENV = "CELORA_BENCH_WORKERS"     # another worker count (run --workers N sets it; the tests set 1)


def budget_for(mode: str, device: str = "cpu") -> TimingBudget:
    """Rounds per mode (celora_bench.rounds), dealt to 4 worker processes where the suite allows it
    (celora_bench.workers). Quick: 2 rounds of every component, 4 of those a verdict reads (one per
    worker), extended to 8, 12, 16, 20 and 24 rounds for checks still within noise (MAX_LOOKS = 6 looks in
    all, celora_bench.intervals), while the run is under 155 s (so that install, run, verdict and report stay
    under 3 minutes end to end; setting 24 cases up in 4 workers takes most of the first 90 s on this 2-core
    machine). Full: 4, 12, extended to 24 and 36, no run-time limit. CUDA quick:
    CUDA_QUICK (in one process: CUDA runs use no workers)."""
    workers = int(os.environ.get(WORKERS_ENV, DEFAULT_WORKERS))
    if mode == "quick" and device.startswith("cuda"):
        return CUDA_QUICK
    if mode == "quick":
        return TimingBudget(all_rounds=2, rounds=4, stages=(8, 12, 16, 20, 24), max_run_s=155.0, block_s=0.03,
                            cuda_warmup=3, cuda_reps=5, workers=workers)
    return TimingBudget(all_rounds=4, rounds=12, stages=(24, 36), block_s=0.05, cuda_warmup=5, cuda_reps=10,
                        workers=workers)


def _own_group(case) -> Any:
    return case.id


def _no_tables(rows) -> list:
    return []


def _no_plots(rows, out_dir: str, machine: dict | None = None) -> list[str]:
    return []


def _not_gated(case) -> bool:
    return False


@dataclass(frozen=True)
class Suite:
    """A suite, declared once by its package as `SUITE = Suite(...)` and listed by the registry. Required: NAME,
    DESCRIPTION, cases, verdict, CHECKS and exactly one of setup (the engine times, counts and weighs the
    celora_bench.measure.Target it returns) or run_case (the suite measures on its own and returns rows)."""

    NAME: str
    DESCRIPTION: str                                  # one line, in `celora-bench list`
    cases: Callable[[Options], list]                  # its sweep
    verdict: Callable[..., list[Check]]               # (rows, machine=None) -> checks
    CHECKS: tuple[CheckId, ...]                       # what its checks answer, in the order every view shows
    setup: Callable | None = None                     # case -> Target
    run_case: Callable | None = None                  # (case, Context) -> rows
    QUESTION: str = ""                                # atop its report section (default: DESCRIPTION)
    DISTRIBUTED: bool = False                         # runs under torchrun, DDP
    FSDP: bool = False                                # or sharded by FSDP2 with --fsdp
    JUDGED: tuple[str, ...] = ()                      # components its verdict reads: they get the extra rounds
    GATED: tuple[str, ...] = ()                       # components `gate --against` compares, candidate/base
    SOL_SHOWN: tuple[str, ...] = ()                   # components in its speed-of-light table without --detail
    PLOT_CAPTIONS: Mapping[str, str] = field(default_factory=dict)   # plot file-name prefix -> what it shows
    WORKERS: bool = False                             # its cases may be set up in worker processes
    group_key: Callable[[Any], Any] = _own_group      # same key: timed together
    tables: Callable[[list], Sequence[Any]] = _no_tables          # its own tables, in its short answer too
    case_tables: Callable[[list], Sequence[Any]] = _no_tables     # per-case tables: `show --detail`, the report
    plots: Callable[..., list[str]] = _no_plots       # (rows, out_dir, machine) -> its figures' PNG paths
    CHECK_PLOTS: tuple[CheckPlot, ...] = ()           # its figures of checks, drawn by the harness
    gated_case: Callable[[Any], bool] = _not_gated    # `gate --against` measures this case

    def __post_init__(self):
        if (self.setup is None) == (self.run_case is None):
            raise BadSuite(f"suite {self.NAME!r} needs exactly one of setup and run_case")
        if not self.QUESTION:
            object.__setattr__(self, "QUESTION", self.DESCRIPTION)
        ids = [c.id for c in self.CHECKS]
        if len(set(ids)) != len(ids):
            raise BadSuite(f"suite {self.NAME!r} declares a check id twice: {ids}")

    def ordered(self, checks: list[Check]) -> list[Check]:
        """Its checks in the declared order (stable within one CheckId); BadSuite for a check it did not declare."""
        order = {c: i for i, c in enumerate(self.CHECKS)}
        for c in checks:
            if c.check not in order:
                raise BadSuite(f"suite {self.NAME!r} returned check {c.check!r}, not in its CHECKS")
        return sorted(checks, key=lambda c: order[c.check])

    @staticmethod
    def headline(checks: list[Check]) -> list[Check]:
        """The measured checks whose CheckId is a headline: what answers the question at a look."""
        return [c for c in checks if c.check.headline and c.kind == "measured"]

    @property
    def timed(self) -> bool:
        """The engine times it (setup), rather than the suite measuring itself (run_case)."""
        return self.setup is not None
