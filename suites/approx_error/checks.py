"""approx-error's verdict: CE-LoRA's gradient errors by setting, module and index age; W0's spectrum."""
from __future__ import annotations

import statistics
from collections import defaultdict

from celora_bench.cases import Row
from celora_bench.models import PROJECTIONS
from celora_bench.suite import Check, CheckId
from core.config import balanced_rank
from suites.text_task import RANK

DOUBLE_CHECK = CheckId("double-lora", "double-LoRA reduces G_x error", headline=True)
SCORE_CHECK = CheckId("score", "product score beats the others")
STALE_CHECK = CheckId("staleness", "index staleness")
MODULE_CHECK = CheckId("by-module", "G_x error by module type")
REACH_CHECK = CheckId("reaching", "error reaching trainable gradients")
SPECTRUM_CHECK = CheckId("spectrum", "W0 spectrum: why double-LoRA helps where it does")
CHECKS = (DOUBLE_CHECK, SCORE_CHECK, STALE_CHECK, MODULE_CHECK, REACH_CHECK, SPECTRUM_CHECK)


def _mean_err(rows, **match) -> float | None:
    vals = [r.extra["rel_error"] for r in rows if all(
        (getattr(r.case, k) if hasattr(r.case, k) else r.extra.get(k)) == v for k, v in match.items())]
    return statistics.fmean(vals) if vals else None


def spectra(rows: list[Row]) -> list[dict]:
    """Per module type: mean energy shares of the top r0 and 2 r0 over layers, and the mean G_x error at
    p=0.5, product score, fresh index, with r0 = 0, balanced and 2 x balanced (where measured)."""
    spec = [r for r in rows if r.case.param("kind") == "spectrum"]
    gx = [r for r in rows if r.case.param("kind") == "gx"]
    out = []
    for mod in [m for m in PROJECTIONS if any(r.extra["module"] == m for r in spec)]:
        rs = [r for r in spec if r.extra["module"] == mod]
        d = {"module": mod, "layers": len(rs), "r0": rs[0].extra["r0"], "m": rs[0].extra["m"], "n": rs[0].extra["n"],
             "energy_r0": statistics.fmean(r.extra["energy_r0"] for r in rs),
             "energy_2r0": statistics.fmean(r.extra["energy_2r0"] for r in rs)}
        for tag, r0 in (("err0", 0), ("errb", d["r0"]), ("err2", 2 * d["r0"])):
            d[tag] = _mean_err(gx, keep_ratio=0.5, svd_rank=r0, score="product", staleness=0, module=mod)
        out.append(d)
    return out


def verdict(rows: list[Row], machine: dict | None = None) -> list[Check]:
    gx = [r for r in rows if r.case.param("kind") == "gx"]
    prop = [r for r in rows if r.case.param("kind") == "propagation"]
    checks = []
    bal = balanced_rank(RANK)
    for p in sorted({r.case.keep_ratio for r in gx}):
        e0 = _mean_err(gx, keep_ratio=p, svd_rank=0, score="product", staleness=0)
        eb = _mean_err(gx, keep_ratio=p, svd_rank=bal, score="product", staleness=0)
        e2 = _mean_err(gx, keep_ratio=p, svd_rank=2 * bal, score="product", staleness=0)
        if e0 is not None and eb is not None:
            checks.append(Check(DOUBLE_CHECK, f"p={p:g}, product, fresh index",
                                "mean rel. error r0=0 → balanced", eb, f"< {e0:.4f} (r0=0)",
                                "PASS" if eb < e0 else "FAIL",
                                f"r0=0 {e0:.4f}, r0={bal} {eb:.4f}" + (f", r0={2 * bal} {e2:.4f}" if e2 else "")))
        ep = eb
        for score in ("residual_norm", "random"):
            es = _mean_err(gx, keep_ratio=p, svd_rank=bal, score=score, staleness=0)
            if ep is not None and es is not None:
                checks.append(Check(SCORE_CHECK, f"vs {score}, p={p:g}, r0={bal}, fresh index",
                                    "mean rel. error product", ep, f"< {es:.4f} ({score})",
                                    "PASS" if ep < es else "FAIL"))
        stale = sorted({r.extra["staleness"] for r in gx})
        for s in stale[1:]:
            es = _mean_err(gx, keep_ratio=p, svd_rank=bal, score="product", staleness=s)
            if es is not None and eb:
                checks.append(Check(STALE_CHECK, f"p={p:g}, r0={bal}, product",
                                    f"mean rel. error after {s} steps", es, "reported", "INFO",
                                    f"{es / eb:.3f}× the fresh index's"))
    by_module = defaultdict(list)
    for r in gx:
        if r.case.keep_ratio == 0.5 and r.case.svd_rank == bal and r.case.score == "product" \
                and r.extra["staleness"] == 0:
            by_module[r.extra["module"]].append(r.extra["rel_error"])
    for mod, vals in sorted(by_module.items()):
        checks.append(Check(MODULE_CHECK, f"{mod}, p=0.5, r0={bal}", "mean rel. error",
                            statistics.fmean(vals), "reported", "INFO", kind="info"))
    for s in spectra(rows):
        checks.append(Check(SPECTRUM_CHECK,
                            f"{s['module']}, {s['layers']} blocks", f"energy share in the top {bal}", s["energy_r0"],
                            "reported", "INFO",
                            f"top {2 * bal}: {s['energy_2r0']:.3f}" + (
                                f"; G_x rel. error at p=0.5: r0=0 {s['err0']:.4f} → r0={bal} {s['errb']:.4f} "
                                f"({(s['errb'] / s['err0'] - 1) * 100:+.1f}%)" if s.get("errb") else ""),
                            kind="info"))
    for p in sorted({r.case.keep_ratio for r in prop}):
        for which in ("G_A", "G_B"):
            vals = [(r.extra["layer"], r.extra["rel_error"], r.extra["cosine"]) for r in prop
                    if r.case.keep_ratio == p and r.extra["grad"] == which]
            if not vals:
                continue
            by_layer = defaultdict(list)
            for layer, e, _ in vals:
                by_layer[layer].append(e)
            detail = ", ".join(f"L{k}: {statistics.fmean(v):.3f}" for k, v in sorted(by_layer.items()))
            checks.append(Check(REACH_CHECK, f"p={p:g} all projections, r0={bal}",
                                f"mean rel. error of {which}", statistics.fmean(e for _, e, _ in vals), "reported",
                                "INFO", f"by layer {detail}; mean cosine "
                                        f"{statistics.fmean(c for _, _, c in vals):.4f}"))
    return checks
