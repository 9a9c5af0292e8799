"""What every gpu-targets section shares: the targets, the sizes, the rounds, the layers under test and the
checks. Timing is the harness's (celora_bench.measure.measure_group: CUDA events in randomized rounds, and
each round's device time); every section returns rows, and its verdict judges them with the harness's
intervals (celora_bench.intervals, paired by round)."""
from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

import core
from celora_bench import intervals as I
from celora_bench.cases import Case, Row
from celora_bench.measure import Target, measure_group
from celora_bench.rounds import Slot
from celora_bench.suite import Check, CheckId
from celora_bench.timing import CudaBlocks, TimingBudget, cpu_block
from suites import factors
from suites.layer_bench import DTYPES

R, ALPHA, R0 = 16, 32.0, 14
ALL_P = 0.5

TARGETS = {
    # a layer's fwd+bwd speed-up / its Amdahl bound and its kept-column product: suites.lines (backward-breakdown)
    "step_amdahl": 0.80,    # training step speed-up / 1/(1 − s + s·p), s profiled (at least)
    "step_speedup": 1.0,    # and the step itself no slower than ours dense (at least): 0.8 of a ~1.1x bound
                            # alone passes a step 10% slower than dense
    "attribution": 0.70,    # kernel time / CUDA-event time of one layer fwd+bwd (at least)
    "attribution_max": 1.05,  # and at most: kernels of one stream cannot outlast the events around them
}


@dataclass(frozen=True)
class Sizes:
    layer_model: str                                    # projection shapes of smoke, attribution, kernels
    tokens: int                                         # N of those sections
    steps: dict[str, tuple[str, int, int, int]]         # section -> (model, decoder layers, batch, seq)
    convert_model: str


# "gpu" on CUDA; "tiny" on the CPU: every section's logic in seconds, its timed figures saying nothing of a GPU
SIZES = {
    "gpu": Sizes("llama-3.1-8b", 8192, {"step-1b": ("llama-3.2-1b", 16, 4, 2048),
                                        "step-8b": ("llama-3.1-8b", 8, 2, 2048)}, "llama-3.2-1b"),
    "tiny": Sizes("tiny-byte", 64, {"step-1b": ("tiny-byte", 4, 2, 32), "step-8b": ("tiny-byte", 2, 2, 32)},
                  "tiny-byte"),
}

# Rounds per kind of section: fixed, no extension, so scripts/gpu_check.sh can size its time limits from
# them (the mode's budget, celora_bench.suite.budget_for, extends undecided checks for up to 160 s). On CUDA
# each round also profiles one call of every callable (its device time).
BUDGETS = {
    "layer": TimingBudget(all_rounds=1, rounds=7, stages=(), cuda_warmup=3, cuda_reps=5),
    "steps": TimingBudget(all_rounds=1, rounds=5, stages=(), cuda_warmup=2, cuda_reps=2),
    "tiny": TimingBudget(all_rounds=1, rounds=3, stages=(), block_s=1e-3, cuda_warmup=1, cuda_reps=1),
}


def sizes(case: Case) -> Sizes:
    return SIZES[case.param("sizes")]


def budget(case: Case, kind: str) -> TimingBudget:
    return BUDGETS["tiny" if case.param("sizes") == "tiny" else kind]


def cuda(case: Case) -> bool:
    return case.device.startswith("cuda")


def clock(case: Case) -> str:
    """What a timed row's samples are: CUDA events around blocks of calls, or the CPU's wall clock."""
    return "CUDA events" if cuda(case) else "wall time"


def sync(case: Case) -> None:
    if cuda(case):
        torch.cuda.synchronize()


def free(case: Case) -> None:
    gc.collect()
    if cuda(case):
        torch.cuda.empty_cache()


# ---- the layers under test -------------------------------------------------------------

def svd_per_shape() -> Callable:
    """An SVD function (core's SVDSplit) giving cheap factors once per (shape, r0, dtype, device)
    (suites.factors: a randomized SVD, not exact): the sections time layers and steps, whose
    time depends on the shapes only; a full SVD per shape would spend a GPU step's limit before its first
    timed round. The convert section times the exact one."""
    return factors.per_shape(factors.lowrank_split)


def ours(base: nn.Linear, p: float, r0: int, svd: Callable | None = None, **kw) -> core.CELoRALinear:
    """Our LoRA over base's W0 (p = 1: dense), r = 16, alpha 32, B drawn as a trained B is (non-zero)."""
    layer = core.CELoRALinear.from_linear(base, core.CELoRAConfig(
        r=R, alpha=ALPHA, keep_ratio=p, svd_rank=r0 if p < 1 else 0, **kw), svd)
    with torch.no_grad():
        layer.lora_B.normal_(std=0.01)
    return layer


def layer_inputs(case: Case, m: int, n: int, N: int):
    """W0 (as an nn.Linear), x (N, n) needing its gradient, and G_y (N, m) with heavy-tailed per-feature
    scales (as real gradients have; on i.i.d. columns every selection rule is the same), made on the device."""
    dtype = DTYPES[case.dtype]
    g = torch.Generator(device=case.device).manual_seed(0)
    kw = dict(generator=g, device=case.device, dtype=dtype)
    base = nn.Linear(n, m, bias=False, device=case.device, dtype=dtype)
    with torch.no_grad():
        base.weight.copy_(torch.randn(m, n, **kw) / n ** 0.5)
    x = torch.randn(N, n, **kw).requires_grad_(True)
    gy = torch.randn(N, m, **kw) * torch.exp(torch.randn(m, generator=g, device=case.device)).to(dtype)
    return base, x, gy


def fwd_bwd(mod: nn.Module, x: torch.Tensor, gy: torch.Tensor) -> Callable:
    params = [x] + [q for q in mod.parameters() if q.requires_grad]
    return lambda: torch.autograd.grad(mod(x), params, gy)


def events_only(case: Case, fns: dict[str, Callable], kind: str, threads: int, facts: dict | None = None,
                seed: int = 0) -> list[Row]:
    """The callables timed in rounds as the harness does (a warm-up, then every round each callable once, in
    a random order; CUDA events around budget.cuda_reps calls, or the CPU's wall clock) but without the
    harness's per-round profile of every callable (celora_bench.rounds on CUDA): for whole training steps,
    whose verdict reads their times and one separate profile only."""
    import random

    from torch.utils.benchmark.utils.common import set_torch_threads
    b = budget(case, kind)
    slots = [Slot(0, case.id, name, fn) for name, fn in fns.items()]
    rng = random.Random(seed)
    with set_torch_threads(threads):
        for s in slots:
            for _ in range(max(1, b.cuda_warmup) if cuda(case) else 1):
                s.fn()
        sync(case)
        for r in range(b.rounds):
            order = rng.sample(slots, len(slots))
            if cuda(case):
                blocks = CudaBlocks(b.cuda_reps)
                for s in order:
                    blocks.time(s.fn)
                times = blocks.read()
            else:
                times = [cpu_block(s.fn, b.block_s) for s in order]
            for s, t in zip(order, times):
                s.samples.append(t)
                s.rounds.append(r)
    return [Row(case, s.name, tuple(s.samples), rounds=tuple(s.rounds), extra=dict((facts or {}).get(s.name, {})))
            for s in slots]


def timed(case: Case, fns: dict[str, Callable], kind: str, threads: int, facts: dict | None = None) -> list[Row]:
    """The callables measured together in the harness's rounds: one row each (component = its name), with
    its samples, their rounds and, on CUDA, its device time per round; facts: name -> what its row's extra
    says besides."""
    return measure_group([(case, Target(parts=fns, extra=facts or {}))], budget(case, kind), threads)


def fact(case: Case, name: str, ok: bool, detail: str = "") -> Row:
    """A yes/no fact measured on the device (an equality, a kernel that ran): an exact check of the verdict."""
    return Row(case, name, extra={"ok": bool(ok), "detail": detail})


# ---- checks -------------------------------------------------------------------------

def target_check(check: CheckId, scope: str, metric: str, iv: I.Interval | None, key: str | float, above: bool,
                 detail: str, reads: tuple = ()) -> Check | None:
    """A timed quantity (its interval between rounds) judged against TARGETS[key] (or the line key itself)."""
    if iv is None:
        return None
    goal = TARGETS[key] if isinstance(key, str) else key
    status = iv.judge(goal, above)
    why = f"; undecided: {iv.undecided_why(goal)}" if status == "NOISE" else ""
    return Check(check, scope, metric, iv.value, f"{'>=' if above else '<='} {goal}", status, detail + why,
                 iv.lo, iv.hi, reads=reads, rounds=iv.rounds)


def info(check: CheckId, scope: str, metric: str, value, detail: str = "") -> Check:
    return Check(check, scope, metric, value, "reported", "INFO", detail, kind="info")


EXACT_CHECK = CheckId("runs", "runs as built")


def exact(scope: str, metric: str, ok: bool, detail: str = "") -> Check:
    return Check(EXACT_CHECK, scope, metric, float(bool(ok)), "true", "PASS" if ok else "FAIL", detail, kind="exact")


def fact_checks(case: Case, rows: list[Row]) -> list[Check]:
    """Every fact row of the case (common.fact) as an exact check."""
    return [exact(scope_of(case), r.component, r.extra["ok"], r.extra.get("detail", ""))
            for r in rows if "ok" in r.extra]


def scope_of(case: Case) -> str:
    return f"{case.provider} {case.model} {case.layer}" + (f" {case.m}x{case.n}" if case.m else "") \
        + f" N={case.tokens}"


def ms(row: Row) -> float:
    return row.time.median * 1e3
