"""approx-error: how far CE-LoRA's activation gradient is from the exact one, on real gradients.

Gradients are captured while a pretrained model is LoRA fine-tuned on real
text (suites/text_task.py). Per module type and layer: relative error and
cosine similarity of G_x against the exact one, against p, svd_rank (0,
balanced, twice balanced), score (product, residual_norm, random) and index
staleness (steps since the refresh). Then the error that reaches the trainable
gradients: G_A and G_B after a full backward through a CE-LoRA model. And each
W0's singular-value spectrum: the energy share of the top r0 singular values,
sum_{i<=r0} s_i^2 / sum_i s_i^2 = 1 - ||R||_F^2/||W0||_F^2 (R = W0 - B0 A0), which is
what double-LoRA takes out of the sampled product.

--model smollm2-135m runs it on SmolLM2-135M-Instruct (real weights, Q4_1
dequantized to fp32; celora_bench/pretrained.py), tokens from its own tokenizer. Its
quick mode is cut for a 2-core CPU: 2 x 64 tokens per step, 3 warm-up steps,
staleness 0 and 2, blocks 0, 15 and 29 only (LoRA on those), propagation at
p=0.5 only. Its full mode: 8 x 128 tokens, all 30 blocks (a GPU host's RAM:
the captures hold about 2 GB per captured step).
"""
from __future__ import annotations

import torch

import core
from celora_bench import pretrained
from celora_bench.cases import Case, Row
from celora_bench.suite import Context, Options, Suite
from core import components as C
from core import selection
from core.config import balanced_rank
from suites import corpora, text_task
from suites.approx_error import checks, render
from suites.text_task import ALPHA, BATCH, LR, RANK, SEQ, weights_label

NAME = "approx-error"
DESCRIPTION = "Relative error / cosine of CE-LoRA's G_x and G_A, G_B vs exact, on real gradients from real text"
QUESTION = ("How far are CE-LoRA's approximate gradients from the exact ones, and do double-LoRA (r0 > 0) and "
            "the product score make them closer?")
PLOT_CAPTIONS = {"approx-error": "relative error of G_x against p, and against the index's age"}


def _sizes(mode: str, model: str = "tiny-byte"):
    real = model in pretrained.PRETRAINED
    if mode == "quick" and real:        # a 2-core CPU: see the module docstring for what was cut
        return dict(ps=(0.25, 0.5, 0.75), warm=3, stale=(0, 2), batch=2, seq=64, layers="0,15,29", prop=(0.5,))
    if mode == "quick":
        return dict(ps=(0.25, 0.5, 0.75), warm=20, stale=(0, 1, 5, 20, 50))
    if real:
        return dict(ps=(0.25, 0.5, 0.55, 0.65, 0.75), warm=50, stale=(0, 1, 10, 50), batch=BATCH, seq=SEQ,
                    layers="all")
    return dict(ps=(0.25, 0.5, 0.55, 0.65, 0.75), warm=50, stale=(0, 1, 10, 50, 100, 200))


def cases(opts: Options) -> list[Case]:
    model = text_task.model_of(opts)
    sz = _sizes(opts.mode, model)
    extra = tuple((k, v) for k, v in (("data", opts.data), ("path", opts.model_path)) if v)
    extra += tuple((k, sz[k]) for k in ("batch", "seq", "layers") if k in sz)
    stale = ",".join(map(str, sz["stale"]))
    tokens = sz.get("batch", BATCH) * sz.get("seq", SEQ)

    def case(p, r0, score, kind):
        return Case(NAME, "celora", model, "all", 0, 0, tokens, RANK, keep_ratio=p, svd_rank=r0,
                    score=score, dtype=opts.dtype, device=opts.device,
                    params=tuple(sorted((("kind", kind), ("warm", sz["warm"]), ("stale", stale)) + extra)))
    out = [case(1.0, balanced_rank(RANK), "product", "spectrum")]
    for p in sz["ps"]:
        for r0 in (0, balanced_rank(RANK), 2 * balanced_rank(RANK)):
            out.append(case(p, r0, "product", "gx"))
        for score in ("residual_norm", "random"):
            out.append(case(p, balanced_rank(RANK), score, "gx"))
        if p in sz.get("prop", sz["ps"]):
            out.append(case(p, balanced_rank(RANK), "product", "propagation"))
    return out


# ---- gradients captured from real training ------------------------------------------------

_CAPTURES: dict[tuple, dict] = {}


def _task(case: Case):
    p = dict(case.params)
    return text_task.task(p.get("path"), p.get("data"),
                          model=case.model if case.model in pretrained.PRETRAINED else None)


def _lora(model, case: Case, plan: dict) -> None:
    """Puts the plan on the case's blocks (params "layers", default all); LoRA A seeded."""
    torch.manual_seed(0)
    core.convert(model, text_task.on_layers(plan, case.param("layers", "all")))


def _train_model(case: Case):
    t = _task(case)
    model = t.model()
    _lora(model, case, core.preset("dense", r=RANK, alpha=ALPHA))
    for m in core.celora_modules(model):        # a trained-looking B from step 0 on
        torch.nn.init.normal_(m.lora_B, std=1e-3)
    return t, model


def captures(case: Case) -> dict:
    """{"steps": {step: {layer name: (x, G_y, A, B)}}, "lora": {step: {name: (A, B)}}, "weights", ...}
    at warm + each staleness, from one dense-LoRA fine-tune of the case's blocks."""
    p = dict(case.params)
    key = (case.model, p.get("path"), p.get("data"), p["warm"], p["stale"], p.get("layers"), p.get("batch"),
           p.get("seq"), case.device)
    if key in _CAPTURES:
        return _CAPTURES[key]
    batch, seq = p.get("batch", BATCH), p.get("seq", SEQ)
    t, model = _train_model(case)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, core.CELoRALinear)}
    wanted = {p["warm"] + int(s) for s in p["stale"].split(",")}
    got: dict[int, dict] = {}
    lora: dict[int, dict] = {}
    store: dict[str, list] = {}

    def hook(name):
        def fwd(mod, inputs, out):
            if mod.training:
                x = inputs[0].detach().reshape(-1, mod.in_features)                  # (N, n)
                out.register_hook(lambda g: store.__setitem__(
                    name, [x, g.detach().reshape(-1, mod.out_features)]))           # (N, m)
        return fwd
    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=LR)
    g = torch.Generator().manual_seed(0)
    model.train()
    for step in range(max(wanted) + 1):
        x = corpora.windows(t.train, batch, seq, g)
        store.clear()
        model(input_ids=x, labels=x).loss.backward()
        if step in wanted:
            lora[step] = {n: (m.lora_A.detach().clone(), m.lora_B.detach().clone()) for n, m in layers.items()}
            got[step] = {n: (*store[n], *lora[step][n]) for n in layers if n in store}
        opt.step()
        opt.zero_grad(set_to_none=True)
    for h in handles:
        h.remove()
    out = {"steps": got, "lora": lora, "weights": {n: m.weight.detach() for n, m in layers.items()},
           "scale": next(iter(layers.values())).scale, "task": t, "svd": {}}
    _CAPTURES[key] = out
    return out


def _svd(cap: dict, name: str, r0: int):
    """selection.svd_split of a layer's W0, once per (layer, r0) for all the cases that share the captures."""
    if (name, r0) not in cap["svd"]:
        cap["svd"][(name, r0)] = selection.svd_split(cap["weights"][name], r0)
    return cap["svd"][(name, r0)]


def _rel_cos(approx: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    a, e = approx.double().flatten(), exact.double().flatten()
    rel = (a - e).norm() / e.norm()
    cos = torch.dot(a, e) / (a.norm() * e.norm())
    return rel.item(), cos.item()


def _short(name: str) -> tuple[str, int]:
    parts = name.split(".")
    layer = int(parts[parts.index("layers") + 1]) if "layers" in parts else -1
    return parts[-1], layer


def run_gx(case: Case, ctx: Context) -> list[Row]:
    cap = captures(case)
    p = dict(case.params)
    warm, stale = p["warm"], [int(s) for s in p["stale"].split(",")]
    rows = []
    gen = torch.Generator().manual_seed(0)
    for name in cap["steps"][warm]:
        W0 = cap["weights"][name]
        proj, layer = _short(name)
        r0 = min(case.svd_rank, *W0.shape)
        B0, A0 = _svd(cap, name, r0)
        res_sq = selection.residual_row_sq_norms(W0, B0, A0)
        k = core.CELoRAConfig(keep_ratio=case.keep_ratio).kept(W0.shape[0], W0.device, W0.dtype)   # as the layer
        x_ref, gy_ref, *_ = cap["steps"][warm][name]
        idx = selection.select(case.score, gy_ref, res_sq, k, gen)           # refreshed at the warm step
        rows_R = selection.residual_rows(W0, idx, B0, A0)
        for s in stale:
            _, gy, A, B = cap["steps"][warm + s][name]
            exact_frozen = C.grad_x_frozen_dense(gy, W0)
            lora = cap["scale"] * (gy @ B) @ A
            approx = C.grad_x_frozen_cached(gy, idx, rows_R, B0, A0)
            rel, cos = _rel_cos(approx + lora, exact_frozen + lora)
            rows.append(Row(case, f"{proj}/L{layer}/stale{s}", note=weights_label(case),
                            extra={"rel_error": rel, "cosine": cos, "module": proj, "layer": layer,
                                   "staleness": s, "m": W0.shape[0], "n": W0.shape[1], "k": k, "r0": r0}))
    return rows


def run_propagation(case: Case, ctx: Context) -> list[Row]:
    """G_A, G_B of every layer after one full backward: CE-LoRA (all projections at p) vs exact LoRA."""
    cap = captures(case)
    t = cap["task"]
    p = dict(case.params)
    batch, seq = p.get("batch", BATCH), p.get("seq", SEQ)
    exact_model = t.model()
    _lora(exact_model, case, core.preset("dense", r=RANK, alpha=ALPHA))
    approx_model = t.model()
    _lora(approx_model, case, {"*_proj": core.CELoRAConfig(r=RANK, alpha=ALPHA, keep_ratio=case.keep_ratio,
                                                             svd_rank=case.svd_rank, score=case.score)})
    warm = p["warm"]
    exact_layers = dict((n, m) for n, m in exact_model.named_modules() if isinstance(m, core.CELoRALinear))
    approx_layers = dict((n, m) for n, m in approx_model.named_modules() if isinstance(m, core.CELoRALinear))
    with torch.no_grad():
        for n, (A, B) in cap["lora"][warm].items():
            for layers in (exact_layers, approx_layers):
                layers[n].lora_A.copy_(A)
                layers[n].lora_B.copy_(B)
    x = corpora.windows(t.train, batch, seq, torch.Generator().manual_seed(7))
    for m in (exact_model, approx_model):
        m.train()
        m(input_ids=x, labels=x).loss.backward()
    rows = []
    for n, ex in exact_layers.items():
        ap = approx_layers[n]
        proj, layer = _short(n)
        for which in ("A", "B"):
            rel, cos = _rel_cos(getattr(ap, f"lora_{which}").grad, getattr(ex, f"lora_{which}").grad)
            rows.append(Row(case, f"{proj}/L{layer}/G_{which}", note=weights_label(case),
                            extra={"rel_error": rel, "cosine": cos, "module": proj, "layer": layer,
                                   "grad": f"G_{which}"}))
    return rows


SPECTRUM_RANKS = (1, 2, 4, 8, 14, 16, 28, 32, 64, 128, 256)


def run_spectrum(case: Case, ctx: Context) -> list[Row]:
    """Per W0: energy share of the top r singular values, sum_{i<=r} s_i^2 / sum_i s_i^2, at r0 = balanced,
    2 x balanced and at SPECTRUM_RANKS (for the plot)."""
    cap = captures(case)
    rows = []
    bal = case.svd_rank
    for name, W0 in cap["weights"].items():
        proj, layer = _short(name)
        s2 = torch.linalg.svdvals(W0.double()).square()                  # (min(m, n),), descending
        cum = (s2.cumsum(0) / s2.sum()).tolist()

        def share(r):
            return cum[min(r, len(cum)) - 1]
        rows.append(Row(case, f"{proj}/L{layer}/spectrum", note=weights_label(case),
                        extra={"module": proj, "layer": layer, "m": W0.shape[0], "n": W0.shape[1],
                               "energy_r0": share(bal), "energy_2r0": share(2 * bal), "r0": bal,
                               "ranks": list(SPECTRUM_RANKS), "energy": [share(r) for r in SPECTRUM_RANKS]}))
    return rows


def run_case(case: Case, ctx: Context) -> list[Row]:
    kind = case.param("kind")
    return {"propagation": run_propagation, "spectrum": run_spectrum}.get(kind, run_gx)(case, ctx)




SUITE = Suite(NAME=NAME, DESCRIPTION=DESCRIPTION, QUESTION=QUESTION, cases=cases, run_case=run_case,
              verdict=checks.verdict, CHECKS=checks.CHECKS, plots=render.plots, tables=render.tables,
              PLOT_CAPTIONS=PLOT_CAPTIONS)
