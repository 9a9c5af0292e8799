"""layers: one case per distinct projection shape, largest first (Llama-3.1-8B on CUDA, N = 8192, r = 16; the
double-LoRA factors cheap ones, common.svd_per_shape): ours dense, peft
(adapters upcast to fp32, as users get it, and kept in the weight's dtype), CE-LoRA at p = 0.5 and the paper's
ratio, r0 = 0 and 14, cached rows and lean, all over one W0 and timed together. Judged: the layer's fwd+bwd
speed-up against its Amdahl bound 1/(1 − s + s·p_eff) (s: G_y·W0's measured share of the dense layer, per
round), and the kept-column product G_y[:, I]·W0[I] against the dense G_y·W0.

kernels (reported, no target): the kept-column product per k multiple (1, 8, 16, 64, 128), and the gather
methods per Triton tile, per shape and p."""
from __future__ import annotations

import torch

import core
from celora_bench import intervals as I
from celora_bench import models
from celora_bench.cases import Case, Row
from celora_bench.roofline import amdahl_bound
from celora_bench.suite import Check, CheckId, Context
from core import components as C
from core import gather
from core.convert import PAPER_RATIOS
from suites.gpu_targets import common
from suites.layer_bench import DTYPES, peft_linear
from suites.lines import amdahl_line

AMDAHL_CHECK = CheckId("layer-amdahl", "layer fwd+bwd speed-up / Amdahl bound", headline=True)
KEPT_CHECK = CheckId("kept", "kept-column product / dense G_y·W0, units of p_eff")
KERNELS_CHECK = CheckId("kernels", "kernels (reported)")


def ratios(layer: str) -> list[float]:
    """p = 0.5 and the paper's ratio of the layer's projections, where they have one."""
    return sorted({common.ALL_P} | {PAPER_RATIOS[p] for p in models.projections_of(layer) if p in PAPER_RATIOS})


def run(case: Case, ctx: Context) -> list[Row]:
    base, x, gy = common.layer_inputs(case, case.m, case.n, case.tokens)
    svd = common.svd_per_shape()                               # cheap factors, once: the timing reads shapes
    mods = {"dense": common.ours(base, 1.0, 0), "peft": peft_linear(base, common.R, common.ALPHA),
            "peft-native": peft_linear(base, common.R, common.ALPHA, autocast=False)}
    for p in ratios(case.layer):
        for r0 in (0, common.R0):
            for mode in ("cached", "lean"):
                mods[f"p{p}.r0={r0}.{mode}"] = common.ours(base, p, r0, svd, cache_rows=mode == "cached")
    for mod in mods.values():                                  # first backward: CE-LoRA selects I
        common.fwd_bwd(mod, x, gy)()
    fns = {f"layer.{k}": common.fwd_bwd(v, x, gy) for k, v in mods.items()}
    facts = {f"layer.{k}": {"k": v.k, "p_eff": v.effective_keep_ratio, "grad_x_form": v.grad_x_form,
                            "keep_ratio": v.config.keep_ratio, "r0": v.r0, "cache_rows": v.config.cache_rows}
             for k, v in mods.items() if isinstance(v, core.CELoRALinear) and not v.dense}
    fns["dense G_y·W0"] = lambda: C.grad_x_frozen_dense(gy, base.weight)
    method = gather.methods_used().get(case.device.split(":")[0], "?")
    for p in ratios(case.layer):
        kept = mods[f"p{p}.r0=0.cached"]
        idx, rows = kept.idx, base.weight.index_select(0, kept.idx)   # (m, n) -> (k, n), contiguous
        fns[f"kept.p{p}"] = lambda idx=idx, rows=rows: torch.mm(gather.gather_columns(gy, idx), rows)
        fns[f"kept.p{p}.index_select"] = lambda idx=idx, rows=rows: torch.mm(gy.index_select(1, idx), rows)
        facts[f"kept.p{p}"] = {"keep_ratio": p, "k": kept.k, "p_eff": kept.k / case.m, "gather": method,
                               "kept": "gather"}
        facts[f"kept.p{p}.index_select"] = {"keep_ratio": p, "k": kept.k, "p_eff": kept.k / case.m,
                                            "kept": "index_select"}
    return common.timed(case, fns, "layers", ctx.threads, facts)


def verdict(case: Case, rows: list[Row]) -> list[Check]:
    by = {r.component: r for r in rows}
    if "layer.dense" not in by or "dense G_y·W0" not in by:
        return []
    dense, frozen = by["layer.dense"].series, by["dense G_y·W0"].series
    scope = f"{case.layer} {case.m}x{case.n} N={case.tokens}"
    share = I.over_rounds(lambda d, g: g / d, [dense, frozen])
    peft = {k: I.paired_ratio(by[f"layer.{k}"].series, dense) for k in ("peft", "peft-native") if f"layer.{k}" in by}
    out = [common.info(AMDAHL_CHECK, scope, f"G_y·W0 share s of the dense layer ({common.clock(case)})", share.value,
                       f"dense layer {common.ms(by['layer.dense']):.3f} ms, G_y·W0 "
                       f"{common.ms(by['dense G_y·W0']):.3f} ms; "
                       + ", ".join(f"{k} {iv.value:.2f}x ours dense" for k, iv in peft.items()))]
    celora = [r for r in rows if "r0" in r.extra]               # a CE-LoRA layer: its facts say which
    for row in sorted(celora, key=lambda r: (r.extra["keep_ratio"], r.extra["r0"])):
        if not row.extra["cache_rows"]:
            continue
        name, p, r0, pe = row.component, row.extra["keep_ratio"], row.extra["r0"], row.extra["p_eff"]
        lean = next(r for r in celora if not r.extra["cache_rows"]
                    and (r.extra["keep_ratio"], r.extra["r0"]) == (p, r0))

        def fraction(d, c, g, pe=pe):                          # speed-up d/c over the Amdahl bound
            return d / c / amdahl_bound(g / d, pe)
        iv = I.over_rounds(fraction, [dense, row.series, frozen])
        speed = I.paired_ratio(dense, row.series)
        out.append(common.target_check(
            AMDAHL_CHECK, f"{scope} p={p} r0={r0} cached", f"speed-up / bound ({common.clock(case)})", iv,
            amdahl_line(case.device, r0), True,
            f"k={row.extra['k']} p_eff={pe:.4f} form={row.extra['grad_x_form']}; {speed.value:.3f}x / "
            f"{amdahl_bound(share.value, pe):.3f}; lean {I.paired_ratio(dense, lean.series).value:.3f}x "
            f"(lean/cached time {I.paired_ratio(lean.series, row.series).value:.3f})",
            reads=((case.id, "layer.dense"), (case.id, name), (case.id, "dense G_y·W0"))))
    for row in [r for r in rows if r.extra.get("kept") == "gather"]:
        name, pe = row.component, row.extra["p_eff"]
        iv = I.over_rounds(lambda kp, g, pe=pe: kp / g / pe, [row.series, frozen])
        twin = next(r for r in rows if r.extra.get("kept") == "index_select" and r.extra["keep_ratio"]
                    == row.extra["keep_ratio"])
        plain = I.over_rounds(lambda kp, g, pe=pe: kp / g / pe, [twin.series, frozen])
        out.append(common.target_check(
            KEPT_CHECK, f"{scope} p={row.extra['keep_ratio']}", f"time / (p_eff · dense) ({common.clock(case)})", iv,
            "kept_over_p", False, f"k={row.extra['k']} p_eff={pe:.4f}; {row.extra['gather']} gather + mm; "
            f"index_select + mm {plain.value:.3f}·p_eff", reads=((case.id, name), (case.id, "dense G_y·W0"))))
    return [c for c in out if c is not None]


# ---- kernels: k multiples and gather methods (reported) ----------------------------------------

MULTIPLES = (1, 8, 16, 64, 128)
TILES = ((8, 256), (16, 128), (32, 64), (4, 512), (8, 128))


def run_kernels(case: Case, ctx: Context) -> list[Row]:
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
    return common.timed(case, fns, "layers", ctx.threads, facts)


def verdict_kernels(case: Case, rows: list[Row]) -> list[Check]:
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
