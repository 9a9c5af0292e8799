"""kernels (reported, no target): on one projection shape per case, the kept-column product per k multiple
(1, 8, 16, 64, 128) against the dense G·W, and the gather methods per Triton tile, at p = 0.5 and the layer's
paper ratio. The layer's own figures (speed-up against its Amdahl bound, the kept-column product against
its line) are backward-breakdown's, on the same shapes."""
from __future__ import annotations

import torch

import core
from celora_bench import intervals as I
from celora_bench import models
from celora_bench.cases import Case, Row
from celora_bench.suite import Check, CheckId, Context
from core import gather
from core.convert import PAPER_RATIOS
from suites.gpu_targets import common
from suites.layer_bench import DTYPES

KERNELS_CHECK = CheckId("kernels", "kernels (reported)")


def ratios(layer: str) -> list[float]:
    """p = 0.5 and the paper's ratio of the layer's projections, where they have one."""
    return sorted({common.ALL_P} | {PAPER_RATIOS[p] for p in models.projections_of(layer) if p in PAPER_RATIOS})


MULTIPLES = (1, 8, 16, 64, 128)
TILES = ((8, 256), (16, 128), (32, 64), (4, 512), (8, 128))


def run(case: Case, ctx: Context) -> list[Row]:
    m, n, N, dtype = case.m, case.n, case.tokens, DTYPES[case.dtype]
    tri = None
    if common.cuda(case):
        from core import triton_gather as T
        tri = T if T.available() else None
    G = torch.randn(N, m, device=case.device, dtype=dtype)
    W = torch.randn(m, n, device=case.device, dtype=dtype)
    fns, facts = {"dense": lambda: torch.mm(G, W)}, {}
    for p in ratios(case.layer):
        for a in MULTIPLES:                                    # k = ceil(p·m) rounded up to a multiple of a
            k = core.CELoRAConfig(keep_ratio=p, k_multiple=a).kept(m)
            idx = torch.randperm(m, device=case.device)[:k].sort().values
            rows = W.index_select(0, idx)                      # (k, n)
            fns[f"p{p} kept x{a}"] = lambda idx=idx, rows=rows: torch.mm(G.index_select(1, idx), rows)
            facts[f"p{p} kept x{a}"] = {"keep_ratio": p, "k": k, "multiple": a}
        k = core.CELoRAConfig(keep_ratio=p).kept(m, case.device, dtype)
        idx = torch.randperm(m, device=case.device)[:k].sort().values
        gathers = {"index_select": lambda idx=idx: G.index_select(1, idx),
                   "torch.gather": lambda idx=idx: gather.torch_gather(G, idx)}
        for tile in TILES if tri is not None else ():
            gathers[f"triton{tile}"] = lambda idx=idx, tile=tile: tri.gather_columns(G, idx, tile)
        for name, fn in gathers.items():
            fns[f"p{p} gather {name}"] = fn
            facts[f"p{p} gather {name}"] = {"keep_ratio": p, "k": k, "method": name}
    return common.timed(case, fns, "layer", ctx.threads, facts)


def verdict(case: Case, rows: list[Row]) -> list[Check]:
    by = {r.component: r for r in rows}
    if "dense" not in by:
        return []
    out = []
    for p in sorted({r.extra["keep_ratio"] for r in rows if "keep_ratio" in r.extra}):
        kept = {r.extra["multiple"]: I.paired_ratio(r.series, by["dense"].series)
                for r in rows if r.extra.get("keep_ratio") == p and "multiple" in r.extra}
        gathers = {r.extra["method"]: r for r in rows if r.extra.get("keep_ratio") == p and "method" in r.extra}
        scope = f"{case.layer} {case.m}x{case.n} N={case.tokens} p={p}"
        out.append(common.info(KERNELS_CHECK, scope, "gather + mm / dense G·W, at k up to a multiple of 64",
                               kept[64].value if 64 in kept else None,
                               ", ".join(f"x{a} {iv.value:.3f}" for a, iv in sorted(kept.items()))))
        best = min(gathers.items(), key=lambda kv: kv[1].time.median)
        out.append(common.info(KERNELS_CHECK, scope, f"fastest gather of k={best[1].extra['k']} columns, ms",
                               common.ms(best[1]), f"{best[0]}; " + ", ".join(
                                   f"{k} {common.ms(r):.3f} ms" for k, r in gathers.items())))
    return out
