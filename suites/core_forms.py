"""core-forms: CE-LoRA's backward in its two G_x forms side by side, the measurement behind the default form
per device (core.config.GRAD_X_FORM).

"split" runs the kept-column product, then T·A0 and G_h·A added in two more passes over the (N, n) output;
"fused" runs them as one GEMM [G_h | T | G_y[:, I]]·[A; A0; W0[I] or R[I]] (core.components). Per shape of
Llama-3.2-1B's q, gate and down (--model for another), lean and cached rows, r0 = 0 and 14, p = 0.5, r = 16:
the two forms of one configuration are one group, timed interleaved by the runner (suites.layer_bench.setup,
the layer built with the case's grad_x_form). Reported, paired by round: fused/split of the whole backward
(autograd, what training runs) and of its G_x part (split: bwd.grad_x_frozen + bwd.grad_x_lora; fused:
bwd.grad_x_frozen, where G_h·A moved); < 1 means fused is faster. Judged: each layer ran the form it was asked
(the profiled step's FLOPs in bwd.grad_x_lora: none in the fused form).
N = 1024 quick, 2048 full on the CPU; 8192 on CUDA.

    celora-bench run core-forms --quick --device cpu
"""
from __future__ import annotations

import statistics

from celora_bench import intervals as I
from celora_bench import models
from celora_bench.cases import Case, Row
from celora_bench.suite import Check, CheckId, Options, Suite
from core.config import GRAD_X_FORM, balanced_rank
from core.scopes import GRAD_X_FROZEN, GRAD_X_LORA
from suites import layer_bench

NAME = "core-forms"
DESCRIPTION = "CE-LoRA's backward in the split and the fused G_x form, interleaved: fused/split per shape, mode, r0"
QUESTION = "Is the fused G_x form faster than the split one on this device (the default form per device rests on it)?"
FORMS = ("split", "fused")
LAYERS = ("q_proj", "gate_proj", "down_proj")
P, RANK = 0.5, 16
JUDGED = ("bwd", GRAD_X_FROZEN, GRAD_X_LORA)
FORM_CHECK = CheckId("form", "the layer ran the form asked")
RATIO_CHECK = CheckId("ratio", "fused / split", headline=True)

setup = layer_bench.setup


def cases(opts: Options) -> list[Case]:
    model = models.get(opts.model or "llama-3.2-1b")
    tokens = 8192 if opts.device.startswith("cuda") else (1024 if opts.mode == "quick" else 2048)
    out = []
    for layer in LAYERS:
        m, n = model.layer_shapes()[layer]
        for cache_rows in (False, True):
            for r0 in (0, balanced_rank(RANK)):
                for form in FORMS:
                    out.append(Case(NAME, "celora", model.name, layer, m, n, tokens, RANK, keep_ratio=P,
                                    svd_rank=r0, cache_rows=cache_rows, dtype=opts.dtype, device=opts.device,
                                    params=(("grad_x_form", form),)))
    return out


def group_key(case: Case) -> tuple:
    """The two forms of one configuration are timed interleaved."""
    return (case.model, case.layer, case.tokens, case.cache_rows, case.svd_rank, case.dtype, case.device)


def _series(row: Row) -> I.Series:
    """Device time where the rows carry it (CUDA), else wall time."""
    return row.judged_series()


def _scope(case: Case) -> str:
    mode = "cached" if case.cache_rows else "lean"
    return f"{case.layer} {case.m}x{case.n} N={case.tokens} p={case.keep_ratio:g} r0={case.svd_rank} {mode}"


def _ratio_check(scope: str, metric: str, iv: I.Interval | None, reads: tuple) -> Check | None:
    if iv is None:
        return None
    where = f"[{iv.lo:.4g}, {iv.hi:.4g}], 95% between {iv.rounds} rounds" if iv.lo is not None else "no interval"
    return Check(RATIO_CHECK, scope, metric, iv.value, "reported", "INFO", f"{where}; < 1: fused faster",
                 iv.lo, iv.hi, kind="info", reads=reads, rounds=iv.rounds)


def verdict(rows: list[Row], machine: dict | None = None) -> list[Check]:
    idx = {(r.case, r.component): r for r in rows}
    groups: dict[tuple, dict[str, Case]] = {}
    for r in rows:
        groups.setdefault(group_key(r.case), {})[r.case.param("grad_x_form")] = r.case
    out: list[Check] = []
    whole = []
    for cs in groups.values():
        for form, case in cs.items():
            step = idx.get((case, "step.alloc"))
            if step is not None:        # what the profiled forward+backward ran: G_h·A apart (split) or not
                lora = step.extra.get("flops_by_scope", {}).get(GRAD_X_LORA, 0)
                got = "split" if lora else "fused"
                out.append(Check(FORM_CHECK, _scope(case), f"{form} form", float(got == form), f"== {form}",
                                 "PASS" if got == form else "FAIL",
                                 f"the profiled step ran {got}: {lora:,} FLOPs in bwd.grad_x_lora", kind="exact"))
        if set(cs) != set(FORMS):
            continue
        split, fused = cs["split"], cs["fused"]
        get = {(f, c): idx.get((cs[f], c)) for f in FORMS for c in JUDGED}
        if get[("split", "bwd")] and get[("fused", "bwd")]:
            iv = I.paired_ratio(_series(get[("fused", "bwd")]), _series(get[("split", "bwd")]))
            whole += [iv.value] if iv is not None else []
            out.append(_ratio_check(_scope(split), "whole backward", iv, ((fused.id, "bwd"), (split.id, "bwd"))))
        parts = [get[("fused", GRAD_X_FROZEN)], get[("split", GRAD_X_FROZEN)],
                 get[("split", GRAD_X_LORA)]]
        if all(r is not None and r.samples for r in parts):
            iv = I.over_rounds(lambda f, s, lora: f / (s + lora), [_series(r) for r in parts])
            out.append(_ratio_check(_scope(split), "G_x part", iv, tuple((r.case.id, r.component) for r in parts)))
    if whole:
        device = rows[0].case.device.split(":")[0]
        out.append(Check(RATIO_CHECK, f"every shape, mode and r0 ({len(whole)})", "whole backward, median",
                         statistics.median(whole), "reported", "INFO",
                         f"range {min(whole):.3f}-{max(whole):.3f}; the default form here: "
                         f"{GRAD_X_FORM.get(device, 'split')} (core.config.GRAD_X_FORM)", kind="info"))
    return [c for c in out if c is not None]


SUITE = Suite(NAME=NAME, DESCRIPTION=DESCRIPTION, QUESTION=QUESTION, cases=cases, setup=setup, verdict=verdict,
              CHECKS=(RATIO_CHECK, FORM_CHECK), plots=layer_bench.rooflines,
              PLOT_CAPTIONS={"roofline-": layer_bench.ROOFLINE_CAPTION},
              JUDGED=JUDGED, group_key=group_key, case_tables=layer_bench.tables)
