"""step-1b, step-8b: one AdamW step on LoRA (r = 16, all 7 projections) of a random-init causal LM built on the
device: Llama-3.2-1B shapes at 4×2048 tokens, and Llama-3.1-8B shapes (8 of 32 decoder layers) at 2×2048,
where G_y·W0's share is larger. Providers: ours dense, `all` p = 0.5 r0 = 14 lean, `all` p = 0.5 r0 = 0
cached, timed together. Judged: each CE-LoRA step's speed-up against the bound 1/(1 − s + s·p), s = G_y·W0's
share of one profiled dense step's kernel time (every thread, autograd's backward included; CPU: op time over
wall time), p the kept fraction weighted by each layer's dense G_y·W0 FLOPs."""
from __future__ import annotations

import torch

import core
from celora_bench import flops, models
from celora_bench import intervals as I
from celora_bench.cases import Case, Row
from celora_bench.roofline import amdahl_bound
from celora_bench.suite import Check, Context
from suites import model_step
from suites.gpu_targets import common
from suites.layer_bench import DTYPES
from suites.model_step import checks as model_step_checks

STEP_CHECK = "3. training step speed-up / Amdahl bound"
# provider -> (plan, r0, cache_rows); `all` at p = 0.5 with r0 given: LoRA rank r − floor(r0/7)
PROVIDERS = {"ours dense": ("dense", 0, False), "all r0=14 lean": ("all", common.R0, False),
             "all r0=0 cached": ("all", 0, True)}
PROFILE = "profile: one dense step"


def p_weighted(conv: core.Conversion) -> float:
    """k/m of the converted layers weighted by their dense G_y·W0 FLOPs (m·n): the p of the step's bound."""
    return sum(c.shape[0] * c.shape[1] * c.effective_keep_ratio for c in conv) / sum(
        c.shape[0] * c.shape[1] for c in conv)


def run(case: Case, ctx: Context) -> list[Row]:
    batch, seq, layers = case.param("batch"), case.param("seq"), case.param("decoder_layers")
    dtype = DTYPES[case.dtype]
    svd = common.svd_per_shape()                # one SVD per weight shape: the step's time depends on shapes only
    ids = torch.randint(0, models.get(case.model).vocab, (batch, seq),
                        generator=torch.Generator().manual_seed(0)).to(case.device)
    fns, facts = {}, {}
    for prov, (plan, r0, cache_rows) in PROVIDERS.items():
        model = model_step.build(case.model, case.device, dtype, layers=layers)
        model.config.use_cache = False
        if plan == "dense":
            conv = core.convert(model, "dense", r=common.R, alpha=common.ALPHA)
        else:
            conv = core.convert(model, plan, r=common.R, alpha=common.ALPHA, keep_ratio=common.ALL_P, svd_rank=r0,
                                cache_rows=cache_rows, svd=svd)
        model.train()
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
        core.attach_optimizer(opt, model)

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
        step()                                   # first step: CE-LoRA selects its index (tau = 200 steps)
        fns[f"step {prov}"], facts[f"step {prov}"] = step, {"p": p_weighted(conv), "layers": len(conv)}
    # G_y·W0's share of the dense step: its scope's device time over every kernel of the step, all threads
    prof = flops.profile_scopes(fns["step ours dense"], ("bwd.grad_x_frozen",), case.device)
    profiled = Row(case, PROFILE, extra={"seconds_by_scope": prof.seconds, "profiled_wall_s": prof.wall_s,
                                         "profiled_device_s": prof.device_s})
    return [profiled] + common.timed(case, fns, "steps", ctx.threads, facts)


def verdict(case: Case, rows: list[Row]) -> list[Check]:
    by = {r.component: r for r in rows}
    s, basis = model_step_checks.time_share(by.get(PROFILE))
    scope = f"{case.param('sizes')} {case.provider} {case.model}, {case.param('decoder_layers')} layers, " \
            f"{case.param('batch')}x{case.param('seq')} tokens"
    seen = common.exact(scope, "the profiled dense step shows G_y·W0 time (s > 0)", s is not None,
                        "no G_y·W0 time in the profile" if s is None else f"s = {s:.4f} ({basis})")
    if s is None:
        return [seen]
    out = [seen, common.info(STEP_CHECK, scope, f"G_y·W0 share s of the dense step ({basis})", s)]
    dense = by.get("step ours dense")
    for prov in PROVIDERS:
        row = by.get(f"step {prov}")
        if prov == "ours dense" or row is None or dense is None:
            continue
        p = row.extra["p"]
        iv = I.over_rounds(lambda d, c: d / c / amdahl_bound(s, p), [dense.series, row.series])
        speed = I.paired_ratio(dense.series, row.series)
        out.append(common.target_check(
            STEP_CHECK, f"{scope} {prov}", f"speed-up / bound ({common.clock(case)})", iv, "step_amdahl", True,
            f"{speed.value:.3f}x / {amdahl_bound(s, p):.3f} (s = {s:.3f}, p = {p:.4f}); step {common.ms(row):.1f} "
            f"ms, ours dense {common.ms(dense):.1f} ms",
            reads=((case.id, "step ours dense"), (case.id, row.component))))
    return [c for c in out if c is not None]
