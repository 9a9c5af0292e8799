"""backward-breakdown: where a LoRA layer's forward+backward spends its time, and what CE-LoRA saves.

Per layer of a named model: time, FLOPs and memory of each component for
dense LoRA (ours), HF peft LoRA and CE-LoRA at several keep ratios p, then
the verdict: is the G_y·W0 share ~50%, and is it cut to p×?
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict

from celora_bench import intervals as I
from celora_bench.cases import Case, Row
from celora_bench.suite import Check, Options
from core.config import balanced_rank
from core.convert import PAPER_RATIOS
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
    """The sweep for the device: CPU sizes (N ~1-2k) or GPU sizes (N >= 8192; smaller is launch-bound)."""
    grid = _cuda_grid(opts) if opts.device.startswith("cuda") else _cpu_grid(opts)
    out = []
    for model, tokens, rank, providers in grid:
        for layer, (m, n) in model.layer_shapes().items():
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


def _paper_providers(rank: int, ps=(0.25, 0.5)):
    """p in ps plus the paper's ratio for the layers that have one, each with r0 = 0 and balanced."""
    def providers(layer: str) -> list[dict]:
        layer_ps = ps + ((PAPER_RATIOS[layer],) if layer in PAPER_RATIOS else ())
        return _providers(rank, layer_ps, (0, balanced_rank(rank)))
    return providers


def _cuda_grid(opts: Options) -> list:
    """Llama-3.1-8B and Llama-3.2-1B projections at 4×2048 tokens (r=16); full adds N and r."""
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
    against CE-LoRA at p=1/16 with SVD rank 56 and LoRA rank 56 (balanced)."""
    common = dict(suite=NAME, model="reference", layer="latency", m=4096, n=4096, tokens=16 * 8192, rank=64,
                  dtype=opts.dtype, device=opts.device)
    return [Case(provider="dense", **common), Case(provider="peft", **common),
            Case(provider="celora", keep_ratio=1 / 16, svd_rank=56, params=(("lora_rank", 56),), **common)]


setup = layer_bench.setup


def group_key(case: Case) -> tuple:
    """Every provider of one layer shape is timed interleaved with the others."""
    return (case.model, case.layer, case.tokens, case.rank, case.dtype, case.device)


# ---- verdict -----------------------------------------------------------------
#
# Every time-based quantity is judged by its interval (celora_bench.intervals): PASS when the
# whole interval clears the line, FAIL when the whole interval misses it, NOISE ("within noise")
# otherwise. On CUDA the checks are judged on kernel (device) time, with the wall-time value and
# the launch-bound mark beside it; on the CPU, whose ops run synchronously, on wall time.

def _group(case: Case) -> tuple:
    return (case.model, case.tokens, case.rank, case.dtype, case.device)


def _index(rows: list[Row]) -> dict[tuple[str, str], Row]:
    return {(r.case.id, r.component): r for r in rows}


def basis(rows: list[Row]) -> str:
    """"kernel" where the rows carry device-time samples (CUDA), else "wall"."""
    return "kernel" if any("kernel_samples" in r.extra for r in rows) else "wall"


def _samples(row: Row | None, on: str) -> tuple[float, ...]:
    if row is None:
        return ()
    if on == "kernel" and row.extra.get("kernel_samples"):
        return tuple(row.extra["kernel_samples"])
    return row.samples


def _selection(idx, case: Case, on: str) -> tuple[float, ...]:
    """The refresh amortized over tau, per call: its samples (zeros where the layer never refreshes)."""
    row = idx.get((case.id, "selection"))
    if row is None:
        return (0.0,)
    return tuple(t / case.tau for t in _samples(row, on))


def _launch(*rows: Row | None) -> str:
    return "; launch-bound (wall > kernel +25%)" if any(r is not None and r.extra.get("launch_bound")
                                                        for r in rows) else ""


def _within(iv: I.Interval, lo: float, hi: float) -> str:
    """PASS when [iv.lo, iv.hi] lies inside [lo, hi], FAIL when it lies wholly outside, else NOISE."""
    if lo <= iv.lo and iv.hi <= hi:
        return "PASS"
    if iv.hi < lo or iv.lo > hi:
        return "FAIL"
    return "NOISE"


SKINNY_MULTIPLE = 16    # the fused operand [s·B | C] is padded to a multiple of 16 columns (core.components)


def expected_frozen_flops(N: int, m: int, n: int, k: int, r: int, r0: int) -> int:
    """FLOPs of CE-LoRA's G_y·W0 by its definition (the brief), written apart from core/flops.py:
    the kept-column product G_y[:, I]·rows (2Nkn), the double-LoRA's T·A0 (2N·r0·n), and what reading
    G_y against C (B0, or B0 with the kept rows zeroed) adds to the G_y·B product it shares a pass
    with: [s·B | C] padded to w = r + r0 rounded up to a multiple of 16 columns, 2N·m·(w − r).
    k == m is the dense product 2Nmn."""
    if k >= m:
        return 2 * N * m * n
    w = -(-(r + r0) // SKINNY_MULTIPLE) * SKINNY_MULTIPLE if r0 else r
    return 2 * N * (k * n + r0 * n) + 2 * N * m * (w - r)


def _share_checks(idx, dense_cases: list[Case], on: str, scope: str) -> list[Check]:
    """FLOP share (counted) and time share of G_y·W0 in fwd+bwd, over one layer or summed over a block."""
    lo, hi = SHARE_RANGE
    target = f"[{lo:.2f}, {hi:.2f}]"
    comp = [idx.get((c.id, "bwd.grad_x_frozen")) for c in dense_cases]
    whole = [idx.get((c.id, "fwd+bwd")) for c in dense_cases]
    if any(r is None or not r.samples for r in comp + whole):
        return []
    out = []
    if all(r.flops_counted for r in comp + whole):
        f = sum(r.flops_counted for r in comp) / sum(r.flops_counted for r in whole)
        out.append(Check("1. G_y·W0 share of fwd+bwd", scope, "FLOP share (counted)", f, target,
                         _within(I.exact(f), lo, hi), "profiler count of one real fwd+bwd", f, f))
    L = len(dense_cases)

    def share(*meds):
        return sum(meds[:L]) / sum(meds[L:])

    iv = I.bootstrap(share, [_samples(r, on) for r in comp + whole])
    detail = ""
    if on == "kernel":
        wall = I.bootstrap(share, [r.samples for r in comp + whole])
        detail = f"wall-time share {wall}" + _launch(*comp, *whole)
    out.append(Check("1. G_y·W0 share of fwd+bwd", scope, f"time share ({on})", iv.value, target,
                     _within(iv, lo, hi), detail, iv.lo, iv.hi))
    return out


def verdict(rows: list[Row]) -> list[Check]:
    idx = _index(rows)
    on = basis(rows)
    checks: list[Check] = []
    dense: dict[tuple, Case] = {}
    for case in sorted({r.case for r in rows if r.case.provider == "dense"},
                       key=lambda c: (_group(c), _layer_order(c.layer))):
        dense[(_group(case), case.layer)] = case
        checks += _share_checks(idx, [case], on, f"{case.layer} {case.m}x{case.n} N={case.tokens} r={case.rank}")
    blocks: dict[tuple, list[Case]] = defaultdict(list)
    for (g, _), case in dense.items():
        blocks[g].append(case)
    for g, cases_ in blocks.items():
        if len(cases_) > 1:
            checks += _share_checks(idx, cases_, on, f"whole block ({g[0]}) N={g[1]} r={g[2]}")
    for case in sorted({r.case for r in rows if r.case.provider == "celora"}, key=lambda c: c.id):
        base = dense.get((_group(case), case.layer))
        if base is not None:
            checks += _cost_checks(idx, case, base, on)
    return checks


def _layer_order(layer: str) -> int:
    return models.PROJECTIONS.index(layer) if layer in models.PROJECTIONS else 99


def _cost_checks(idx, case: Case, base: Case, on: str) -> list[Check]:
    """CE-LoRA's G_y·W0 against dense: its bwd.grad_x_frozen scope plus what its fused skinny product
    adds to bwd.grad_h (G_y·C shares a pass with G_y·B there) plus the refresh amortized over tau."""
    c_row, d_row = idx.get((case.id, "bwd.grad_x_frozen")), idx.get((base.id, "bwd.grad_x_frozen"))
    c_gh, d_gh = idx.get((case.id, "bwd.grad_h")), idx.get((base.id, "bwd.grad_h"))
    if c_row is None or d_row is None or not c_row.samples or not d_row.samples:
        return []
    facts = c_row.extra                      # what the layer ran: k, its multiple, r0 (layer_bench)
    m, n, N, r = case.m, case.n, case.tokens, case.param("lora_rank", case.rank)
    a = facts.get("k_multiple", 1)
    k_rule = min(m, -(-math.ceil(case.keep_ratio * m - 1e-9) // a) * a)   # ceil(p·m) up to a multiple of a
    k, r0 = facts.get("k", k_rule), facts.get("r0", case.svd_rank)
    p_eff = k / m
    mode = "cached" if case.cache_rows else "lean"
    scope = f"{case.layer} N={N} r={case.rank} p={case.keep_ratio:g} (k/m={p_eff:.4g}) r0={r0} {mode}"
    out = []
    # 2a. FLOPs actually run vs what the config says they must be (k from the rule, not from core)
    want = expected_frozen_flops(N, m, n, k_rule, r, r0) / (2 * N * m * n)
    gh_counted = c_gh.flops_counted if c_gh is not None else None
    if c_row.flops_counted is not None and d_row.flops_counted and gh_counted is not None:
        got = (c_row.flops_counted + gh_counted - 2 * N * m * r) / d_row.flops_counted
        ok = k == k_rule and abs(got - want) <= 1e-9 * want
        out.append(Check("2. G_y·W0 cost vs dense", scope, "FLOP ratio (counted)", got,
                         f"= {want:.4f} (k={k_rule}: ceil(p·m) up to a multiple of {a}, r0 terms)",
                         "PASS" if ok else "FAIL", f"k run {k}, rule {k_rule}", got, got))
        exact = all(x.flops_counted == x.flops_analytic for x in (c_row, c_gh))
        out.append(Check("2. G_y·W0 cost vs dense", scope, "counted = analytic FLOPs", got,
                         "counted == analytic", "PASS" if exact else "FAIL",
                         f"G_y·W0 counted {c_row.flops_counted}, analytic {c_row.flops_analytic}; grad_h counted "
                         f"{c_gh.flops_counted}, analytic {c_gh.flops_analytic}", got, got, kind="exact"))
    # 2b. its time, the skinny product's share of grad_h and the refresh (over tau) charged, vs dense
    sel = _selection(idx, case, on)
    if c_gh is not None and d_gh is not None and c_gh.samples and d_gh.samples:
        lists, paired = [_samples(c_row, on), _samples(d_row, on), _samples(c_gh, on), _samples(d_gh, on), sel], \
            [(0, 1), (2, 3)]

        def ratio(c, d, cg, dg, s):
            return (c + (cg - dg) + s) / d
    else:
        lists, paired = [_samples(c_row, on), _samples(d_row, on), sel], [(0, 1)]

        def ratio(c, d, s):
            return (c + s) / d
    iv = I.bootstrap(ratio, lists, paired)
    line = TIME_SLACK * p_eff
    out.append(Check("2. G_y·W0 cost vs dense", scope, f"time ratio incl. selection ({on})", iv.value,
                     f"<= {line:.3f} (1.15·k/m)", iv.judge(line, above=False),
                     f"ratio/p = {iv.value / p_eff:.3f}" + _launch(c_row, d_row), iv.lo, iv.hi))
    # 3. the whole layer against the Amdahl bound of the measured dense share
    cw, dw = idx.get((case.id, "fwd+bwd")), idx.get((base.id, "fwd+bwd"))
    if cw is not None and dw is not None and cw.samples and dw.samples:
        def fraction(d_whole, c_whole, d_comp):
            s = d_comp / d_whole
            return (d_whole / c_whole) * (1 - s + s * p_eff)      # speed-up / bound 1/(1 - s + s·p)
        lists = [_samples(dw, on), _samples(cw, on), _samples(d_row, on)]
        iv = I.bootstrap(fraction, lists, [(0, 1)])
        speed = statistics.median(lists[0]) / statistics.median(lists[1])
        s = statistics.median(lists[2]) / statistics.median(lists[0])
        out.append(Check("3. layer fwd+bwd speed-up vs Amdahl", scope, f"speed-up / bound ({on})", iv.value,
                         f">= {AMDAHL_FRACTION:.2f}", iv.judge(AMDAHL_FRACTION, above=True),
                         f"speed-up {speed:.3f}×, bound {1 / (1 - s + s * p_eff):.3f} from share {s:.3f}"
                         + _launch(cw, dw), iv.lo, iv.hi))
    return out
