"""The GPU figures and targets of "GPU right on first contact", one isolated section at a time.

Sections (--section NAME, repeatable; default: all, in this order):
  smoke        the Triton bf16 gather equals index_select at 8192×14336 (k at p = 0.65); one CE-LoRA
               layer (14336×4096, N = 8192) runs its forward and backward
  layers       per distinct Llama-3.1-8B projection shape, N = 8192, r = 16: ours dense, peft (adapters
               upcast to fp32, as users get it, and kept in bf16), CE-LoRA at p = 0.5 and the paper's
               ratio, r0 = 0 and 14, cached rows and lean; the layer's fwd+bwd speed-up against its
               Amdahl bound 1/(1 − s + s·p_eff) (s: G_y·W0's measured share of the dense layer), and
               the kept-column product G_y[:, I]·W0[I] against the dense G_y·W0
  step-1b      one AdamW step on LoRA (r = 16, all 7 projections), Llama-3.2-1B shapes, 4×2048 tokens:
               ours dense, `all` p = 0.5 r0 = 14 lean, `all` p = 0.5 r0 = 0 cached; the bound from G_y·W0's
               share of one profiled dense step's kernel time (every thread, autograd's backward included)
  step-8b      the same at Llama-3.1-8B shapes, 8 of 32 decoder layers, 2×2048 tokens (a larger share)
  attribution  kernel time (timing.kernel_times, every thread) against CUDA-event time of one 8B layer
               (14336×4096, N = 8192) fwd+bwd: a count that missed the backward's kernels reads ~1/3
  convert      seconds to convert a Llama-3.2-1B model with `all` (r0 = 14) on the device: one SVD per
               shape timed first, the whole conversion when that estimate fits --convert-budget, then the
               same model converted again from core.convert's svd_cache (no SVD)
  kernels      the kept-column product per k multiple (1, 8, 16, 64, 128) and the gather methods per
               tile (reported, no target)

Every timed figure comes from the harness's rounds (celora_bench.rounds: CUDA events, randomized
rounds, medians). The targets (TARGETS) are printed at the start and judged PASS/FAIL where measured.
A section that raises is recorded in the output (type, message, traceback) and the next one runs.
The output JSON is rewritten after every section. Exit status: 0 when every check passed, 1 when any
check FAILed or any section raised, 2 for a usage error, 143 when stopped by SIGTERM (a time limit:
the file keeps what finished, status "partial").

The double-LoRA SVD of the step models is computed once per weight shape and shared by every layer of
that shape (random-init weights: the timing depends on shapes only; --exact-svd turns it off).

    python scripts/bench_gpu.py --out results/gpu/bench_gpu.json
    python scripts/bench_gpu.py --section layers --out results/gpu/bench_gpu-layers.json
    python scripts/bench_gpu.py --smoke --out /tmp/b.json      # tiny sizes on the CPU: every section's logic
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, __file__.rsplit("/scripts/", 1)[0])

import core  # noqa: E402
from celora_bench import (  # noqa: E402
    flops,
    models,  # noqa: E402
    rounds,
    timing,
)
from celora_bench.timing import TimeStats, TimingBudget  # noqa: E402
from core import components as C  # noqa: E402
from core import gather, selection  # noqa: E402
from core.convert import PAPER_RATIOS  # noqa: E402
from suites.model_step import building_on  # noqa: E402

R, ALPHA, R0 = 16, 32.0, 14
ALL_P = 0.5

TARGETS = {
    "amdahl_r0_0": 0.90,    # layer fwd+bwd speed-up / its Amdahl bound, r0 = 0 (at least)
    "amdahl_r0_14": 0.85,   # the same at r0 = 14 (at least)
    "kept_over_p": 1.25,    # kept-column product / dense G_y·W0, in units of p_eff (at most)
    "step_amdahl": 0.80,    # training step speed-up / 1/(1 − s + s·p), s profiled (at least)
    "attribution": 0.70,    # kernel time / CUDA-event time of one layer fwd+bwd (at least)
}
TARGET_TEXT = (
    f"layer fwd+bwd speed-up >= {TARGETS['amdahl_r0_0']} of its Amdahl bound at r0 = 0, >= "
    f"{TARGETS['amdahl_r0_14']} at r0 = 14 (Llama-3.1-8B shapes, N = 8192; cached rows, the mode the speed "
    f"targets hold for; lean reported beside it)",
    f"kept-column product G_y[:, I]·W0[I, :] <= {TARGETS['kept_over_p']}·p_eff of the dense G_y·W0",
    f"training step speed-up >= {TARGETS['step_amdahl']} of 1/(1 − s + s·p), s = G_y·W0's share of a profiled "
    f"dense step's kernel time (every thread), at 1B (4×2048 tokens) and 8B shapes (8 of 32 layers, 2×2048)",
    f"attribution: kernel time >= {TARGETS['attribution']} of the CUDA-event time of one 8B layer fwd+bwd",
    "exact: the Triton gather equals index_select; a layer fwd+bwd runs on the Triton gather; the profiled "
    "step sees G_y·W0 kernels; one SVD per converted W0, none when the same model is converted again",
)


@dataclass(frozen=True)
class Sizes:
    layer_model: str                                    # projection shapes of layers, attribution, kernels
    tokens: int                                         # N of those sections
    steps: dict[str, tuple[str, int, int, int]]         # section -> (model, decoder layers, batch, seq)
    convert_model: str


GPU = Sizes("llama-3.1-8b", 8192, {"step-1b": ("llama-3.2-1b", 16, 4, 2048), "step-8b": ("llama-3.1-8b", 8, 2, 2048)},
            "llama-3.2-1b")
SMOKE = Sizes("tiny-byte", 64, {"step-1b": ("tiny-byte", 4, 2, 32), "step-8b": ("tiny-byte", 2, 2, 32)}, "tiny-byte")

# Rounds per section kind. On the GPU each round also profiles one call of every callable (its kernel time).
BUDGETS = {
    "gpu.layers": TimingBudget(all_rounds=1, rounds=7, stages=(), cuda_warmup=3, cuda_reps=5),
    "gpu.steps": TimingBudget(all_rounds=1, rounds=5, stages=(), cuda_warmup=2, cuda_reps=2),
    "smoke": TimingBudget(all_rounds=1, rounds=2, stages=(), block_s=1e-3, cuda_warmup=1, cuda_reps=1),
}
CONVERT_BUDGET_S = 60.0     # default --convert-budget: the whole conversion runs when its estimate fits


class Stopped(KeyboardInterrupt):
    """SIGTERM (a time limit): the running section stops, the file keeps what finished."""


@dataclass
class Ctx:
    """What every section gets: the options, the sizes, the device and the timing budgets."""

    args: argparse.Namespace
    sizes: Sizes
    device: str
    dtype: torch.dtype
    layer_budget: TimingBudget
    step_budget: TimingBudget
    threads: int

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


@dataclass
class Section:
    """One section's output: printed lines, checks (PASS/FAIL/INFO) and raw data."""

    name: str
    lines: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def target(self, what: str, value: float, key: str, at_least: bool, detail: str = "") -> str:
        """A timed target from TARGETS: PASS or FAIL, printed and counted."""
        goal = TARGETS[key]
        ok = value >= goal if at_least else value <= goal
        return self._add(what, value, f"{'>=' if at_least else '<='} {goal}", "PASS" if ok else "FAIL", detail)

    def exact(self, what: str, ok: bool, detail: str = "") -> str:
        return self._add(what, bool(ok), "true", "PASS" if ok else "FAIL", detail)

    def info(self, what: str, value, detail: str = "") -> str:
        return self._add(what, value, "reported", "INFO", detail)

    def _add(self, what, value, target, status, detail) -> str:
        self.checks.append({"section": self.name, "check": what, "value": value, "target": target,
                            "status": status, "detail": detail})
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        self.say(f"  [{status}] {what}: {shown} (target {target})" + (f"; {detail}" if detail else ""))
        return status


# ---- timing: the harness's rounds ------------------------------------------------------

def timed(ctx: Ctx, fns: dict[str, Callable], budget: TimingBudget) -> dict[str, TimeStats]:
    """Every callable measured together in the harness's randomized rounds (rounds.time_rounds)."""
    stats = rounds.time_rounds(list(fns.values()), ctx.device, budget, ctx.threads, rounds=ctx.args.rounds)
    return dict(zip(fns, stats))


def timed_with_kernel(ctx: Ctx, fns: dict[str, Callable], budget: TimingBudget) -> dict[str, tuple]:
    """As timed, keeping each callable's device time per round too (CUDA; time_rounds returns the event
    samples only): {name: (TimeStats of the events, kernel seconds per round)}."""
    slots = [rounds.Slot(0, name, "fn", fn) for name, fn in fns.items()]
    sampler = rounds.Sampler(slots, ctx.device, budget, ctx.threads, seed=0)
    sampler.warm_up()
    for _ in range(ctx.args.rounds or budget.rounds):
        sampler.round()
    return {s.case_id: (TimeStats(tuple(s.samples)), tuple(s.kernel)) for s in slots}


def ms(stats: TimeStats) -> float:
    return stats.median * 1e3


def free(ctx: Ctx) -> None:
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


# ---- layers -------------------------------------------------------------------------

class _Wrap(nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        return self.lin(x)


def peft_layer(base: nn.Linear, autocast: bool):
    """peft's LoRA Linear over base's W0 (shared): autocast=True is peft as users get it (fp32 adapters)."""
    import peft
    cfg = peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["lin"])
    lin = nn.Linear(base.in_features, base.out_features, bias=False, device=base.weight.device,
                    dtype=base.weight.dtype)
    lin.weight = base.weight                                   # shared W0
    mod = peft.get_peft_model(_Wrap(lin), cfg, autocast_adapter_dtype=autocast).base_model.model.lin
    with torch.no_grad():
        mod.lora_B["default"].weight.normal_(std=0.01)
    return mod


def ours(base: nn.Linear, p: float, r0: int, **kw) -> core.CELoRALinear:
    layer = core.CELoRALinear.from_linear(base, core.CELoRAConfig(r=R, alpha=ALPHA, keep_ratio=p,
                                                                 svd_rank=r0 if p < 1 else 0, **kw))
    with torch.no_grad():
        layer.lora_B.normal_(std=0.01)
    return layer


def layer_inputs(ctx: Ctx, m: int, n: int, N: int):
    """W0 (as an nn.Linear), x (N, n) needing its gradient, and G_y (N, m) with heavy-tailed per-feature
    scales (as real gradients have; on i.i.d. columns every selection rule is the same)."""
    g = torch.Generator(device=ctx.device).manual_seed(0)
    kw = dict(generator=g, device=ctx.device, dtype=ctx.dtype)
    base = nn.Linear(n, m, bias=False, device=ctx.device, dtype=ctx.dtype)
    with torch.no_grad():
        base.weight.copy_(torch.randn(m, n, **kw) / n ** 0.5)
    x = torch.randn(N, n, **kw).requires_grad_(True)
    gy = torch.randn(N, m, **kw) * torch.exp(torch.randn(m, generator=g, device=ctx.device)).to(ctx.dtype)
    return base, x, gy


def fwd_bwd(mod: nn.Module, x: torch.Tensor, gy: torch.Tensor) -> Callable:
    params = [x] + [q for q in mod.parameters() if q.requires_grad]
    return lambda: torch.autograd.grad(mod(x), params, gy)


def sec_layers(ctx: Ctx, sec: Section) -> None:
    shape = models.get(ctx.sizes.layer_model)
    for label, (m, n) in shape.distinct_shapes().items():
        _layer_shape(ctx, sec, label, m, n, ctx.sizes.tokens)
        free(ctx)


def _layer_shape(ctx: Ctx, sec: Section, label: str, m: int, n: int, N: int) -> None:
    base, x, gy = layer_inputs(ctx, m, n, N)
    ratios = sorted({ALL_P} | {PAPER_RATIOS[p] for p in models.projections_of(label) if p in PAPER_RATIOS})
    mods = {"dense": ours(base, 1.0, 0), "peft": peft_layer(base, True), "peft-bf16": peft_layer(base, False)}
    with shared_svd(True):                                     # one W0 here: the memo is exact
        for p in ratios:
            for r0 in (0, R0):
                for mode in ("cached", "lean"):
                    mods[f"p{p}.r0={r0}.{mode}"] = ours(base, p, r0, cache_rows=mode == "cached")
    for mod in mods.values():                                  # first backward: CE-LoRA selects I
        fwd_bwd(mod, x, gy)()
    fns = {f"layer.{k}": fwd_bwd(v, x, gy) for k, v in mods.items()}
    fns["dense G_y·W0"] = lambda: C.grad_x_frozen_dense(gy, base.weight)
    for p in ratios:
        idx = mods[f"p{p}.r0=0.cached"].idx
        rows = base.weight.index_select(0, idx)                # (m, n) -> (k, n), contiguous
        fns[f"kept.p{p}"] = lambda idx=idx, rows=rows: torch.mm(gather.gather_columns(gy, idx), rows)
        fns[f"kept.p{p}.index_select"] = lambda idx=idx, rows=rows: torch.mm(gy.index_select(1, idx), rows)
    t = timed(ctx, fns, ctx.layer_budget)
    dense, frozen = t["layer.dense"].median, t["dense G_y·W0"].median
    s = frozen / dense
    sec.data.setdefault("shapes", []).append({
        "layer": label, "m": m, "n": n, "N": N, "samples": {k: list(v.samples) for k, v in t.items()},
        "k": {k: v.k for k, v in mods.items() if isinstance(v, core.CELoRALinear)},
        "gather": gather.methods_used()})
    sec.say(f"{label} {m}x{n} N={N}: dense layer {ms(t['layer.dense']):.3f} ms, G_y·W0 {ms(t['dense G_y·W0']):.3f} ms "
            f"(share s {s:.3f}); peft {t['layer.peft'].median / dense:.2f}x ours dense, peft bf16 adapters "
            f"{t['layer.peft-bf16'].median / dense:.2f}x")
    for p in ratios:
        for r0 in (0, R0):
            mod = mods[f"p{p}.r0={r0}.cached"]
            pe = mod.effective_keep_ratio
            bound = 1 / (1 - s + s * pe)
            cached, lean = t[f"layer.p{p}.r0={r0}.cached"].median, t[f"layer.p{p}.r0={r0}.lean"].median
            sp = dense / cached
            sec.target(f"{label} p={p} r0={r0} cached: layer speed-up / Amdahl bound", sp / bound,
                       "amdahl_r0_0" if r0 == 0 else "amdahl_r0_14", True,
                       f"k={mod.k} p_eff={pe:.4f} form={mod.grad_x_form}; {sp:.3f}x / {bound:.3f}; lean "
                       f"{dense / lean:.3f}x (lean/cached time {lean / cached:.3f})")
        k = mods[f"p{p}.r0=0.cached"].k
        pe = k / m
        kept = t[f"kept.p{p}"].median / frozen / pe
        sec.target(f"{label} p={p}: kept-column product / dense G_y·W0, units of p_eff", kept, "kept_over_p", False,
                   f"k={k} p_eff={pe:.4f}; {gather.methods_used().get(ctx.device.split(':')[0], '?')} gather + mm; "
                   f"index_select + mm {t[f'kept.p{p}.index_select'].median / frozen / pe:.3f}·p_eff")


@contextlib.contextmanager
def shared_svd(enabled: bool):
    """selection.svd_split computed once per (shape, r0, dtype, device) and reused: for timing, which
    depends on shapes only (the factors of one weight stand for another's)."""
    if not enabled:
        yield
        return
    real, memo = selection.svd_split, {}

    def split(W0, r0):
        key = (tuple(W0.shape), r0, W0.dtype, W0.device)
        if key not in memo:
            memo[key] = real(W0, r0)
        return memo[key]
    selection.svd_split = split
    try:
        yield
    finally:
        selection.svd_split = real


# ---- training steps ---------------------------------------------------------------------

# provider -> (plan, r0, cache_rows); `all` at p = 0.5 with r0 given: LoRA rank r − floor(r0/7)
STEP_PROVIDERS = {"ours dense": ("dense", 0, False), "all r0=14 lean": ("all", R0, False),
                  "all r0=0 cached": ("all", 0, True)}


def build_model(ctx: Ctx, name: str, layers: int):
    """A random-init causal LM with the named shapes and `layers` decoder layers, built on the device in
    the dtype it runs in (suites.model_step.building_on), seed 0."""
    import transformers
    shape = dataclasses.replace(models.get(name), layers=layers)
    torch.manual_seed(0)
    with building_on(ctx.device, ctx.dtype):
        model = transformers.AutoModelForCausalLM.from_config(models.hf_config(shape))
    model.config.use_cache = False
    return model.to(ctx.dtype), shape


def p_weighted(conv: core.Conversion) -> float:
    """k/m of the converted layers weighted by their dense G_y·W0 FLOPs (m·n): the p of the step's bound."""
    return sum(c.shape[0] * c.shape[1] * c.effective_keep_ratio for c in conv) / sum(
        c.shape[0] * c.shape[1] for c in conv)


def sec_step(ctx: Ctx, sec: Section, which: str) -> None:
    name, layers, batch, seq = ctx.sizes.steps[which]
    fns, ps = {}, {}
    ids = None
    for prov, (plan, r0, cache_rows) in STEP_PROVIDERS.items():
        model, shape = build_model(ctx, name, layers)
        if ids is None:
            ids = torch.randint(0, shape.vocab, (batch, seq), generator=torch.Generator().manual_seed(0)).to(ctx.device)
        if plan == "dense":
            conv = core.convert(model, "dense", r=R, alpha=ALPHA)
        else:
            with shared_svd(not ctx.args.exact_svd):
                conv = core.convert(model, plan, r=R, alpha=ALPHA, keep_ratio=ALL_P, svd_rank=r0,
                                    cache_rows=cache_rows)
        model.train()
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
        core.attach_optimizer(opt, model)

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
        step()                                     # first step: CE-LoRA selects its index (tau = 200 steps)
        fns[prov], ps[prov] = step, p_weighted(conv)
    # G_y·W0's share of the dense step: its scope's device time over every kernel of the step, all threads
    prof = flops.profile_scopes(fns["ours dense"], ("bwd.grad_x_frozen",), ctx.device)
    total = prof.device_s if ctx.cuda else prof.wall_s
    part = prof.seconds.get("bwd.grad_x_frozen", 0.0)
    s = part / total if total else 0.0
    basis = "kernel time" if ctx.cuda else "CPU op time / wall"
    sec.say(f"{name}, {layers} layers, {batch}x{seq} tokens, {str(ctx.dtype)[6:]}, AdamW on LoRA r={R}: profiled "
            f"dense step {total * 1e3:.1f} ms ({basis}), G_y·W0 {part * 1e3:.1f} ms: s = {s:.3f}")
    sec.exact("the profiled dense step shows G_y·W0 time (s > 0)", s > 0, f"s = {s:.4f} ({basis})")
    t = timed(ctx, fns, ctx.step_budget)
    dense = t["ours dense"].median
    sec.data.update({"model": name, "layers": layers, "batch": batch, "seq": seq, "share": s, "share_basis": basis,
                     "profiled_total_s": total, "profiled_grad_x_frozen_s": part, "p": ps,
                     "samples": {k: list(v.samples) for k, v in t.items()}})
    sec.say("  step: " + ", ".join(f"{k} {ms(v):.1f} ms" for k, v in t.items()))
    for prov in STEP_PROVIDERS:
        if prov == "ours dense":
            continue
        bound = 1 / (1 - s + s * ps[prov])
        sp = dense / t[prov].median
        sec.target(f"{which} {prov}: step speed-up / Amdahl bound", sp / bound, "step_amdahl", True,
                   f"{sp:.3f}x / {bound:.3f} (s = {s:.3f}, p = {ps[prov]:.4f})")


# ---- attribution ----------------------------------------------------------------------

def sec_attribution(ctx: Ctx, sec: Section) -> None:
    m, n = models.get(ctx.sizes.layer_model).layer_shapes()["up_proj"]
    N = ctx.sizes.tokens
    base, x, gy = layer_inputs(ctx, m, n, N)
    mods = {"dense": ours(base, 1.0, 0), f"p={ALL_P} r0=0 cached": ours(base, ALL_P, 0, cache_rows=True)}
    fns = {k: fwd_bwd(v, x, gy) for k, v in mods.items()}
    for fn in fns.values():                                    # first backward: CE-LoRA selects I
        fn()
    res = timed_with_kernel(ctx, fns, ctx.layer_budget)
    what = "kernel time / CUDA-event time" if ctx.cuda else "CPU op time / wall time"
    for k, mod in mods.items():
        events, kernel = res[k]
        if not ctx.cuda:                                       # the Sampler profiles on CUDA only
            kernel = tuple(timing.kernel_times([fns[k]] * events.count, ctx.device))
        kern = TimeStats(kernel).median
        fwd = TimeStats(timing.kernel_samples(lambda mod=mod: mod(x), ctx.device, reps=3)).median
        sec.data[k] = {"events": list(events.samples), "kernel": list(kernel), "forward_kernel": fwd}
        sec.target(f"{m}x{n} N={N} {k} fwd+bwd: {what}", kern / events.median, "attribution", True,
                   f"events {ms(events):.3f} ms, kernels {kern * 1e3:.3f} ms; the forward's kernels alone "
                   f"{fwd / events.median:.3f} of the events (what a count blind to the backward would read)")


# ---- SVD / convert cost ------------------------------------------------------------------

@contextlib.contextmanager
def counted_svd():
    """selection.svd_split counted: yields the list of (shape, r0) of every call."""
    real, calls = selection.svd_split, []

    def split(W0, r0):
        calls.append((tuple(W0.shape), r0))
        return real(W0, r0)
    selection.svd_split = split
    try:
        yield calls
    finally:
        selection.svd_split = real


def sec_convert(ctx: Ctx, sec: Section) -> None:
    name = ctx.sizes.convert_model
    model, shape = build_model(ctx, name, models.get(name).layers)
    per, counts = {}, {}
    for label, _ in shape.distinct_shapes().items():
        first = models.projections_of(label)[0]
        W = next(mod.weight for nm, mod in model.named_modules() if nm.endswith(first))
        ctx.sync()
        t0 = time.perf_counter()
        selection.svd_split(W, R0)
        ctx.sync()
        per[label] = time.perf_counter() - t0
        counts[label] = shape.layers * len(models.projections_of(label))
    estimate = sum(per[k] * counts[k] for k in per)
    sec.data.update({"model": name, "svd_s_by_shape": per, "svds_by_shape": counts, "estimate_s": estimate})
    sec.say(f"{name} on {ctx.device}, {str(ctx.dtype)[6:]}: one SVD (fp32) per shape " + ", ".join(
        f"{k} {v:.3f} s" for k, v in per.items()))
    sec.info(f"estimated SVD seconds of `all` r0={R0} ({sum(counts.values())} SVDs)", estimate)
    budget = ctx.args.convert_budget
    if estimate > budget:
        sec.say(f"  whole conversion not run: estimated {estimate:.1f} s > --convert-budget {budget:.0f} s")
        return
    cache: dict = {}
    with counted_svd() as calls:
        ctx.sync()
        t0 = time.perf_counter()
        conv = core.convert(model, "all", r=R, alpha=ALPHA, keep_ratio=ALL_P, svd_cache=cache)
        ctx.sync()
        first_s, first_svds = time.perf_counter() - t0, len(calls)
        del model
        free(ctx)
        again, _ = build_model(ctx, name, shape.layers)      # the same seed-0 weights
        ctx.sync()
        t0 = time.perf_counter()
        core.convert(again, "all", r=R, alpha=ALPHA, keep_ratio=ALL_P, svd_cache=cache)
        ctx.sync()
        again_s, again_svds = time.perf_counter() - t0, len(calls) - first_svds
    sec.data.update({"convert_s": first_s, "svds": first_svds, "layers": len(conv), "convert_cached_s": again_s,
                     "svds_cached": again_svds})
    sec.info(f"seconds to convert {name} with `all` r0={R0}", first_s, f"{len(conv)} layers")
    sec.exact("one SVD per converted W0", first_svds == len(conv), f"{first_svds} SVDs for {len(conv)} layers")
    sec.exact("the same model converted again from svd_cache computes no SVD", again_svds == 0,
              f"{again_svds} SVDs, {again_s:.2f} s")


# ---- k multiples and gather methods (reported) ----------------------------------------------

def sec_kernels(ctx: Ctx, sec: Section) -> None:
    N = ctx.sizes.tokens
    tri = None
    if ctx.cuda:
        from core import triton_gather as T
        tri = T if T.available() else None
    for label, (m, n) in models.get(ctx.sizes.layer_model).distinct_shapes().items():
        ps = sorted({ALL_P} | {PAPER_RATIOS[p] for p in models.projections_of(label) if p in PAPER_RATIOS})
        G = torch.randn(N, m, device=ctx.device, dtype=ctx.dtype)
        W = torch.randn(m, n, device=ctx.device, dtype=ctx.dtype)
        for p in ps:
            fns = {"dense": lambda: torch.mm(G, W)}
            for a in (1, 8, 16, 64, 128):                       # k = ceil(p·m) rounded up to a multiple of a
                k = min(m, -(-math.ceil(p * m) // a) * a)
                idx = torch.randperm(m, device=ctx.device)[:k].sort().values
                rows = W.index_select(0, idx)
                fns[f"k{k} (x{a})"] = lambda idx=idx, rows=rows: torch.mm(G.index_select(1, idx), rows)
            k = core.CELoRAConfig(keep_ratio=p).kept(m, ctx.device, ctx.dtype)
            idx = torch.randperm(m, device=ctx.device)[:k].sort().values
            fns["index_select"] = lambda idx=idx: G.index_select(1, idx)
            fns["torch.gather"] = lambda idx=idx: gather.torch_gather(G, idx)
            if tri is not None:
                for tile in ((8, 256), (16, 128), (32, 64), (4, 512), (8, 128)):
                    fns[f"triton{tile}"] = lambda idx=idx, tile=tile: tri.gather_columns(G, idx, tile)
            t = timed(ctx, fns, ctx.layer_budget)
            d = t["dense"].median
            sec.data.setdefault("cases", []).append({"layer": label, "p": p, "k": k,
                                                     "samples": {kk: list(v.samples) for kk, v in t.items()}})
            sec.say(f"{label} {m}x{n} p={p}: dense G·W {d * 1e3:.3f} ms; gather+mm / dense: " + ", ".join(
                f"{kk} {v.median / d:.3f}" for kk, v in t.items() if kk.startswith("k")) + f"; gathers at k={k}: "
                + ", ".join(f"{kk} {ms(v):.3f} ms" for kk, v in t.items() if not kk.startswith(("k", "dense"))))
        free(ctx)


# ---- smoke ----------------------------------------------------------------------------

def sec_smoke(ctx: Ctx, sec: Section) -> None:
    m, n = models.get(ctx.sizes.layer_model).layer_shapes()["up_proj"]
    N = ctx.sizes.tokens
    p = PAPER_RATIOS["up_proj"]
    k = core.CELoRAConfig(keep_ratio=p).kept(m, ctx.device, ctx.dtype)
    G = torch.randn(N, m, device=ctx.device, dtype=ctx.dtype)
    idx = torch.randperm(m)[:k].sort().values.to(ctx.device)                      # (k,) sorted
    ref = G.index_select(1, idx)                                                   # (N, m) -> (N, k)
    if ctx.cuda:
        from core import triton_gather as T
        if sec.exact("Triton importable", T.available()) == "PASS":
            got = T.gather_columns(G, idx)
            sec.exact(f"Triton {str(ctx.dtype)[6:]} gather equals index_select", torch.equal(got, ref),
                      f"{N}x{m} -> k={k} (p={p})")
    else:
        got = gather.gather_columns(G, idx)
        sec.exact(f"{gather.methods_used()['cpu']} gather equals index_select", torch.equal(got, ref),
                  f"{N}x{m} -> k={k} (p={p}); Triton is not timed on the CPU")
    del G, ref
    base, x, gy = layer_inputs(ctx, m, n, N)
    layer = ours(base, ALL_P, 0)
    grads = torch.autograd.grad(layer(x), [x, layer.lora_A, layer.lora_B], gy)
    ctx.sync()
    finite = all(bool(torch.isfinite(g).all()) for g in grads)
    used = gather.methods_used()
    sec.exact("one CE-LoRA layer fwd+bwd runs (finite G_x, G_A, G_B)", finite,
              f"{m}x{n} N={N} p={ALL_P} k={layer.k} r0={layer.r0} cache_rows={layer.config.cache_rows}, "
              f"grad_x_form {layer.grad_x_form}, gather {used}")
    if ctx.cuda:
        sec.exact("the layer's gather ran the Triton kernel", used.get("cuda") == "triton", str(used))


SECTIONS: dict[str, Callable[[Ctx, Section], None]] = {
    "smoke": sec_smoke,
    "layers": sec_layers,
    "step-1b": lambda ctx, sec: sec_step(ctx, sec, "step-1b"),
    "step-8b": lambda ctx, sec: sec_step(ctx, sec, "step-8b"),
    "attribution": sec_attribution,
    "convert": sec_convert,
    "kernels": sec_kernels,
}


# ---- running -------------------------------------------------------------------------

def _write(path: str, log: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(log, f, default=str)
    os.replace(tmp, path)


def run_sections(names: list[str], ctx: Ctx, log: dict, out: str) -> None:
    """Each section isolated: an exception is recorded (type, message, traceback) and the next one runs.
    The file is rewritten after every section. Stopped (SIGTERM) and Ctrl-C end the run after recording."""
    for name in names:
        sec = Section(name)
        entry = log["sections"][name] = {"status": "running"}
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            SECTIONS[name](ctx, sec)
            entry["status"] = "ok"
        except KeyboardInterrupt as e:
            entry["status"] = "stopped"
            log["status"] = "partial" if isinstance(e, Stopped) else "interrupted"
            raise
        except Exception as e:                                 # noqa: BLE001  (recorded, the next section runs)
            entry["status"] = "error"
            entry["error"] = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
            print(f"  [ERROR] {name}: {type(e).__name__}: {e}\n{entry['error']['traceback']}", flush=True)
        finally:
            entry.update(wall_s=time.perf_counter() - t0, lines=sec.lines, checks=sec.checks, data=sec.data)
            free(ctx)
            _write(out, log)


def summarize(log: dict) -> int:
    """The summary into log and printed; the verdict's exit status: 1 on any FAIL or section error, else 0."""
    checks = [c for s in log["sections"].values() for c in s.get("checks", [])]
    fails = [f"{c['section']}: {c['check']}" for c in checks if c["status"] == "FAIL"]
    errors = [n for n, s in log["sections"].items() if s["status"] == "error"]
    code = 1 if fails or errors else 0
    log["summary"] = {"pass": sum(c["status"] == "PASS" for c in checks), "fail": len(fails),
                      "info": sum(c["status"] == "INFO" for c in checks), "failed": fails, "errors": errors,
                      "exit_status": code}
    s = log["summary"]
    print(f"bench_gpu: {s['pass']} PASS, {s['fail']} FAIL, {s['info']} reported; sections with an error: "
          f"{', '.join(errors) or 'none'}", flush=True)
    for f in fails:
        print(f"  FAIL {f}", flush=True)
    return code


def parse(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file: every check, raw sample and error")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (checks every section's logic)")
    ap.add_argument("--section", action="append", choices=list(SECTIONS), default=None,
                    help="run this section (repeatable; default: all)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per timed section (default per section kind)")
    ap.add_argument("--exact-svd", action="store_true", help="one SVD per weight in the step models")
    ap.add_argument("--convert-budget", type=float, default=CONVERT_BUDGET_S, metavar="S",
                    help=f"convert: the whole conversion runs when its estimate is at most S seconds "
                         f"(default {CONVERT_BUDGET_S:.0f})")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.rounds is not None and args.rounds < 1:
        print(f"bench_gpu: --rounds {args.rounds} is invalid; allowed: an integer >= 1", file=sys.stderr)
        return 2
    if args.smoke:
        device, dtype, sizes = "cpu", torch.float32, SMOKE
        layer_budget = step_budget = BUDGETS["smoke"]
    elif not torch.cuda.is_available():
        print("bench_gpu: needs a CUDA GPU (or --smoke for the CPU logic check)", file=sys.stderr)
        return 2
    else:
        device, dtype, sizes = "cuda", torch.bfloat16, GPU
        layer_budget, step_budget = BUDGETS["gpu.layers"], BUDGETS["gpu.steps"]
    ctx = Ctx(args, sizes, device, dtype, layer_budget, step_budget, torch.get_num_threads())
    names = [n for n in SECTIONS if n in (args.section or SECTIONS)]
    log = {"smoke": args.smoke, "device": torch.cuda.get_device_name() if ctx.cuda else "cpu",
           "torch": torch.__version__, "dtype": str(dtype), "argv": list(argv if argv is not None else sys.argv[1:]),
           "targets": TARGETS, "target_text": list(TARGET_TEXT), "sections_run": names, "status": "running",
           "sections": {}}
    print(f"bench_gpu: {log['device']}, torch {torch.__version__}, {str(dtype)[6:]}; sections {', '.join(names)}; "
          f"medians of the harness's rounds ({layer_budget.rounds} per layer case, {step_budget.rounds} per step)",
          flush=True)
    print("targets:\n" + "\n".join(f"  - {t}" for t in TARGET_TEXT), flush=True)
    if args.smoke:
        print("smoke: tiny sizes on the CPU; every check runs its logic, and a timed PASS or FAIL here says "
              "nothing about the GPU targets", flush=True)

    def on_term(signum, frame):
        raise Stopped()
    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:                                         # not the main thread: no SIGTERM handling
        previous = None
    t0 = time.perf_counter()
    code = None
    try:
        run_sections(names, ctx, log, args.out)
        log["status"] = "complete"
    except KeyboardInterrupt as e:
        code = 143 if isinstance(e, Stopped) else 130
        print(f"bench_gpu: stopped ({'SIGTERM' if code == 143 else 'Ctrl-C'}); what finished is in {args.out}",
              flush=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        log["wall_s"] = time.perf_counter() - t0
        status = summarize(log)
        if code is None:
            code = status
        log["summary"]["exit_status"] = code
        _write(args.out, log)
        print(f"bench_gpu: {log['wall_s']:.1f} s, status {log['status']}, exit {code}; everything in {args.out}",
              flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
