"""model-step: one training step of a whole causal LM: peft LoRA, our dense LoRA, CE-LoRA presets.

Models are built from configs with real shapes (random init) or loaded from
--model-path. Per step: forward, backward and optimizer time, peak memory,
FLOPs per component summed over every converted layer plus the rest
(attention, lm_head; norms and embeddings count 0 under 2·m·n·k).

CE-LoRA's double-LoRA factors are cheap ones (suites.factors: a randomized SVD, once per weight
shape): a step's time, FLOPs and memory depend on the shapes only, and a full SVD of every weight would take
the whole of a GPU check's step limit (about 112 at Llama-3.2-1B shapes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import core
from celora_bench import distributed, models
from celora_bench.cases import Case
from celora_bench.measure import Target
from celora_bench.suite import Options, Suite
from core.flops import COMPONENTS, layer_flops
from core.scopes import GRAD_X_FROZEN, GRAD_X_LORA, SELECTION
from suites import factors
from suites.causal_lm import build
from suites.layer_bench import DTYPES
from suites.model_step import checks, render
from suites.model_step.checks import PROVIDERS

NAME = "model-step"
DISTRIBUTED = True             # runs under torchrun with DDP
FSDP = True                    # or, with --fsdp, sharded by FSDP2 (distributed.wrap)
DESCRIPTION = "One training step of a whole LLaMA-shaped model: time, memory and FLOPs per component vs peft"
RANK, ALPHA = 16, 32.0
ALL_P = 0.5
JUDGED = ("step",)             # the verdict reads the step: it gets the rounds, the phases the breakdown
QUESTION = ("How much of a whole model's training step is G_y·W0, and how much faster is a step with CE-LoRA than "
            "with dense LoRA and with HF peft?")
PLOT_CAPTIONS = {"step-phases": "one training step per provider: forward, backward and optimizer, median ms"}


def providers(dtype: str) -> tuple[str, ...]:
    """peft as users get it (autocast_adapter_dtype=True: adapters upcast to fp32), and, for 16-bit
    models only (in fp32 the two are the same model), peft with adapters kept in the model's dtype."""
    return PROVIDERS if dtype in ("bfloat16", "float16") else tuple(p for p in PROVIDERS if p != "peft-native")


def cases(opts: Options) -> list[Case]:
    cuda = opts.device.startswith("cuda")
    if opts.mode == "quick":          # CPU: a tiny model; CUDA: the 1B shapes at 4×2048 tokens (GPU-sized)
        plans = [(opts.model or ("llama-3.2-1b" if cuda else "tiny"), opts.batch or (4 if cuda else 4),
                  opts.seq or (2048 if cuda else 128))]
    elif cuda:
        plans = [(opts.model or "llama-3.2-1b", opts.batch or 4, opts.seq or 2048),
                 ("llama-3.1-8b", opts.batch or 2, opts.seq or 2048)]
    else:
        plans = [("tiny", opts.batch or 4, opts.seq or 128),
                 (opts.model or "llama-3.2-1b", opts.batch or 1, opts.seq or 256)]
    out = []
    for name, batch, seq in plans:
        shape = models.get(name)
        extra = (("path", opts.model_path),) if opts.model_path else ()
        extra += (("fsdp", True),) if opts.fsdp else ()
        extra += (("checkpointing", True),) if opts.checkpointing else ()
        for provider in providers(opts.dtype):
            out.append(Case(NAME, provider, name, "model", shape.hidden, shape.intermediate, batch * seq, RANK,
                            keep_ratio=ALL_P if provider == "celora-all" else 1.0, dtype=opts.dtype,
                            device=opts.device, params=tuple(sorted((("batch", batch), ("seq", seq)) + extra))))
    return out


# No group_key: each provider is measured alone, its model freed before the next is built
# (four Llama-3.2-1B models at once do not fit in 24 GiB).


# one randomized split per weight shape for the whole process: the timing reads shapes, not values
_FACTORS = factors.per_shape()


def apply(model, provider: str, svd_cache: dict | None = None, svd=None) -> None:
    """Puts the provider's LoRA on every projection of the model (svd_cache: core.convert's; svd: the
    double-LoRA factors, None: the cheap per-shape ones (_FACTORS), selection.svd_split for exact ones)."""
    if provider in ("peft", "peft-native"):
        import peft
        peft.get_peft_model(model, peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=list(models.PROJECTIONS)),
                            autocast_adapter_dtype=provider == "peft")
        return
    plan = {"dense": "dense", "celora-paper": "paper", "celora-all": "all"}[provider]
    core.convert(model, plan, r=RANK, alpha=ALPHA, keep_ratio=ALL_P, svd_cache=svd_cache, svd=svd or _FACTORS)


# celora-paper and celora-all convert the same seed-0 model one after the other: the factors each layer got
# (cheap ones, _FACTORS) are handed again by name. The cache of the last model built only: providers run one
# model at a time.
_SVD: dict = {"key": None, "cache": {}}


def svd_cache(case: Case, device) -> dict:
    """core.convert's svd_cache shared by every case that builds the same model on the same device."""
    key = (case.model, dict(case.params).get("path"), str(device), case.dtype)
    if _SVD["key"] != key:
        _SVD.update(key=key, cache={})
    return _SVD["cache"]


@dataclass(frozen=True)
class _Layer:
    name: str
    m: int
    n: int
    r: int
    k: int | None
    r0: int
    needs_gx: bool
    form: str = "split"          # the layer's resolved G_x form (core.config.GRAD_X_FORM: fused on CUDA)
    k_multiple: int = 1


def _layers(model, provider: str, shape: models.ModelShape) -> list[_Layer]:
    """Every LoRA layer with what its backward computes. The first block's q, k, v read
    the embeddings, which need no gradient, so their G_x is never formed."""
    out = []
    for name, m in model.named_modules():
        first_qkv = ".layers.0." in name and name.endswith(("q_proj", "k_proj", "v_proj"))
        if isinstance(m, core.CELoRALinear):
            out.append(_Layer(name, m.out_features, m.in_features, m.config.r, None if m.dense else m.k, m.r0,
                              not first_qkv, m.grad_x_form, m.k_multiple))
        elif provider.startswith("peft") and hasattr(m, "base_layer") and name.endswith(models.PROJECTIONS):
            out.append(_Layer(name, m.base_layer.out_features, m.base_layer.in_features, RANK, None, 0,
                              not first_qkv))
    return out


def analytic(layers: list[_Layer], shape: models.ModelShape, batch: int, seq: int) -> dict[str, int]:
    T = batch * seq
    comp = dict.fromkeys(COMPONENTS, 0)
    for lay in layers:
        # no G_x: the layer runs G_h alone (no G_y·C, no fused GEMM), whatever its form (core.function)
        f = layer_flops(T, lay.m, lay.n, lay.r, lay.k, lay.r0, fused=lay.needs_gx,
                        form=lay.form if lay.needs_gx else "split", k_multiple=lay.k_multiple)
        for c in COMPONENTS:
            if lay.needs_gx or c not in (GRAD_X_FROZEN, GRAD_X_LORA):
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
    model = build(case.model, device, dtype, path=p.get("path"))
    model.config.use_cache = False
    apply(model, case.provider, svd_cache(case, device))
    if p.get("checkpointing"):            # as the paper trains; CE-LoRA's tau counts optimizer steps, not forwards
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    layers_info = _layers(model, case.provider, shape)
    ddp = distributed.active()
    if ddp:
        model = distributed.wrap(model, "fsdp" if p.get("fsdp") else "ddp", mixed_precision=case.dtype == "bfloat16")
    g = torch.Generator().manual_seed(distributed.rank())      # each data-parallel rank its own batch
    ids = torch.randint(0, shape.vocab, (p["batch"], p["seq"]), generator=g).to(device)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def loss():
        return model(input_ids=ids, labels=ids).loss

    def count():
        loss().backward()
        opt.zero_grad(set_to_none=True)

    # the optimizer is timed on copies holding real gradients, so the model stays as it is; "step" trains
    # the model itself. Rounds run the phases in a random order, so no graph is kept across calls (a step
    # updates the parameters in place): the backward is timed as fwd+bwd, its share derived as fwd+bwd - fwd
    loss().backward()                         # first backward: CE-LoRA selects its index here
    copies = [q.detach().clone() for q in params]
    for c, q in zip(copies, params):
        c.grad = q.grad.detach().clone()
    opt.zero_grad(set_to_none=True)
    opt_copy = torch.optim.AdamW(copies, lr=1e-4)

    def fwd_bwd():
        return torch.autograd.grad(loss(), params)

    def step():
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    fl = analytic(layers_info, shape, p["batch"], p["seq"])
    if case.provider.startswith("peft"):
        rows = {"lora_layers": None, "rest": None, "rest.attention": None, "rest.lm_head": None}
        notes = {"lora_layers": "peft: autograd's backward, not split into components"}
    else:
        rows = {**{c: c for c in COMPONENTS}, "lora_layers": None, "rest": "other", "rest.attention": None,
                "rest.lm_head": None}
        notes = {"rest": "counted: everything outside the LoRA layers' scopes"}
    # under DDP the backward must run as a real step (its all-reduce hooks fire on .grad accumulation)
    whole = {"optimizer": opt_copy.step, "step": step} if ddp else \
        {"fwd": loss, "fwd+bwd": fwd_bwd, "optimizer": opt_copy.step, "step": step}
    return Target(whole=whole, count=count,
                  scopes=COMPONENTS + (SELECTION,), analytic=fl, flop_rows=rows, count_row="step",
                  notes=notes, state_bytes=distributed.local_bytes(params),
                  state_what="trainable LoRA parameters on this rank (a shard under --fsdp), bytes "
                             "(CE-LoRA's B0, A0, I and cached rows not included)")




SUITE = Suite(NAME=NAME, DESCRIPTION=DESCRIPTION, QUESTION=QUESTION, cases=cases, setup=setup,
              verdict=checks.verdict, CHECKS=checks.CHECKS, plots=render.plots, tables=render.tables,
              PLOT_CAPTIONS=PLOT_CAPTIONS, DISTRIBUTED=DISTRIBUTED, FSDP=FSDP, JUDGED=JUDGED)
