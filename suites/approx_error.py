"""approx-error: how far CE-LoRA's activation gradient is from the exact one, on real gradients.

Gradients are captured while a pretrained model is LoRA fine-tuned on real
text (suites/text_task.py). Per module type and layer: relative error and
cosine similarity of G_x against the exact one, against p, svd_rank (0,
balanced, twice balanced), score (product, residual_norm, random) and index
staleness (steps since the refresh). Then the error that reaches the trainable
gradients: G_A and G_B after a full backward through a CE-LoRA model.
"""
from __future__ import annotations

import statistics
from collections import defaultdict

import torch

import core
from celora_bench.cases import Case, Row
from celora_bench.suite import Check, Context, Options
from core import components as C
from core import selection
from core.config import balanced_rank
from suites import text_task
from suites.text_task import ALPHA, BATCH, LR, RANK, SEQ

NAME = "approx-error"
DESCRIPTION = "Relative error / cosine of CE-LoRA's G_x and G_A, G_B vs exact, on real gradients from real text"


def _sizes(mode: str):
    if mode == "quick":
        return dict(ps=(0.25, 0.5, 0.75), warm=20, stale=(0, 1, 5, 20, 50))
    return dict(ps=(0.25, 0.5, 0.55, 0.65, 0.75), warm=50, stale=(0, 1, 10, 50, 100, 200))


def cases(opts: Options) -> list[Case]:
    sz = _sizes(opts.mode)
    model = "local" if opts.model_path else "tiny-byte"
    extra = tuple((k, v) for k, v in (("data", opts.data), ("path", opts.model_path)) if v)
    stale = ",".join(map(str, sz["stale"]))

    def case(p, r0, score, kind):
        return Case(NAME, "celora", model, "all", 0, 0, BATCH * SEQ, RANK, keep_ratio=p, svd_rank=r0,
                    score=score, dtype=opts.dtype, device=opts.device,
                    params=tuple(sorted((("kind", kind), ("warm", sz["warm"]), ("stale", stale)) + extra)))
    out = []
    for p in sz["ps"]:
        for r0 in (0, balanced_rank(RANK), 2 * balanced_rank(RANK)):
            out.append(case(p, r0, "product", "gx"))
        for score in ("residual_norm", "random"):
            out.append(case(p, balanced_rank(RANK), score, "gx"))
        out.append(case(p, balanced_rank(RANK), "product", "propagation"))
    return out


# ---- gradients captured from real training ------------------------------------------------

_CAPTURES: dict[tuple, dict] = {}


def _train_model(case: Case):
    p = dict(case.params)
    t = text_task.task(p.get("path"), p.get("data"))
    model = t.model()
    core.convert(model, "dense", r=RANK, alpha=ALPHA)
    torch.manual_seed(0)
    for m in core.celora_modules(model):        # a trained-looking B from step 0 on
        torch.nn.init.normal_(m.lora_B, std=1e-3)
    return t, model


def captures(case: Case) -> dict:
    """{step: {layer name: (x, G_y, A, B)}} at warm + each staleness, from one dense-LoRA fine-tune."""
    p = dict(case.params)
    key = (p.get("path"), p.get("data"), p["warm"], p["stale"], case.device)
    if key in _CAPTURES:
        return _CAPTURES[key]
    t, model = _train_model(case)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, core.CELoRALinear)}
    wanted = {p["warm"] + int(s) for s in p["stale"].split(",")}
    got: dict[int, dict] = {}
    store: dict[str, list] = {}

    def hook(name):
        def fwd(mod, inputs, out):
            if mod.training:
                x = inputs[0].detach().reshape(-1, mod.in_features)
                out.register_hook(lambda g: store.__setitem__(name, [x, g.detach().reshape(-1, mod.out_features)]))
        return fwd
    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=LR)
    g = torch.Generator().manual_seed(0)
    model.train()
    for step in range(max(wanted) + 1):
        x = text_task.windows(t.train, BATCH, SEQ, g)
        store.clear()
        model(input_ids=x, labels=x).loss.backward()
        if step in wanted:
            got[step] = {n: (*store[n], layers[n].lora_A.detach().clone(), layers[n].lora_B.detach().clone())
                         for n in layers if n in store}
        opt.step()
        opt.zero_grad(set_to_none=True)
    for h in handles:
        h.remove()
    out = {"steps": got, "weights": {n: m.weight.detach() for n, m in layers.items()},
           "scale": next(iter(layers.values())).scale, "task": t}
    _CAPTURES[key] = out
    return out


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
    for name, W0 in cap["weights"].items():
        proj, layer = _short(name)
        r0 = min(case.svd_rank, *W0.shape)
        B0, A0 = selection.svd_split(W0, r0)
        res_sq = selection.residual_row_sq_norms(W0, B0, A0)
        k = core.CELoRAConfig(keep_ratio=case.keep_ratio).kept(W0.shape[0])
        x_ref, gy_ref, *_ = cap["steps"][warm][name]
        idx = selection.select(case.score, gy_ref, res_sq, k, gen)           # refreshed at the warm step
        rows_R = selection.residual_rows(W0, idx, B0, A0)
        for s in stale:
            _, gy, A, B = cap["steps"][warm + s][name]
            exact_frozen = C.grad_x_frozen_dense(gy, W0)
            lora = cap["scale"] * (gy @ B) @ A
            approx = C.grad_x_frozen_cached(gy, idx, rows_R, B0, A0)
            rel, cos = _rel_cos(approx + lora, exact_frozen + lora)
            rows.append(Row(case, f"{proj}/L{layer}/stale{s}",
                            extra={"rel_error": rel, "cosine": cos, "module": proj, "layer": layer,
                                   "staleness": s, "m": W0.shape[0], "n": W0.shape[1], "k": k, "r0": r0}))
    return rows


def run_propagation(case: Case, ctx: Context) -> list[Row]:
    """G_A, G_B of every layer after one full backward: CE-LoRA (all projections at p) vs exact LoRA."""
    cap = captures(case)
    t = cap["task"]
    exact_model = t.model()
    core.convert(exact_model, "dense", r=RANK, alpha=ALPHA)
    approx_model = t.model()
    core.convert(approx_model, {"*_proj": core.CELoRAConfig(r=RANK, alpha=ALPHA, keep_ratio=case.keep_ratio,
                                                              svd_rank=case.svd_rank, score=case.score)})
    warm = dict(case.params)["warm"]
    exact_layers = dict((n, m) for n, m in exact_model.named_modules() if isinstance(m, core.CELoRALinear))
    approx_layers = dict((n, m) for n, m in approx_model.named_modules() if isinstance(m, core.CELoRALinear))
    with torch.no_grad():
        for n, (x, gy, A, B) in cap["steps"][warm].items():
            for layers in (exact_layers, approx_layers):
                layers[n].lora_A.copy_(A)
                layers[n].lora_B.copy_(B)
    x = text_task.windows(t.train, BATCH, SEQ, torch.Generator().manual_seed(7))
    for m in (exact_model, approx_model):
        m.train()
        m(input_ids=x, labels=x).loss.backward()
    rows = []
    for n, ex in exact_layers.items():
        ap = approx_layers[n]
        proj, layer = _short(n)
        for which in ("A", "B"):
            rel, cos = _rel_cos(getattr(ap, f"lora_{which}").grad, getattr(ex, f"lora_{which}").grad)
            rows.append(Row(case, f"{proj}/L{layer}/G_{which}",
                            extra={"rel_error": rel, "cosine": cos, "module": proj, "layer": layer,
                                   "grad": f"G_{which}"}))
    return rows


def run_case(case: Case, ctx: Context) -> list[Row]:
    return run_propagation(case, ctx) if case.param("kind") == "propagation" else run_gx(case, ctx)


# ---- verdict ----------------------------------------------------------------------------

def _mean_err(rows, **match) -> float | None:
    vals = [r.extra["rel_error"] for r in rows if all(
        (getattr(r.case, k) if hasattr(r.case, k) else r.extra.get(k)) == v for k, v in match.items())]
    return statistics.fmean(vals) if vals else None


def verdict(rows: list[Row]) -> list[Check]:
    gx = [r for r in rows if r.case.param("kind") == "gx"]
    prop = [r for r in rows if r.case.param("kind") == "propagation"]
    checks = []
    bal = balanced_rank(RANK)
    for p in sorted({r.case.keep_ratio for r in gx}):
        e0 = _mean_err(gx, keep_ratio=p, svd_rank=0, score="product", staleness=0)
        eb = _mean_err(gx, keep_ratio=p, svd_rank=bal, score="product", staleness=0)
        e2 = _mean_err(gx, keep_ratio=p, svd_rank=2 * bal, score="product", staleness=0)
        if e0 is not None and eb is not None:
            checks.append(Check("1. double-LoRA reduces G_x error", f"p={p:g}, product, fresh index",
                                "mean rel. error r0=0 → balanced", eb, f"< {e0:.4f} (r0=0)",
                                "PASS" if eb < e0 else "FAIL",
                                f"r0=0 {e0:.4f}, r0={bal} {eb:.4f}" + (f", r0={2 * bal} {e2:.4f}" if e2 else "")))
        ep = eb
        for score in ("residual_norm", "random"):
            es = _mean_err(gx, keep_ratio=p, svd_rank=bal, score=score, staleness=0)
            if ep is not None and es is not None:
                checks.append(Check("2. product score beats " + score, f"p={p:g}, r0={bal}, fresh index",
                                    "mean rel. error product", ep, f"< {es:.4f} ({score})",
                                    "PASS" if ep < es else "FAIL"))
        stale = sorted({r.extra["staleness"] for r in gx})
        for s in stale[1:]:
            es = _mean_err(gx, keep_ratio=p, svd_rank=bal, score="product", staleness=s)
            if es is not None and eb:
                checks.append(Check("3. index staleness", f"p={p:g}, r0={bal}, product",
                                    f"mean rel. error after {s} steps", es, "reported", "INFO",
                                    f"{es / eb:.3f}× the fresh index's"))
    by_module = defaultdict(list)
    for r in gx:
        if r.case.keep_ratio == 0.5 and r.case.svd_rank == bal and r.case.score == "product" \
                and r.extra["staleness"] == 0:
            by_module[r.extra["module"]].append(r.extra["rel_error"])
    for mod, vals in sorted(by_module.items()):
        checks.append(Check("4. G_x error by module type", f"{mod}, p=0.5, r0={bal}", "mean rel. error",
                            statistics.fmean(vals), "reported", "INFO"))
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
            checks.append(Check("5. error reaching trainable gradients", f"p={p:g} all projections, r0={bal}",
                                f"mean rel. error of {which}", statistics.fmean(e for _, e, _ in vals), "reported",
                                "INFO", f"by layer {detail}; mean cosine "
                                        f"{statistics.fmean(c for _, _, c in vals):.4f}"))
    return checks


def summary_table(rows: list[Row]):
    from rich.table import Table
    t = Table(title="approx-error: mean over modules and layers (fresh index unless stated)",
              caption="relative error ‖Ĝ − G‖/‖G‖ and cosine of G_x (exact LoRA part included), "
                      "or of G_A/G_B after a full backward", caption_justify="left")
    for col in ("kind", "p", "r0", "score", "staleness", "mean rel. error", "mean cosine", "rows"):
        t.add_column(col, justify="left" if col in ("kind", "score") else "right")
    groups = defaultdict(list)
    for r in rows:
        key = (r.case.param("kind"), r.case.keep_ratio, r.case.svd_rank, r.case.score,
               r.extra.get("staleness", r.extra.get("grad")))
        groups[key].append(r)
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3], str(k[4]).zfill(4))):
        rs = groups[key]
        t.add_row(key[0], f"{key[1]:g}", str(key[2]), key[3], str(key[4]),
                  f"{statistics.fmean(r.extra['rel_error'] for r in rs):.4f}",
                  f"{statistics.fmean(r.extra['cosine'] for r in rs):.4f}", str(len(rs)))
    return t


def plot(rows: list[Row], out_dir: str) -> list[str]:
    import matplotlib.pyplot as plt

    from celora_bench.plot import save
    gx = [r for r in rows if r.case.param("kind") == "gx" and r.extra.get("staleness") == 0]
    if not gx:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    series = defaultdict(lambda: defaultdict(list))
    for r in gx:
        series[(r.case.svd_rank, r.case.score)][r.case.keep_ratio].append(r.extra["rel_error"])
    for (r0, score), pts in sorted(series.items()):
        ps = sorted(pts)
        axes[0].plot(ps, [statistics.fmean(pts[p]) for p in ps], "o-", label=f"r0={r0}, {score}")
    axes[0].set_xlabel("keep ratio p")
    axes[0].set_ylabel("mean relative error of G_x")
    axes[0].set_title("G_x error against p (fresh index)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    stale = defaultdict(lambda: defaultdict(list))
    bal = balanced_rank(RANK)
    for r in rows:
        if r.case.param("kind") == "gx" and r.case.svd_rank == bal and r.case.score == "product":
            stale[r.case.keep_ratio][r.extra["staleness"]].append(r.extra["rel_error"])
    for p, pts in sorted(stale.items()):
        ss = sorted(pts)
        axes[1].plot(ss, [statistics.fmean(pts[s]) for s in ss], "o-", label=f"p={p:g}")
    axes[1].set_xlabel("steps since the index refresh")
    axes[1].set_ylabel("mean relative error of G_x")
    axes[1].set_title(f"index staleness (r0={bal}, product score)")
    axes[1].legend(fontsize=8)
    axes[1].grid(alpha=0.3)
    return [save(fig, out_dir, "approx-error.png")]
