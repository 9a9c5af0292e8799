"""smoke: the column gather equals index_select at 8192×14336 (k at the paper's p = 0.65), Triton's on CUDA; one
CE-LoRA layer (14336×4096, N = 8192) runs its forward and backward, on the Triton gather on CUDA, and three
more calls are timed (a row with samples: the step leaves a timed row whatever follows)."""
from __future__ import annotations

import torch

from celora_bench import timing
from celora_bench.cases import Case, Row
from celora_bench.suite import Check, Context
from core import gather
from core.config import CELoRAConfig
from core.convert import PAPER_RATIOS
from suites.gpu_targets import common
from suites.layer_bench import DTYPES

TIMED_CALLS = 3


def run(case: Case, ctx: Context) -> list[Row]:
    m, n, N = case.m, case.n, case.tokens                  # up_proj: (intermediate, hidden)
    dtype = DTYPES[case.dtype]
    p = PAPER_RATIOS["up_proj"]
    k = CELoRAConfig(keep_ratio=p).kept(m, case.device, dtype)
    G = torch.randn(N, m, device=case.device, dtype=dtype)
    idx = torch.randperm(m)[:k].sort().values.to(case.device)                    # (k,) sorted
    ref = G.index_select(1, idx)                                                   # (N, m) -> (N, k)
    out = []
    where = f"{N}x{m} -> k={k} (p={p})"
    if common.cuda(case):
        from core import triton_gather as T
        out.append(common.fact(case, "Triton importable", T.available()))
        if T.available():
            got = T.gather_columns(G, idx)
            out.append(common.fact(case, f"Triton {case.dtype} gather equals index_select", torch.equal(got, ref),
                                   where))
    else:
        got = gather.gather_columns(G, idx)
        out.append(common.fact(case, f"{gather.methods_used()['cpu']} gather equals index_select",
                               torch.equal(got, ref), f"{where}; Triton is not run on the CPU"))
    del G, ref
    base, x, gy = common.layer_inputs(case, m, n, N)
    layer = common.ours(base, common.ALL_P, 0)
    grads = torch.autograd.grad(layer(x), [x, layer.lora_A, layer.lora_B], gy)
    common.sync(case)
    used = gather.methods_used()
    out.append(common.fact(case, "one CE-LoRA layer fwd+bwd runs (finite G_x, G_A, G_B)",
                           all(bool(torch.isfinite(g).all()) for g in grads),
                           f"{m}x{n} N={N} p={common.ALL_P} k={layer.k} r0={layer.r0} "
                           f"cache_rows={layer.config.cache_rows}, grad_x_form {layer.grad_x_form}, gather {used}"))
    if common.cuda(case):
        out.append(common.fact(case, "the layer's gather ran the Triton kernel", used.get("cuda") == "triton",
                               str(used)))
    fn = common.fwd_bwd(layer, x, gy)
    samples = tuple(timing.call_seconds(fn, case.device) for _ in range(TIMED_CALLS))
    out.append(Row(case, "layer fwd+bwd", samples, rounds=tuple(range(TIMED_CALLS)),
                   extra={"clock": common.clock(case), "gather": gather.methods_used()}))
    return out


def verdict(case: Case, rows: list[Row]) -> list[Check]:
    return []                                              # its facts are every check (common.fact_checks)
