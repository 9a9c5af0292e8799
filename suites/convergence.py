"""convergence: LoRA vs CE-LoRA loss curves on real text, with the paper's ablations, over seeds.

A pretrained model (suites/text_task.py) is LoRA fine-tuned on held-in text
and evaluated on held-out text. Every arm sees the same seeds and the same
data order. Arms: LoRA; CE-LoRA preset "paper"; every projection sampled;
No-Sample-K and No-Sample-V (K or V left dense, as in the paper); svd_rank 0
(no double-LoRA); tau 1 and 50 (the paper preset's is 200); score residual_norm.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import replace

import torch

import core
from celora_bench import distributed
from celora_bench.cases import Case, Row
from celora_bench.suite import Check, Context, Options
from suites import text_task
from suites.text_task import ALPHA, BATCH, LR, RANK, SEQ

NAME = "convergence"
DISTRIBUTED = True             # runs under torchrun with DDP: each rank its own data, losses averaged
DESCRIPTION = "Train/eval loss curves of LoRA vs CE-LoRA and ablations on real text, several seeds"
P_ALL = 0.5
ARMS = ("lora", "paper", "all", "no-sample-k", "no-sample-v", "svd0", "tau1", "tau50", "residual_norm")


def _sizes(mode: str):
    if mode == "quick":
        return dict(steps=60, eval_every=15, eval_batches=4, seeds=(0, 1, 2))
    return dict(steps=300, eval_every=25, eval_batches=8, seeds=(0, 1, 2, 3, 4))


def plan(arm: str) -> dict:
    """The conversion plan of an arm: pattern -> CELoRAConfig."""
    kw = dict(r=RANK, alpha=ALPHA)
    if arm == "lora":
        return core.preset("dense", **kw)
    if arm in ("all", "no-sample-k", "no-sample-v"):
        p = core.preset("all", keep_ratio=P_ALL, **kw)
        dense = core.preset("dense", **kw)
        for proj in {"no-sample-k": ("k_proj",), "no-sample-v": ("v_proj",)}.get(arm, ()):
            p[f"*{proj}"] = dense[f"*{proj}"]
        return p
    if arm == "svd0":
        return core.preset("paper", svd_rank=0, **kw)
    p = core.preset("paper", **kw)
    if arm in ("tau1", "tau50"):
        return {k: replace(v, tau=int(arm[3:])) for k, v in p.items()}
    if arm == "residual_norm":
        return {k: replace(v, score="residual_norm") for k, v in p.items()}
    if arm == "paper":
        return p
    raise ValueError(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}")


def cases(opts: Options) -> list[Case]:
    sz = _sizes(opts.mode)
    model = "local" if opts.model_path else "tiny-byte"
    extra = tuple((k, v) for k, v in (("data", opts.data), ("path", opts.model_path)) if v)
    return [Case(NAME, arm, model, "all", 0, 0, BATCH * SEQ, RANK, dtype=opts.dtype, device=opts.device,
                 params=tuple(sorted((("seed", seed), ("steps", sz["steps"]), ("eval_every", sz["eval_every"]),
                                      ("eval_batches", sz["eval_batches"])) + extra)))
            for seed in sz["seeds"] for arm in ARMS]


def _mean_over_ranks(loss: torch.Tensor) -> float:
    if distributed.active():
        loss = loss.clone()
        torch.distributed.all_reduce(loss)
        loss /= distributed.world()
    return loss.item()


def _eval(model, batches) -> float:
    model.eval()
    with torch.no_grad():
        loss = statistics.fmean(model(input_ids=b, labels=b).loss.item() for b in batches)
    model.train()
    return loss


def run_case(case: Case, ctx: Context) -> list[Row]:
    p = dict(case.params)
    t = text_task.task(p.get("path"), p.get("data"))
    device = distributed.local_device(case.device)
    torch.manual_seed(p["seed"])                       # the LoRA init (the same on every rank)
    model = t.model().to(device)
    core.convert(model, plan(case.provider))
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR)
    core.attach_optimizer(opt, model)
    if distributed.active():
        model = torch.nn.parallel.DistributedDataParallel(model)
    # the same data order in every arm; each data-parallel rank its own stream
    data = torch.Generator().manual_seed(p["seed"] * 1000 + distributed.rank())
    evals = [b.to(device) for b in t.eval_batches(BATCH, SEQ, p["eval_batches"])]
    train_steps, train_loss, eval_steps, eval_loss, step_s = [], [], [0], [_eval(model, evals)], []
    model.train()
    for step in range(1, p["steps"] + 1):
        x = text_task.windows(t.train, BATCH, SEQ, data).to(device)
        t0 = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_s.append(time.perf_counter() - t0)
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"{case.provider} seed {p['seed']}: loss is {loss.item()} at step {step}")
        train_steps.append(step)
        train_loss.append(_mean_over_ranks(loss.detach()))
        if step % p["eval_every"] == 0 or step == p["steps"]:
            eval_steps.append(step)
            eval_loss.append(_eval(model, evals))
    refreshes = sum(m.refresh_count for m in core.celora_modules(model))   # DDP's .module is found too
    return [
        Row(case, "train_loss", extra={"steps": train_steps, "values": train_loss}),
        Row(case, "eval_loss", extra={"steps": eval_steps, "values": eval_loss}),
        Row(case, "step", tuple(step_s), note="seconds per training step (forward, backward, optimizer)"),
        Row(case, "final", extra={"eval_loss": eval_loss[-1], "train_loss": statistics.fmean(train_loss[-10:]),
                                  "refreshes": refreshes}),
    ]


# ---- verdict ---------------------------------------------------------------------------

def finals(rows: list[Row]) -> dict[str, dict[int, float]]:
    """arm -> seed -> final eval loss."""
    out: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.component == "final":
            out.setdefault(r.case.provider, {})[r.case.param("seed")] = r.extra["eval_loss"]
    return out


def _msd(v):
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def _paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int]:
    """Mean and standard error of a - b over the seeds both have (same seed, same data)."""
    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    if len(d) < 2:
        return (d[0] if d else float("nan")), float("nan"), len(d)
    return statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d)), len(d)


def verdict(rows: list[Row]) -> list[Check]:
    """Within 1% of LoRA's final eval loss is the pass line; the paired SE says whether a gap is measurable."""
    f = finals(rows)
    checks = []
    lora = f.get("lora", {})
    for arm in [a for a in ARMS if a in f and a != "lora"]:
        md, se, n = _paired(f[arm], lora)
        if n < 2:
            continue
        tol = 0.01 * statistics.fmean(lora.values())
        measurable = abs(md) > 2 * se
        m, s_ = _msd(list(f[arm].values()))
        lm, ls = _msd(list(lora.values()))
        paper = arm == "paper"
        checks.append(Check("1. final eval loss vs LoRA" if paper else "2. ablation vs LoRA", f"{arm}, {n} seeds",
                            "Δ eval loss (paired mean)", md, f"<= {tol:.4f} (1% of LoRA)" if paper else "reported",
                            ("PASS" if md <= tol else "FAIL") if paper else "INFO",
                            f"{arm} {m:.4f} ± {s_:.4f}, LoRA {lm:.4f} ± {ls:.4f}; paired SE {se:.4f}: "
                            + ("a measurable gap" if measurable else "within seed noise")))
    means = {a: statistics.fmean(v.values()) for a, v in f.items() if v}
    if means:
        order = " < ".join(f"{a} {means[a]:.4f}" for a in sorted(means, key=means.get))
        checks.append(Check("3. ablation order (final eval loss, lower is better)", "all arms", "order", None,
                            "reported", "INFO", order))
    for arm, proj in (("no-sample-k", "K"), ("no-sample-v", "V")):
        if arm in f and "all" in f:
            md, se, n = _paired(f[arm], f["all"])
            if n < 2:
                continue
            if abs(md) <= 2 * se:
                said = "no measurable difference (|Δ| <= 2·SE): neither confirms nor refutes the paper"
            else:
                said = "matches the paper's claim" if md < 0 else "contradicts the paper's claim"
            checks.append(Check("4. paper: sampling K or V hurts more", f"No-Sample-{proj} vs all sampled",
                                "Δ eval loss (paired)", md, "< 0 in the paper", "INFO", f"SE {se:.4f}: {said}"))
    return checks


def summary_table(rows: list[Row]):
    from rich.table import Table
    f = finals(rows)
    t = Table(title="convergence: final losses over seeds", caption="mean ± sd over seeds; step time median ms",
              caption_justify="left")
    for col in ("arm", "seeds", "final eval loss", "final train loss (last 10)", "step ms", "refreshes/run"):
        t.add_column(col, justify="left" if col == "arm" else "right")
    for arm in [a for a in ARMS if a in f]:
        fin = [r for r in rows if r.component == "final" and r.case.provider == arm]
        steps = [x for r in rows if r.component == "step" and r.case.provider == arm for x in r.samples]
        e, es = _msd([r.extra["eval_loss"] for r in fin])
        tr, trs = _msd([r.extra["train_loss"] for r in fin])
        t.add_row(arm, str(len(fin)), f"{e:.4f} ± {es:.4f}", f"{tr:.4f} ± {trs:.4f}",
                  f"{statistics.median(steps) * 1e3:.1f}" if steps else "—",
                  f"{statistics.fmean(r.extra['refreshes'] for r in fin):.0f}")
    return t


def plot(rows: list[Row], out_dir: str) -> list[str]:
    import matplotlib.pyplot as plt
    import numpy as np

    from celora_bench.plot import save
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ai, comp in enumerate(("train_loss", "eval_loss")):
        ax = axes[ai]
        for ci, arm in enumerate(a for a in ARMS if any(r.case.provider == a for r in rows)):
            curves = [r.extra for r in rows if r.component == comp and r.case.provider == arm]
            steps = curves[0]["steps"]
            vals = np.array([c["values"] for c in curves if c["steps"] == steps])
            if comp == "train_loss":     # smooth the noisy per-step loss over 5 steps
                k = np.ones(5) / 5
                vals = np.array([np.convolve(v, k, mode="valid") for v in vals])
                steps = steps[4:]
            mean, sd = vals.mean(0), vals.std(0)
            ax.plot(steps, mean, label=arm, color=f"C{ci}", lw=1.2)
            ax.fill_between(steps, mean - sd, mean + sd, color=f"C{ci}", alpha=0.15)
        ax.set_title(("train loss (5-step mean)" if comp == "train_loss" else "held-out eval loss")
                     + ", band = ±1 sd over seeds")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("cross-entropy, nats/token")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    return [save(fig, out_dir, "convergence-loss.png")]
