"""model-step: one training step of a whole causal LM: peft LoRA, our dense LoRA, CE-LoRA presets.

Models are built from configs with real shapes (random init) or loaded from
--model-path. Per step: forward, backward and optimizer time, peak memory,
FLOPs per component summed over every converted layer plus the rest
(attention, lm_head; norms and embeddings count 0 under 2·m·n·k).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import core
from celora_bench import distributed
from celora_bench.cases import Case, Row
from celora_bench.measure import Target
from celora_bench.suite import Check, Options
from core.flops import COMPONENTS, layer_flops
from suites import models
from suites.layer_bench import DTYPES

NAME = "model-step"
DISTRIBUTED = True             # runs under torchrun with DDP
DESCRIPTION = "One training step of a whole LLaMA-shaped model: time, memory and FLOPs per component vs peft"
PROVIDERS = ("peft", "dense", "celora-paper", "celora-all")
RANK, ALPHA = 16, 32.0
ALL_P = 0.5
PREDICTED_FRACTION = 0.9       # measured step speed-up >= 0.9 x the FLOP-predicted one


def cases(opts: Options) -> list[Case]:
    if opts.mode == "quick":
        plans = [(opts.model or "tiny", opts.batch or 4, opts.seq or 128)]
    else:
        plans = [("tiny", opts.batch or 4, opts.seq or 128),
                 (opts.model or "llama-3.2-1b", opts.batch or 1, opts.seq or 256)]
    out = []
    for name, batch, seq in plans:
        shape = models.get(name)
        extra = (("path", opts.model_path),) if opts.model_path else ()
        for provider in PROVIDERS:
            out.append(Case(NAME, provider, name, "model", shape.hidden, shape.intermediate, batch * seq, RANK,
                            keep_ratio=ALL_P if provider == "celora-all" else 1.0, dtype=opts.dtype,
                            device=opts.device, params=tuple(sorted((("batch", batch), ("seq", seq)) + extra))))
    return out


# No group_key: each provider is measured alone, its model freed before the next is built
# (four Llama-3.2-1B models at once do not fit in 24 GiB).


def _group(case: Case) -> tuple:
    return (case.model, case.tokens, case.dtype, case.device, case.params)


def apply(model, provider: str) -> None:
    """Puts the provider's LoRA on every projection of the model."""
    if provider == "peft":
        import peft
        peft.get_peft_model(model, peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=list(models.PROJECTIONS)))
        return
    plan = {"dense": "dense", "celora-paper": "paper", "celora-all": "all"}[provider]
    core.convert(model, plan, r=RANK, alpha=ALPHA, keep_ratio=ALL_P)


@dataclass(frozen=True)
class _Layer:
    name: str
    m: int
    n: int
    r: int
    k: int | None
    r0: int
    needs_gx: bool


def _layers(model, provider: str, shape: models.ModelShape) -> list[_Layer]:
    """Every LoRA layer with what its backward computes. The first block's q, k, v read
    the embeddings, which need no gradient, so their G_x is never formed."""
    out = []
    for name, m in model.named_modules():
        first_qkv = ".layers.0." in name and name.endswith(("q_proj", "k_proj", "v_proj"))
        if isinstance(m, core.CELoRALinear):
            out.append(_Layer(name, m.out_features, m.in_features, m.config.r, None if m.dense else m.k, m.r0,
                              not first_qkv))
        elif provider == "peft" and hasattr(m, "base_layer") and name.endswith(models.PROJECTIONS):
            out.append(_Layer(name, m.base_layer.out_features, m.base_layer.in_features, RANK, None, 0,
                              not first_qkv))
    return out


def analytic(layers: list[_Layer], shape: models.ModelShape, batch: int, seq: int) -> dict[str, int]:
    T = batch * seq
    comp = dict.fromkeys(COMPONENTS, 0)
    for lay in layers:
        f = layer_flops(T, lay.m, lay.n, lay.r, lay.k, lay.r0)
        for c in COMPONENTS:
            if lay.needs_gx or c not in ("bwd.grad_x_frozen", "bwd.grad_x_lora"):
                comp[c] += f[c]
    attn = shape.layers * 12 * batch * shape.heads * seq * seq * shape.head_dim   # fwd 4, bwd 8 (no causal discount)
    head = 2 * 2 * T * shape.hidden * shape.vocab                                  # fwd + G_x; lm_head frozen
    out = dict(comp)
    out.update({"rest.attention": attn, "rest.lm_head": head, "rest": attn + head,
                "lora_layers": sum(comp.values())})
    out["step"] = out["lora_layers"] + out["rest"]
    return out


def setup(case: Case) -> Target:
    p = dict(case.params)
    shape = models.get(case.model)
    dtype, device = DTYPES[case.dtype], torch.device(distributed.local_device(case.device))
    model = models.build_model(case.model, path=p.get("path")).to(device=device, dtype=dtype)
    model.config.use_cache = False
    apply(model, case.provider)
    model.train()
    layers_info = _layers(model, case.provider, shape)
    ddp = distributed.active()
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(distributed.rank())      # each data-parallel rank its own batch
    ids = torch.randint(0, shape.vocab, (p["batch"], p["seq"]), generator=g).to(device)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def loss():
        return model(input_ids=ids, labels=ids).loss

    def count():
        loss().backward()
        opt.zero_grad(set_to_none=True)

    # the optimizer is timed on copies holding real gradients, so the model (and the
    # graph retained for "bwd") stays as it is; "step" (timed last) trains the model itself
    loss().backward()                         # first backward: CE-LoRA selects its index here
    copies = [q.detach().clone() for q in params]
    for c, q in zip(copies, params):
        c.grad = q.grad.detach().clone()
    opt.zero_grad(set_to_none=True)
    opt_copy = torch.optim.AdamW(copies, lr=1e-4)
    kept = None if distributed.active() else loss()

    def bwd():
        return torch.autograd.grad(kept, params, retain_graph=True)

    def step():
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    fl = analytic(layers_info, shape, p["batch"], p["seq"])
    if case.provider == "peft":
        rows = {"lora_layers": None, "rest": None, "rest.attention": None, "rest.lm_head": None}
        notes = {"lora_layers": "peft: autograd's backward, not split into components"}
    else:
        rows = {**{c: c for c in COMPONENTS}, "lora_layers": None, "rest": "other", "rest.attention": None,
                "rest.lm_head": None}
        notes = {"rest": "counted: everything outside the LoRA layers' scopes"}
    # under DDP the backward must run as a real step (its all-reduce hooks fire on .grad accumulation)
    whole = {"optimizer": opt_copy.step, "step": step} if ddp else \
        {"fwd": loss, "bwd": bwd, "optimizer": opt_copy.step, "step": step}
    return Target(whole=whole, count=count,
                  scopes=COMPONENTS + ("selection",), analytic=fl, flop_rows=rows, count_row="step",
                  notes=notes, state_bytes=sum(q.numel() * q.element_size() for q in params),
                  state_what="trainable LoRA parameters, bytes (CE-LoRA's B0, A0, I and cached rows not included)")


# ---- verdict -------------------------------------------------------------------

def _by(rows: list[Row]) -> dict[tuple[Case, str], Row]:
    return {(r.case, r.component): r for r in rows}


def verdict(rows: list[Row]) -> list[Check]:
    by = _by(rows)
    checks: list[Check] = []
    groups: dict[tuple, dict[str, Case]] = {}
    for r in rows:
        groups.setdefault(_group(r.case), {})[r.case.provider] = r.case
    for key, provs in groups.items():
        dense, peft_ = provs.get("dense"), provs.get("peft")
        scope = f"{key[0]} {dict(key[4]).get('batch')}x{dict(key[4]).get('seq')} tokens"
        if dense and (dense, "bwd.grad_x_frozen") in by and (dense, "step") in by:
            gx, step = by[(dense, "bwd.grad_x_frozen")], by[(dense, "step")]
            checks.append(Check("1. model-level G_y·W0 share", scope, "FLOP share (counted)",
                                gx.flops_counted / step.flops_counted, "reported", "INFO",
                                f"analytic {gx.flops_analytic / step.flops_analytic:.3f}"))
            prof = by.get((dense, "step.alloc"))
            secs = prof.extra.get("seconds_by_scope", {}).get("bwd.grad_x_frozen") if prof else None
            if secs and prof.extra.get("profiled_wall_s"):
                checks.append(Check("1. model-level G_y·W0 share", scope, "time share (profiler, one step)",
                                    secs / prof.extra["profiled_wall_s"], "reported", "INFO"))
        for prov in ("celora-paper", "celora-all"):
            c = provs.get(prov)
            if not (c and dense and (c, "step") in by and (dense, "step") in by):
                continue
            d_step, c_step = by[(dense, "step")], by[(c, "step")]
            predicted = d_step.flops_counted / c_step.flops_counted
            measured = d_step.time.median / c_step.time.median
            checks.append(Check("2. step speed-up vs ours dense", f"{scope} {prov}", "FLOP-predicted",
                                predicted, "reported", "INFO"))
            ok = measured >= PREDICTED_FRACTION * predicted
            checks.append(Check("2. step speed-up vs ours dense", f"{scope} {prov}", "measured", measured,
                                f">= {PREDICTED_FRACTION} × {predicted:.3f}" if prov == "celora-paper" else "reported",
                                ("PASS" if ok else "FAIL") if prov == "celora-paper" else "INFO",
                                f"{measured / predicted:.3f} of predicted"))
            if peft_ and (peft_, "step") in by:
                p_step = by[(peft_, "step")]
                sp = p_step.time.median / c_step.time.median
                faster = sp > 1 and c_step.time.quartiles[1] < p_step.time.quartiles[0]
                checks.append(Check("3. step speed-up vs peft LoRA", f"{scope} {prov}", "measured", sp,
                                    "> 1, IQRs apart" if prov == "celora-all" else "reported",
                                    ("PASS" if faster else "FAIL") if prov == "celora-all" else "INFO"))
        if dense and peft_ and (dense, "step") in by and (peft_, "step") in by:
            checks.append(Check("3. step speed-up vs peft LoRA", f"{scope} dense", "measured",
                                by[(peft_, "step")].time.median / by[(dense, "step")].time.median, "reported",
                                "INFO"))
    return checks


def summary_table(rows: list[Row]):
    from rich.table import Table

    from celora_bench.flops import CONVENTION
    t = Table(title="model-step: one training step", caption=f"times: median ms (* IQR/median > 10%); "
              f"memory MiB (peak RSS/CUDA over the phase); {CONVENTION}", caption_justify="left")
    for col in ("model", "tokens", "provider", "fwd ms", "bwd ms", "optimizer ms", "step ms", "step peak MiB",
                "GFLOP step (counted)", "GFLOP G_y·W0", "GFLOP rest", "trainable MiB"):
        t.add_column(col, justify="left" if col in ("model", "provider") else "right")
    by = _by(rows)
    for case in sorted({r.case for r in rows}, key=lambda c: (c.model, c.tokens, PROVIDERS.index(c.provider)
                                                               if c.provider in PROVIDERS else 9)):
        def ms(comp):
            r = by.get((case, comp))
            return "—" if r is None or r.time is None else f"{r.time.median * 1e3:.1f}{'*' if r.time.spread else ''}"

        def gf(comp, attr="flops_counted"):
            r = by.get((case, comp))
            v = None if r is None else getattr(r, attr)
            return "—" if v is None else f"{v / 1e9:.2f}"
        step = by.get((case, "step"))
        state = by.get((case, "state"))
        t.add_row(case.model, str(case.tokens), case.provider, ms("fwd"), ms("bwd"), ms("optimizer"), ms("step"),
                  "—" if step is None or step.mem_bytes is None else f"{step.mem_bytes / 2**20:.0f}",
                  gf("step"), gf("bwd.grad_x_frozen"), gf("rest"),
                  "—" if state is None else f"{state.mem_bytes / 2**20:.1f}")
    return t
