"""step-1b, step-8b: one AdamW step on LoRA (r = 16, all 7 projections) of a random-init causal LM built on the
device: Llama-3.2-1B shapes at 4×2048 tokens, and Llama-3.1-8B shapes (8 of 32 decoder layers) at 2×2048,
where G_y·W0's share is larger. One case per CE-LoRA provider (`all` p = 0.5 r0 = 0 cached first, then `all`
p = 0.5 r0 = 14 lean), each timed together with ours dense, so a cut keeps the cases that finished. Judged:
the CE-LoRA step's speed-up against the bound 1/(1 − s + s·p), s = G_y·W0's share of one profiled dense step's
kernel time (every thread, autograd's backward included; CPU: op time over wall time), p the kept fraction
weighted by each layer's dense G_y·W0 FLOPs; and the speed-up itself, at least 1 (a fraction of a bound near
1.1× alone passes a step slower than dense). The steps are timed by CUDA events only (common.events_only):
the verdict reads their times and the one profiled dense step, nothing else. The double-LoRA factors are
cheap ones (common.svd_per_shape): the step's time depends on the shapes only."""
from __future__ import annotations

import torch

import core
from celora_bench import flops, models
from celora_bench import intervals as I
from celora_bench.cases import Case, Row
from celora_bench.roofline import amdahl_bound
from celora_bench.suite import Check, CheckId, Context
from core.scopes import GRAD_X_FROZEN
from suites import causal_lm
from suites.gpu_targets import common
from suites.layer_bench import DTYPES

STEP_CHECK = CheckId("step-amdahl", "training step speed-up / Amdahl bound", headline=True)
SPEEDUP_CHECK = CheckId("step-speedup", "training step speed-up over ours dense", headline=True)
DENSE = "ours dense"
# provider -> (plan, r0, cache_rows); `all` at p = 0.5 with r0 given: LoRA rank r − floor(r0/7). The first
# CE-LoRA provider is the headline's: its case runs first.
PROVIDERS = {DENSE: ("dense", 0, False), "all r0=0 cached": ("all", 0, True),
             "all r0=14 lean": ("all", common.R0, False)}
VERSUS = tuple(p for p in PROVIDERS if p != DENSE)
PROFILE = "profile: one dense step"


def p_weighted(conv: core.Conversion) -> float:
    """k/m of the converted layers weighted by their dense G_y·W0 FLOPs (m·n): the p of the step's bound."""
    return sum(c.shape[0] * c.shape[1] * c.effective_keep_ratio for c in conv) / sum(
        c.shape[0] * c.shape[1] for c in conv)


def _step(case: Case, prov: str, ids: torch.Tensor, svd) -> tuple:
    """(one training step of a freshly built model under prov, its facts), after its first step."""
    plan, r0, cache_rows = PROVIDERS[prov]
    model = causal_lm.build(case.model, case.device, DTYPES[case.dtype], layers=case.param("decoder_layers"))
    model.config.use_cache = False
    if plan == "dense":
        conv = core.convert(model, "dense", r=common.R, alpha=common.ALPHA)
    else:
        conv = core.convert(model, plan, r=common.R, alpha=common.ALPHA, keep_ratio=common.ALL_P, svd_rank=r0,
                            cache_rows=cache_rows, svd=svd)
    model.train()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    core.attach_optimizer(opt, model)

    def step():
        opt.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    step()                                       # first step: CE-LoRA selects its index (tau = 200 steps)
    return step, {"p": p_weighted(conv), "layers": len(conv)}


def run(case: Case, ctx: Context) -> list[Row]:
    batch, seq = case.param("batch"), case.param("seq")
    svd = common.svd_per_shape()                # cheap factors once per weight shape
    ids = torch.randint(0, models.get(case.model).vocab, (batch, seq),
                        generator=torch.Generator().manual_seed(0)).to(case.device)
    fns, facts = {}, {}
    for prov in (DENSE, case.param("versus")):
        fns[f"step {prov}"], facts[f"step {prov}"] = _step(case, prov, ids, svd)
    # G_y·W0's share of the dense step: its scope's device time over every kernel of the step, all threads
    prof = flops.profile_scopes(fns[f"step {DENSE}"], (GRAD_X_FROZEN,), case.device)
    profiled = Row(case, PROFILE, extra={"seconds_by_scope": prof.seconds, "profiled_wall_s": prof.wall_s,
                                         "profiled_device_s": prof.device_s})
    return [profiled] + common.events_only(case, fns, "steps", ctx.threads, facts)


def verdict(case: Case, rows: list[Row]) -> list[Check]:
    by = {r.component: r for r in rows}
    s, basis = causal_lm.time_share(by.get(PROFILE))
    prov = case.param("versus")
    scope = f"{case.param('sizes')} {case.provider} {case.model}, {case.param('decoder_layers')} layers, " \
            f"{case.param('batch')}x{case.param('seq')} tokens"
    seen = common.exact(f"{scope} {prov}", "the profiled dense step shows G_y·W0 time (s > 0)", s is not None,
                        "no G_y·W0 time in the profile" if s is None else f"s = {s:.4f} ({basis})")
    if s is None:
        return [seen]
    out = [seen, common.info(STEP_CHECK, f"{scope} {prov}", f"G_y·W0 share s of the dense step ({basis})", s)]
    dense, row = by.get(f"step {DENSE}"), by.get(f"step {prov}")
    if row is None or dense is None:
        return out
    p = row.extra["p"]
    iv = I.over_rounds(lambda d, c: d / c / amdahl_bound(s, p), [dense.series, row.series])
    speed = I.paired_ratio(dense.series, row.series)
    detail = (f"{speed.value:.3f}x / {amdahl_bound(s, p):.3f} (s = {s:.3f}, p = {p:.4f}); step {common.ms(row):.1f} "
              f"ms, ours dense {common.ms(dense):.1f} ms")
    reads = ((case.id, f"step {DENSE}"), (case.id, row.component))
    out.append(common.target_check(STEP_CHECK, f"{scope} {prov}", f"speed-up / bound ({common.clock(case)})", iv,
                                   "step_amdahl", True, detail, reads=reads))
    out.append(common.target_check(SPEEDUP_CHECK, f"{scope} {prov}", f"ours dense / CE-LoRA step time "
                                   f"({common.clock(case)})", speed, "step_speedup", True, detail, reads=reads))
    return [c for c in out if c is not None]
