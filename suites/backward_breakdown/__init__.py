"""backward-breakdown: where a LoRA layer's forward+backward spends its time, and what CE-LoRA saves.

Per layer of a named model: time, FLOPs and memory of each component for
dense LoRA (ours), HF peft LoRA and CE-LoRA at several keep ratios p, then
the verdict: is the G_y·W0 share ~50%, and is it cut to p×?
"""
from __future__ import annotations

from celora_bench import models
from celora_bench.cases import Case
from celora_bench.suite import Options, Suite
from core.config import balanced_rank
from core.convert import PAPER_RATIOS
from core.scopes import GRAD_H, GRAD_X_FROZEN, GRAD_X_LORA, SELECTION
from suites import layer_bench
from suites.backward_breakdown import checks, plots

NAME = "backward-breakdown"
DESCRIPTION = "Per-component time/FLOPs/memory of one LoRA layer: dense, peft and CE-LoRA; share and p× verdict"
QUESTION = ("Is G_y·W0 (the frozen weight's input gradient) about half of a LoRA layer's forward+backward, does "
            "CE-LoRA cut it to p×, and does the layer reach the Amdahl bound that follows?")

FULL_PS = (0.25, 0.5, 0.55, 0.65, 0.75)


def _providers(rank: int, ps, svd_ranks, cached_at=()) -> list[dict]:
    out = [dict(provider="dense"), dict(provider="peft")]
    for p in ps:
        for r0 in svd_ranks:
            out.append(dict(provider="celora", keep_ratio=p, svd_rank=r0))
    for p in cached_at:
        out.append(dict(provider="celora", keep_ratio=p, svd_rank=0, cache_rows=True))
    return out


def cases(opts: Options) -> list[Case]:
    """The sweep for the device: CPU sizes (N ~1-2k) or GPU sizes (N >= 8192; smaller is launch-bound).

    Quick measures each distinct layer shape once (Llama-3.2-1B: q/o, k/v, gate/up, down, the layer
    labelled "q_proj+o_proj" etc.): time and FLOPs depend on the shape alone, and the block's share
    weights each shape by how many projections have it. Full measures every projection by name."""
    grid = _cuda_grid(opts) if opts.device.startswith("cuda") else _cpu_grid(opts)
    out = []
    for model, tokens, rank, providers in grid:
        layers = model.distinct_shapes() if opts.mode == "quick" else model.layer_shapes()
        if opts.device.startswith("cuda"):       # largest first: a run cut at its limit keeps the big shapes
            layers = dict(sorted(layers.items(), key=lambda kv: -kv[1][0] * kv[1][1]))
        for layer, (m, n) in layers.items():
            for kw in providers(layer):
                out.append(Case(NAME, model=model.name, layer=layer, m=m, n=n, tokens=tokens, rank=rank,
                                dtype=opts.dtype, device=opts.device, **kw))
    return out + (_reference_cases(opts) if opts.device.startswith("cuda") and opts.mode == "full" else [])


def _cpu_grid(opts: Options) -> list:
    model = models.get(opts.model or "llama-3.2-1b")
    if opts.mode == "quick":
        quick = (_providers(16, (0.25, 0.5), (0,), cached_at=(0.5,))
                 + [dict(provider="celora", keep_ratio=0.5, svd_rank=balanced_rank(16))])
        return [(model, 1024, 16, lambda layer: quick)]
    grid = [(model, 2048, 16, _every(_providers(16, FULL_PS, (0, balanced_rank(16)), cached_at=(0.25, 0.5))))]
    for r in (8, 64):
        grid.append((model, 2048, r, _every(_providers(r, (0.5,), (0, balanced_rank(r)), cached_at=(0.5,)))))
    grid.append((model, 512, 16, _every(_providers(16, (0.25, 0.5), (0, balanced_rank(16)), cached_at=(0.5,)))))
    return grid


def _every(providers: list[dict]):
    return lambda layer: providers


def _paper_providers(rank: int, ps=(0.25, 0.5), cached_at=()):
    """p in ps plus the paper's ratio for the layers that have one, each with r0 = 0 and balanced; cached rows
    at the p in cached_at (r0 = 0)."""
    def providers(layer: str) -> list[dict]:
        paper = tuple(PAPER_RATIOS[p] for p in models.projections_of(layer) if p in PAPER_RATIOS)
        return _providers(rank, tuple(dict.fromkeys(ps + paper)), (0, balanced_rank(rank)), cached_at)
    return providers


def _cuda_grid(opts: Options) -> list:
    """Full: Llama-3.1-8B and Llama-3.2-1B projections at 4×2048 tokens (r=16), plus other N and r. Quick (sized
    to scripts/gpu_check.sh's step, the GPU targets' layers): the 8B shapes at p = 0.5 and each shape's paper
    ratio, r0 = 0 and 14, lean, and cached rows at p = 0.5."""
    if opts.mode != "full":
        return [(models.get(opts.model or "llama-3.1-8b"), 8192, 16, _paper_providers(16, (0.5,), (0.5,)))]
    names = [opts.model] if opts.model else ["llama-3.1-8b", "llama-3.2-1b"]
    grid = [(models.get(name), 8192, 16, _paper_providers(16)) for name in names]
    if opts.mode == "full":
        for name in names:
            for tokens in (2048, 32768):
                grid.append((models.get(name), tokens, 16, _paper_providers(16)))
            for r in (8, 64):
                grid.append((models.get(name), 8192, r, _paper_providers(r, (0.5,))))
    return grid


def _reference_cases(opts: Options) -> list[Case]:
    """The reference code's latency setting: one 4096×4096 layer, 16×8192 tokens, dense LoRA r=64
    against CE-LoRA at p=1/16 with SVD rank 56 and LoRA rank 56 (balanced), lean and cached rows."""
    common = dict(suite=NAME, model="reference", layer="latency", m=4096, n=4096, tokens=16 * 8192, rank=64,
                  dtype=opts.dtype, device=opts.device)
    return [Case(provider="dense", **common), Case(provider="peft", **common)] + [
        Case(provider="celora", keep_ratio=1 / 16, svd_rank=56, cache_rows=cached, params=(("lora_rank", 56),),
             **common) for cached in (False, True)]


setup = layer_bench.setup
WORKERS = True          # each case is one layer: cheap to set up again in every worker process
JUDGED = ("fwd+bwd", GRAD_X_FROZEN, GRAD_H, SELECTION, GRAD_X_LORA,   # read by the verdict
          "detail.gather", "detail.kept_product",     # the kept-column product's halves (its own check)
          "roof.gemm", "roof.stream")                 # the roofs, best of every round (roofline.peaks_in)
GATED = (GRAD_X_FROZEN, "fwd+bwd", GRAD_H, SELECTION)    # gate --against: timed, candidate/base
SOL_SHOWN = (GRAD_X_FROZEN, "detail.gather", "detail.kept_product")   # speed of light without --detail


def gated_case(case: Case) -> bool:
    """What `gate --against` measures: our dense LoRA and each CE-LoRA code path once per shape (p = 0.5 lean,
    cached and double-LoRA); p = 0.25 runs the same code as p = 0.5, and peft's code is not ours to gate."""
    return case.provider == "dense" or (case.provider == "celora" and case.keep_ratio == 0.5)


def group_key(case: Case) -> tuple:
    """Every provider of one layer shape is timed interleaved with the others."""
    return (case.model, case.layer, case.tokens, case.rank, case.dtype, case.device)


SUITE = Suite(NAME=NAME, DESCRIPTION=DESCRIPTION, QUESTION=QUESTION, cases=cases, setup=setup,
              verdict=checks.verdict, CHECKS=checks.CHECKS, plots=plots.plots, PLOT_CAPTIONS=plots.PLOT_CAPTIONS,
              CHECK_PLOTS=(plots.SPEEDUP,),
              WORKERS=WORKERS, JUDGED=JUDGED, GATED=GATED, gated_case=gated_case, group_key=group_key,
              case_tables=layer_bench.tables, SOL_SHOWN=SOL_SHOWN)
