"""What is measured: a Case is one configuration; a Row one measured quantity of it.

The Case record is where the harness meets CE-LoRA: its knobs (p, r0, cached rows, tau) are fields, and its
id and label are written here once; nothing else in celora_bench/ names a provider or component
(tests/test_layout.py)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from celora_bench.intervals import Series
from celora_bench.timing import TimeStats


@dataclass(frozen=True)
class Case:
    """One configuration of a suite. Field order is the CSV column order.

    provider: "dense" (our LoRA, p=1), "peft" (HF peft LoRA Linear) or "celora".
    m, n: the layer's output and input features; tokens: N rows of x.
    params: suite-specific extras as sorted (name, value) pairs.
    """

    suite: str
    provider: str
    model: str
    layer: str
    m: int
    n: int
    tokens: int
    rank: int
    keep_ratio: float = 1.0
    svd_rank: int = 0
    score: str = "product"
    cache_rows: bool = False
    tau: int = 200
    dtype: str = "float32"
    device: str = "cpu"
    params: tuple = ()

    @property
    def id(self) -> str:
        """A stable, readable id; ``-k`` filters match substrings of it."""
        parts = [self.suite, self.model, self.layer, self.provider, f"N{self.tokens}", f"r{self.rank}"]
        if self.provider == "celora":
            mode = "cached" if self.cache_rows else "lean"
            parts += [f"p{self.keep_ratio:g}", f"r0={self.svd_rank}", self.score, mode, f"tau{self.tau}"]
        parts += [f"{k}={v}" for k, v in self.params]
        parts += [self.dtype, self.device]
        return "/".join(parts)

    @property
    def label(self) -> str:
        """The provider as tables and figures name it: "dense", "peft", "celora p=0.5 r0=14 lean"."""
        if self.provider == "celora":
            return f"celora p={self.keep_ratio:g} r0={self.svd_rank} {'cached' if self.cache_rows else 'lean'}"
        return self.provider

    @property
    def order(self) -> tuple:
        """Sort key of the providers of one layer: dense, peft, then CE-LoRA by falling p."""
        return (self.provider != "dense", self.provider != "peft", -self.keep_ratio, self.svd_rank, self.cache_rows,
                self.provider)

    def param(self, name: str, default=None):
        return dict(self.params).get(name, default)

    def to_json(self) -> dict:
        d = asdict(self)
        d["params"] = {k: v for k, v in self.params}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Case":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["params"] = tuple(sorted((d.get("params") or {}).items()))
        return cls(**d)


@dataclass(frozen=True)
class Row:
    """One measured component of one case. Raw time samples are kept (seconds per call), each with the
    round of the run it was taken in (celora_bench.rounds): intervals pair series by round.

    component: "fwd.frozen" ... "bwd.grad_x_frozen" (the brief's table),
    "selection" (one index refresh), "selection.amortized" (that over tau),
    "fwd", "bwd", "fwd+bwd" (timed whole, in place), "state" (persistent bytes),
    "step.alloc" (profiler bytes of one steady-state step, with FLOPs and bytes by scope in extra).
    """

    case: Case
    component: str
    samples: tuple[float, ...] = ()
    flops_analytic: int | None = None
    flops_counted: int | None = None
    mem_bytes: int | None = None
    mem_what: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)
    rounds: tuple[int, ...] = ()          # the round of each sample (empty: legacy file, one round per sample)
    procs: tuple[int, ...] = ()           # the worker process of each sample (empty: all in one process)

    @property
    def time(self) -> TimeStats | None:
        return TimeStats(self.samples) if self.samples else None

    @property
    def series(self) -> Series:
        """The samples with their rounds (none in a file written before rounds: it cannot be paired)."""
        return Series(self.samples, self.rounds, self.procs)

    @property
    def kernel(self) -> tuple[float, ...]:
        """Device-time samples in seconds (CUDA: kernel time over every thread, celora_bench.timing), one per
        wall-time sample; () where none were taken (the CPU)."""
        return tuple(self.extra.get("kernel_samples") or ())

    def judged_series(self) -> Series:
        """What a verdict judges: kernel time where the row has it (CUDA), else wall time."""
        return self.kernel_series() or self.series

    def kernel_series(self) -> Series | None:
        """The device-time samples (CUDA) with their rounds, or None."""
        if not self.kernel:
            return None
        return Series(self.kernel, tuple(self.extra.get("kernel_rounds") or ()))

    def to_json(self) -> dict:
        t = self.time
        return {
            "case_id": self.case.id,
            "case": self.case.to_json(),
            "component": self.component,
            "unit": "s",
            "samples": list(self.samples),
            "rounds": list(self.rounds),
            "procs": list(self.procs),
            "median": t.median if t else None,
            "iqr": t.iqr if t else None,
            "min": t.min if t else None,
            "count": t.count if t else 0,
            "spread": t.spread if t else False,
            "flops_analytic": self.flops_analytic,
            "flops_counted": self.flops_counted,
            "mem_bytes": self.mem_bytes,
            "mem_what": self.mem_what,
            "note": self.note,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Row":
        return cls(case=Case.from_json(d["case"]), component=d["component"],
                   samples=tuple(d.get("samples") or ()), rounds=tuple(d.get("rounds") or ()),
                   procs=tuple(d.get("procs") or ()),
                   flops_analytic=d.get("flops_analytic"),
                   flops_counted=d.get("flops_counted"), mem_bytes=d.get("mem_bytes"),
                   mem_what=d.get("mem_what", ""), note=d.get("note", ""), extra=d.get("extra") or {})
