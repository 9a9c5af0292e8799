"""gpu-targets: the GPU figures and targets of docs/gpu.md, one case per section (per layer
shape where a section sweeps them), each measured on its own (run_case): a case that raises is recorded and
the next one runs.

Sections (the case's provider; `-k /NAME/` runs one):
  smoke        the Triton bf16 gather equals index_select; one CE-LoRA layer fwd+bwd runs on it (smoke.py)
  convert      seconds of one exact SVD per 1B shape (its own case, first), then the whole `all` conversion,
               one SVD per W0, none again from svd_cache (convert.py)
  step-1b      one AdamW step at Llama-3.2-1B shapes against the bound from a profiled step's G_y·W0 share,
               and against ours dense; one case per CE-LoRA provider
  step-8b      the same at Llama-3.1-8B shapes, 8 of 32 decoder layers (steps.py)
  attribution  counted device time against CUDA-event time of one 8B layer fwd+bwd, both ways; the
               device-side count against the host-linked one (attribution.py)
  kernels      the kept-column product per k multiple, the gathers per Triton tile; reported (kernels.py)

Each layer's own GPU figures (speed-up against its Amdahl bound, the kept-column product against its line) are
backward-breakdown's CUDA cases (`celora-bench run backward-breakdown --quick --device cuda`: the 8B shapes),
judged on the per-device lines of suites/lines.py: one verdict per layer.

On CUDA the sections take GPU sizes (common.SIZES["gpu"]); on the CPU, tiny ones ("tiny", in each case's
params): every section's logic in seconds, its timed figures saying nothing about a GPU. Quick and full are the
same sweep; the rounds are the suite's own (common.BUDGETS), fixed so a time limit can be sized from them.

    celora-bench run gpu-targets --device cuda                       # every section
    celora-bench run gpu-targets --device cuda -k /step-1b/          # one section
    celora-bench run gpu-targets --device cpu                        # tiny sizes: the logic on the CPU
"""
from __future__ import annotations

from celora_bench import models
from celora_bench.cases import Case, Row
from celora_bench.suite import Check, Context, Options, Suite
from suites.gpu_targets import attribution, common, convert, kernels, smoke, steps

NAME = "gpu-targets"
DESCRIPTION = "GPU targets: training-step speed-up vs Amdahl, attribution, Triton gather, kernels, SVD cost"
QUESTION = ("On a GPU, does a CE-LoRA training step reach 0.8 of the Amdahl bound from a profiled step's G_y·W0 "
            "share and beat dense, with a device-time count that sees the backward and counts nothing twice, and "
            "the Triton gather exact? (Each layer's bound and kept-column line: backward-breakdown on CUDA.)")

# section -> (run_case, verdict over that case's rows)
SECTIONS = {
    "smoke": (smoke.run, smoke.verdict),
    "convert": (convert.run, convert.verdict),
    "step-1b": (steps.run, steps.verdict),
    "step-8b": (steps.run, steps.verdict),
    "attribution": (attribution.run, attribution.verdict),
    "kernels": (kernels.run, kernels.verdict),
}


def cases(opts: Options) -> list[Case]:
    which = "gpu" if opts.device.startswith("cuda") else "tiny"
    sz = common.SIZES[which]
    layer_model = models.get(sz.layer_model)
    up = layer_model.layer_shapes()["up_proj"]

    def case(section, model, layer, m=0, n=0, tokens=sz.tokens, **params):
        return Case(NAME, section, model, layer, m, n, tokens, common.R, dtype=opts.dtype, device=opts.device,
                    params=tuple(sorted({"sizes": which, **params}.items())))
    # largest shapes first, so a cut keeps them
    shapes = sorted(layer_model.distinct_shapes().items(), key=lambda kv: -kv[1][0] * kv[1][1])
    out = [case("smoke", sz.layer_model, "up_proj", *up)]
    out += [case("convert", sz.convert_model, "model", tokens=0, part=part) for part in ("svd", "whole")]
    for section in ("step-1b", "step-8b"):
        model, decoder_layers, batch, seq = sz.steps[section]
        out += [case(section, model, "model", tokens=batch * seq, batch=batch, seq=seq,
                     decoder_layers=decoder_layers, versus=vs) for vs in steps.VERSUS]
    out.append(case("attribution", sz.layer_model, "up_proj", *up))
    out += [case("kernels", sz.layer_model, label, m, n) for label, (m, n) in shapes]
    return out


def run_case(case: Case, ctx: Context) -> list[Row]:
    rows = SECTIONS[case.provider][0](case, ctx)
    common.free(case)
    return rows


def verdict(rows: list[Row], machine: dict | None = None) -> list[Check]:
    """Each case's checks from its own rows, sections in order; every fact row is an exact check."""
    by_case: dict[Case, list[Row]] = {}
    for r in rows:
        by_case.setdefault(r.case, []).append(r)
    order = list(SECTIONS)
    out: list[Check] = []
    for case in sorted(by_case, key=lambda c: (order.index(c.provider) if c.provider in order else len(order),
                                               models.layer_order(c.layer))):
        mine = by_case[case]
        out += common.fact_checks(case, mine)
        if case.provider in SECTIONS:
            out += SECTIONS[case.provider][1](case, mine)
    return out



SUITE = Suite(NAME=NAME, DESCRIPTION=DESCRIPTION, QUESTION=QUESTION, cases=cases, run_case=run_case,
              verdict=verdict,
              CHECKS=(steps.STEP_CHECK, steps.SPEEDUP_CHECK, attribution.ATTRIBUTION_CHECK, convert.CONVERT_CHECK,
                      kernels.KERNELS_CHECK, common.EXACT_CHECK))
