"""backward-breakdown: where a LoRA layer's forward+backward spends its time, and what CE-LoRA saves.

Per layer of a named model: time, FLOPs and memory of each component for
dense LoRA (ours), HF peft LoRA and CE-LoRA at several keep ratios p, then
the verdict: is the G_y·W0 share ~50%, and is it cut to p×?
"""
from __future__ import annotations

from collections import defaultdict

from celora_bench.cases import Case, Row
from celora_bench.suite import Check, Options
from core.config import balanced_rank
from suites import layer_bench, models

NAME = "backward-breakdown"
DESCRIPTION = "Per-component time/FLOPs/memory of one LoRA layer: dense, peft and CE-LoRA; share and p× verdict"

SHARE_RANGE = (0.40, 0.55)      # the paper's "~50%"
TIME_SLACK = 1.15               # CE-LoRA's G_y·W0 time ratio must be <= 1.15·p (+ selection)
AMDAHL_FRACTION = 0.95          # layer speed-up >= 95% of the Amdahl bound (the brief's reachable target)
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
    model = models.get(opts.model or "llama-3.2-1b")
    grid = []   # (tokens, rank, providers)
    if opts.mode == "quick":
        grid.append((1024, 16, _providers(16, (0.25, 0.5), (0,), cached_at=(0.5,))
                     + [dict(provider="celora", keep_ratio=0.5, svd_rank=balanced_rank(16))]))
    else:
        grid.append((2048, 16, _providers(16, FULL_PS, (0, balanced_rank(16)), cached_at=(0.25, 0.5))))
        for r in (8, 64):
            grid.append((2048, r, _providers(r, (0.5,), (0, balanced_rank(r)), cached_at=(0.5,))))
        grid.append((512, 16, _providers(16, (0.25, 0.5), (0, balanced_rank(16)), cached_at=(0.5,))))
    out = []
    for tokens, rank, providers in grid:
        for layer, (m, n) in model.layer_shapes().items():
            for kw in providers:
                out.append(Case(NAME, model=model.name, layer=layer, m=m, n=n, tokens=tokens, rank=rank,
                                dtype=opts.dtype, device=opts.device, **kw))
    return out


setup = layer_bench.setup


def group_key(case: Case) -> tuple:
    """Every provider of one layer shape is timed interleaved with the others."""
    return (case.model, case.layer, case.tokens, case.rank, case.dtype, case.device)


# ---- verdict -----------------------------------------------------------------

def _group(case: Case) -> tuple:
    return (case.model, case.tokens, case.rank, case.dtype, case.device)


def _index(rows: list[Row]) -> dict[tuple[str, str], Row]:
    return {(r.case.id, r.component): r for r in rows}


def _median(idx, case, component):
    row = idx.get((case.id, component))
    return row.time.median if row is not None and row.time is not None else None


def shares(rows: list[Row]):
    """Per dense case: (case, FLOP share, time share) of bwd.grad_x_frozen in the layer's fwd+bwd."""
    idx = _index(rows)
    out = []
    for case in {r.case for r in rows if r.case.provider == "dense"}:
        comp, whole = _median(idx, case, "bwd.grad_x_frozen"), _median(idx, case, "fwd+bwd")
        fa = idx.get((case.id, "bwd.grad_x_frozen"))
        fw = idx.get((case.id, "fwd+bwd"))
        if comp is None or whole is None:
            continue
        out.append((case, fa.flops_analytic / fw.flops_analytic, comp / whole, comp, whole))
    return sorted(out, key=lambda t: (_group(t[0]), models.PROJECTIONS.index(t[0].layer)
                                      if t[0].layer in models.PROJECTIONS else 99))


def _dense_of(case: Case, dense: dict) -> Case | None:
    return dense.get((_group(case), case.layer))


def verdict(rows: list[Row]) -> list[Check]:
    idx = _index(rows)
    checks: list[Check] = []
    lo, hi = SHARE_RANGE
    target = f"[{lo:.2f}, {hi:.2f}]"
    dense = {}
    block = defaultdict(lambda: [0.0, 0.0, 0, 0])
    share_of = {}
    for case, f_share, t_share, comp, whole in shares(rows):
        dense[(_group(case), case.layer)] = case
        share_of[case.id] = t_share
        scope = f"{case.layer} {case.m}x{case.n} N={case.tokens} r={case.rank}"
        for metric, v in (("FLOP share", f_share), ("time share", t_share)):
            checks.append(Check("1. G_y·W0 share of fwd+bwd", scope, metric, v, target,
                                "PASS" if lo <= v <= hi else "FAIL"))
        b = block[_group(case)]
        b[0] += comp
        b[1] += whole
        b[2] += idx[(case.id, "bwd.grad_x_frozen")].flops_analytic
        b[3] += idx[(case.id, "fwd+bwd")].flops_analytic
    for g, (comp, whole, fc, fw) in block.items():
        scope = f"whole block ({g[0]}) N={g[1]} r={g[2]}"
        for metric, v in (("FLOP share", fc / fw), ("time share", comp / whole)):
            checks.append(Check("1. G_y·W0 share of fwd+bwd", scope, metric, v, target,
                                "PASS" if lo <= v <= hi else "FAIL"))

    for case in sorted({r.case for r in rows if r.case.provider == "celora"}, key=lambda c: c.id):
        base = _dense_of(case, dense)
        if base is None:
            continue
        p = case.keep_ratio
        mode = "cached" if case.cache_rows else "lean"
        scope = f"{case.layer} N={case.tokens} r={case.rank} p={p:g} r0={case.svd_rank} {mode}"
        c_row, d_row = idx.get((case.id, "bwd.grad_x_frozen")), idx.get((base.id, "bwd.grad_x_frozen"))
        if c_row is None or d_row is None:
            continue
        f_ratio = c_row.flops_analytic / d_row.flops_analytic
        checks.append(Check("2. G_y·W0 cost vs dense", scope, "FLOP ratio (analytic)", f_ratio,
                            f"= {f_ratio:.4f} counted", "PASS" if c_row.flops_counted == c_row.flops_analytic
                            else "FAIL", f"counted {c_row.flops_counted}, analytic {c_row.flops_analytic}"))
        t_ratio = c_row.time.median / d_row.time.median
        sel = _median(idx, case, "selection.amortized") or 0.0
        allowed = TIME_SLACK * p + sel / d_row.time.median
        checks.append(Check("2. G_y·W0 cost vs dense", scope, "time ratio", t_ratio,
                            f"<= {allowed:.3f} (1.15·p + selection)", "PASS" if t_ratio <= allowed else "FAIL",
                            f"ratio/p = {t_ratio / p:.3f}"))
        lay_c, lay_d = _median(idx, case, "fwd+bwd"), _median(idx, base, "fwd+bwd")
        if lay_c and lay_d and base.id in share_of:
            s = share_of[base.id]
            bound = 1.0 / (1.0 - s + s * p)
            speedup = lay_d / lay_c
            checks.append(Check("3. layer fwd+bwd speed-up vs Amdahl", scope, "speed-up", speedup,
                                f">= {AMDAHL_FRACTION:.2f} × {bound:.3f}",
                                "PASS" if speedup >= AMDAHL_FRACTION * bound else "FAIL",
                                f"{speedup / bound:.3f} of the bound from share {s:.3f}"))
    return checks
