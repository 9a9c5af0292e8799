"""convert: seconds to convert a Llama-3.2-1B model with `all` (r0 = 14) on the device, in two cases so a cut
keeps the first. part=svd: one exact SVD per distinct shape timed (a row each) and the estimate for the whole
model. part=whole: the same estimate again; the whole conversion runs when it fits BUDGET_S (always at tiny
sizes, whose point is the logic), counting its SVDs; then the same seed-0 model, built again, is converted
from core.convert's svd_cache, which must compute none."""
from __future__ import annotations

import time

import core
from celora_bench import models
from celora_bench.cases import Case, Row
from celora_bench.suite import Check, CheckId, Context
from core import selection
from suites import causal_lm
from suites.gpu_targets import common
from suites.layer_bench import DTYPES

BUDGET_S = 10.0          # the whole conversion runs when its estimated SVD seconds are at most this
CONVERT_CHECK = CheckId("convert", "conversion cost")


def _clock(case: Case, fn, *args, **kw):
    """(seconds, result) of one call of fn on the device."""
    common.sync(case)
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    common.sync(case)
    return time.perf_counter() - t0, out


def run(case: Case, ctx: Context) -> list[Row]:
    dtype = DTYPES[case.dtype]
    shape = models.get(case.model)
    model = causal_lm.build(case.model, case.device, dtype)
    per, counts = {}, {}
    weights = {label: next(mod.weight for nm, mod in model.named_modules()
                           if nm.endswith(models.projections_of(label)[0])) for label in shape.distinct_shapes()}
    selection.svd_split(next(iter(weights.values())), common.R0)    # untimed: the solver's start-up is no shape's
    for label, W in weights.items():
        per[label] = _clock(case, selection.svd_split, W, common.R0)[0]
        counts[label] = shape.layers * len(models.projections_of(label))
    estimate = sum(per[k] * counts[k] for k in per)
    budget = BUDGET_S if case.param("sizes") == "gpu" else None
    facts = {"svd_s_by_shape": per, "svds_by_shape": counts, "estimate_s": estimate, "budget_s": budget}
    if case.param("part") == "svd":          # one timed row per shape (its one exact SVD) and the estimate
        return [Row(case, f"svd {label}", (per[label],), rounds=(0,), extra={"svds": counts[label]})
                for label in per] + [Row(case, "estimate", extra=facts)]
    if budget is not None and estimate > budget:
        return [Row(case, "convert", extra={**facts, "ran": False})]
    calls: list[tuple] = []

    def counted(W0, r0):                        # every SVD convert computes goes through here
        calls.append((tuple(W0.shape), r0))
        return selection.svd_split(W0, r0)
    cache: dict = {}
    kw = dict(r=common.R, alpha=common.ALPHA, keep_ratio=common.ALL_P, svd_cache=cache, svd=counted)
    first_s, conv = _clock(case, core.convert, model, "all", **kw)
    first_svds = len(calls)
    del model
    common.free(case)
    again = causal_lm.build(case.model, case.device, dtype)                   # the same seed-0 weights
    again_s, _ = _clock(case, core.convert, again, "all", **kw)
    return [Row(case, "convert", extra={**facts, "ran": True, "convert_s": first_s, "svds": first_svds,
                                        "layers": len(conv), "convert_cached_s": again_s,
                                        "svds_cached": len(calls) - first_svds})]


def verdict(case: Case, rows: list[Row]) -> list[Check]:
    scope = f"{case.model} on {case.device} {case.dtype}, `all` r0={common.R0}"
    est = next((r for r in rows if r.component == "estimate"), None)
    if est is not None:
        d = est.extra
        return [common.info(CONVERT_CHECK, scope, f"estimated SVD seconds ({sum(d['svds_by_shape'].values())} SVDs)",
                            d["estimate_s"], "one SVD (fp32) per shape: " + ", ".join(
                                f"{k} {v:.3f} s" for k, v in d["svd_s_by_shape"].items()))]
    row = next((r for r in rows if r.component == "convert"), None)
    if row is None:
        return []
    d = row.extra
    out = []
    if not d["ran"]:
        out.append(common.info(CONVERT_CHECK, scope, "whole conversion", None,
                               f"not run: estimated {d['estimate_s']:.1f} s > budget {d['budget_s']:.0f} s"))
        return out
    out += [common.info(CONVERT_CHECK, scope, "seconds to convert", d["convert_s"], f"{d['layers']} layers"),
            common.exact(scope, "one SVD per converted W0", d["svds"] == d["layers"],
                         f"{d['svds']} SVDs for {d['layers']} layers"),
            common.exact(scope, "the same model converted again from svd_cache computes no SVD",
                         d["svds_cached"] == 0, f"{d['svds_cached']} SVDs, {d['convert_cached_s']:.2f} s")]
    return out
