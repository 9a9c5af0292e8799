"""model-step's verdict: G_y·W0's share of a whole step, each CE-LoRA preset's step speed-up against the
FLOP-predicted one, and the speed-ups against peft."""
from __future__ import annotations

from celora_bench import intervals as I
from celora_bench.cases import Case, Row
from celora_bench.suite import Check, CheckId
from core.scopes import GRAD_X_FROZEN
from suites.causal_lm import time_share

PROVIDERS = ("peft", "peft-native", "dense", "celora-paper", "celora-all")
PREDICTED_FRACTION = 0.9       # measured step speed-up >= 0.9 x the FLOP-predicted one

SHARE_CHECK = CheckId("share", "model-level G_y·W0 share")
VS_DENSE_CHECK = CheckId("vs-dense", "step speed-up vs ours dense", headline=True)
VS_PEFT_CHECK = CheckId("vs-peft", "step speed-up vs peft LoRA")
CHECKS = (SHARE_CHECK, VS_DENSE_CHECK, VS_PEFT_CHECK)


def _group(case: Case) -> tuple:
    return (case.model, case.tokens, case.dtype, case.device, case.params)


def _by(rows: list[Row]) -> dict[tuple[Case, str], Row]:
    return {(r.case, r.component): r for r in rows}


def _step_samples(by, case) -> I.Series | None:
    row = by.get((case, "step"))
    return row.series if row is not None and row.samples else None


def verdict(rows: list[Row], machine: dict | None = None) -> list[Check]:
    """Per model: G_y·W0's share of the step; each CE-LoRA preset's measured step speed-up against the
    FLOP-predicted one; speed-ups against peft. Steps are timed one provider at a time (each model
    is freed before the next is built), so intervals resample each provider's steps independently."""
    by = _by(rows)
    checks: list[Check] = []
    groups: dict[tuple, dict[str, Case]] = {}
    for r in rows:
        groups.setdefault(_group(r.case), {})[r.case.provider] = r.case
    for key, provs in groups.items():
        dense = provs.get("dense")
        scope = f"{key[0]} {dict(key[4]).get('batch')}x{dict(key[4]).get('seq')} tokens"
        if dense and (dense, GRAD_X_FROZEN) in by and (dense, "step") in by:
            gx, step = by[(dense, GRAD_X_FROZEN)], by[(dense, "step")]
            f = gx.flops_counted / step.flops_counted
            checks.append(Check(SHARE_CHECK, scope, "FLOP share (counted)", f, "reported", "INFO",
                                f"analytic {gx.flops_analytic / step.flops_analytic:.3f}", f, f, kind="info"))
            share, basis = time_share(by.get((dense, "step.alloc")))
            if share is not None:
                checks.append(Check(SHARE_CHECK, scope, f"time share ({basis}, one step)",
                                    share, "reported", "INFO", kind="info"))
        d_s = _step_samples(by, dense) if dense else None
        for prov in ("celora-paper", "celora-all"):
            c = provs.get(prov)
            c_s = _step_samples(by, c) if c else None
            if not (c_s and d_s):
                continue
            predicted = by[(dense, "step")].flops_counted / by[(c, "step")].flops_counted
            checks.append(Check(VS_DENSE_CHECK, f"{scope} {prov}", "FLOP-predicted",
                                predicted, "reported", "INFO", kind="info"))
            iv = I.unpaired_ratio(d_s, c_s)
            line = PREDICTED_FRACTION * predicted
            judged = prov == "celora-paper"
            checks.append(Check(VS_DENSE_CHECK, f"{scope} {prov}", "measured", iv.value,
                                f">= {PREDICTED_FRACTION} × {predicted:.3f}" if judged else "reported",
                                iv.judge(line, above=True) if judged else "INFO",
                                f"{iv.value / predicted:.3f} of predicted", iv.lo, iv.hi,
                                kind="measured" if judged else "info"))
        for base_name in ("peft", "peft-native"):
            b = provs.get(base_name)
            b_s = _step_samples(by, b) if b else None
            if not b_s:
                continue
            for prov in ("dense", "celora-paper", "celora-all"):
                c = provs.get(prov)
                c_s = _step_samples(by, c) if c else None
                if not c_s:
                    continue
                iv = I.unpaired_ratio(b_s, c_s)
                judged = prov == "celora-all" and base_name == "peft"
                checks.append(Check(VS_PEFT_CHECK, f"{scope} {prov}",
                                    "measured" if base_name == "peft" else "measured vs peft-native", iv.value,
                                    "> 1 (whole interval)" if judged else "reported",
                                    iv.judge(1.0, above=True) if judged else "INFO", "", iv.lo, iv.hi,
                                    kind="measured" if judged else "info"))
    return checks

