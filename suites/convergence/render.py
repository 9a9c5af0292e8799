"""convergence's table and plot: final metrics per arm over seeds (Δ against LoRA paired by seed), and the
loss curves with a ±1 sd band over seeds."""
from __future__ import annotations

import statistics

from celora_bench.cases import Row
from celora_bench.render.figures import save
from celora_bench.render.tables import Table
from suites.convergence.checks import ARMS, TASKS, _msd, _smoke, _task_of, delta, finals
from suites.text_task import weights_label


def summary_table(rows: list[Row]):
    label = weights_label(rows[0].case) if rows else ""
    seeds = sorted({r.case.param("seed") for r in rows})
    steps = max((r.case.param("steps") for r in rows), default=0)
    smoke = (f" — SMOKE RUN ({len(seeds)} seed{'s' * (len(seeds) != 1)}, {steps} steps): it shows every arm runs, "
             f"not how they compare" if _smoke(rows) else "")
    t = Table(title=f"convergence: final metrics over seeds, {label}{smoke}",
              caption="mean ± sd over seeds; Δ vs LoRA paired by seed, 95% interval mean ± t·SE; "
                      "lm: held-out eval loss (nats/token), arith: exact-match accuracy (%) of greedy answers "
                      "on held-out problems; step time median ms")
    for col in ("task", "arm", "seeds", "final", "Δ vs LoRA", "95% interval", "final train loss (last 10)",
                "step ms", "refreshes/run"):
        t.add_column(col, justify="left" if col in ("task", "arm") else "right")
    for task in [k for k in TASKS if any(_task_of(r) == k for r in rows)]:
        f = finals(rows, task)
        for arm in [a for a in ARMS if a in f]:
            fin = [r for r in rows if r.component == "final" and r.case.provider == arm and _task_of(r) == task]
            st = [x for r in rows if r.component == "step" and r.case.provider == arm and _task_of(r) == task
                  for x in r.samples]
            e, es = _msd(list(f[arm].values()))
            tr, trs = _msd([r.extra["train_loss"] for r in fin])
            md, lo, hi, _ = delta(f[arm], f.get("lora", {})) if arm != "lora" else (None, None, None, 0)
            t.add_row(task, arm, str(len(fin)), f"{e:.4f} ± {es:.4f}", "—" if md is None else f"{md:+.4f}",
                      "—" if lo is None else f"[{lo:+.4f}, {hi:+.4f}]", f"{tr:.4f} ± {trs:.4f}",
                      f"{statistics.median(st) * 1e3:.1f}" if st else "—",
                      f"{statistics.fmean(r.extra['refreshes'] for r in fin):.0f}")
    return t

def plot(rows: list[Row], out_dir: str) -> list[str]:
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    for task in [k for k in TASKS if any(_task_of(r) == k for r in rows)]:
        trows = [r for r in rows if _task_of(r) == task]
        evalc = "eval_accuracy" if task == "arith" else "eval_loss"
        model = trows[0].case.model
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        smoke = ", smoke run" if _smoke(trows) else ""
        fig.suptitle(f"convergence [{task}]: {weights_label(trows[0].case)}{smoke}", fontsize=10)
        for ai, comp in enumerate(("train_loss", evalc)):
            ax = axes[ai]
            for ci, arm in enumerate(a for a in ARMS if any(r.case.provider == a for r in trows)):
                curves = [r.extra for r in trows if r.component == comp and r.case.provider == arm]
                steps = curves[0]["steps"]
                vals = np.array([c["values"] for c in curves if c["steps"] == steps])
                if comp == "train_loss" and len(steps) >= 10:     # smooth the noisy per-step loss over 5 steps
                    k = np.ones(5) / 5
                    vals = np.array([np.convolve(v, k, mode="valid") for v in vals])
                    steps = steps[4:]
                mean, sd = vals.mean(0), vals.std(0)
                ax.plot(steps, mean, label=arm, color=f"C{ci}", lw=1.2, marker="o" if len(steps) < 10 else None,
                        ms=3)
                ax.fill_between(steps, mean - sd, mean + sd, color=f"C{ci}", alpha=0.15)
            title = {"train_loss": "train loss" + (" (5-step mean)" if len(steps) >= 10 else ""),
                     "eval_loss": "held-out eval loss", "eval_accuracy": "held-out exact-match accuracy"}[comp]
            ax.set_title(title + ", band = ±1 sd over seeds", fontsize=9)
            ax.set_xlabel("optimizer step")
            ax.set_ylabel("accuracy, %" if comp == "eval_accuracy" else "cross-entropy, nats/token")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=8)
        tag = ("" if model == "tiny-byte" else f"-{model}") + ("" if task == "lm" else f"-{task}")
        paths.append(save(fig, out_dir, f"convergence-loss{tag}.png"))
    return paths


def tables(rows: list[Row]) -> list[Table]:
    return [summary_table(rows)]


def plots(rows: list[Row], out_dir: str) -> list[str]:
    return plot(rows, out_dir)
