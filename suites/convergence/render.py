"""convergence's table and plot: final metrics per arm over seeds (Δ against LoRA paired by seed), and the
loss curves with a ±1 sd band over seeds."""
from __future__ import annotations

import statistics

from celora_bench.cases import Row
from celora_bench.render.figures import save
from celora_bench.render.tables import Table
from suites.convergence import medium
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


def medium_table(rows: list[Row]) -> Table:
    """One row per arm: each metric with its paired Δ, 90% interval and verdict, and the step time; the
    intervals, verdicts and times are the verdict's own (medium.verdict), not recomputed here."""
    checks = medium.verdict(rows)
    by = {(dict(c.labels).get("arm"), dict(c.labels).get("metric", "step")): c for c in checks if c.labels}
    seeds = sorted({r.case.param("seed") for r in rows})
    t = Table(title=f"convergence --medium: LoRA vs CE-LoRA, {weights_label(rows[0].case)}, {len(seeds)} seeds, "
                    f"{rows[0].case.param('steps')} steps",
              caption=f"mean ± sd over seeds; Δ = arm - LoRA paired by seed, 90% t-interval (TOST at "
                      f"{medium.ALPHA:.0%} each side) against ±{medium.ACC_TOL:g} accuracy points and "
                      f"±{medium.LOSS_TOL:.0%} of LoRA's held-out loss; seeds to decide: at the observed spread; "
                      f"step ms: median of each run, geometric mean over seeds [95% t-interval of the logs]; "
                      f"speed-up: LoRA's step time / the arm's, paired by seed")
    for col in ("arm", "accuracy %", "Δ acc [90%]", "acc verdict", "held-out loss", "Δ loss [90%]",
                "loss verdict", "step ms [95%]", "speed-up vs LoRA [95%]"):
        t.add_column(col, justify="left" if col == "arm" else "right")

    def cell(c):
        if c is None:
            return "—", "—"
        iv = "" if c.lo is None else f" [{c.lo:+.3f}, {c.hi:+.3f}]"
        lab = dict(c.labels)
        return f"{c.value:+.4f}{iv}", f"{lab['verdict']} (seeds to decide: {lab['seeds_to_decide']})"

    for arm in [a for a in medium.ORDER if (a, "step") in by or any(r.case.provider == a for r in rows)]:
        vals = {m: [r.extra[m] for r in rows if r.component == "final" and r.case.provider == arm and m in r.extra]
                for m, _, _ in medium.METRICS}
        acc, loss = (f"{_msd(v)[0]:.4f} ± {_msd(v)[1]:.4f}" if v else "—" for v in vals.values())
        da, va = cell(by.get((arm, "accuracy")))
        dl, vl = cell(by.get((arm, "eval_loss")))
        st = medium.step_times(rows).get(arm)
        ms = ("—" if st is None else f"{st['ms']:.1f}"
              + ("" if st["lo"] is None else f" [{st['lo']:.1f}, {st['hi']:.1f}]"))
        sp = ("—" if st is None or arm == "lora" or st["s_lo"] is None else
              f"{st['speedup']:.3f}x [{st['s_lo']:.3f}, {st['s_hi']:.3f}]")
        t.add_row(arm, acc, da, va, loss, dl, vl, ms, sp)
    return t


def medium_plots(rows: list[Row], out_dir: str) -> list[str]:
    """The curves with ±1 sd seed bands (train loss, held-out answer loss, accuracy), and each arm's final
    accuracy and held-out loss against its step time (the trade-off)."""
    import matplotlib.pyplot as plt
    import numpy as np

    model, label = rows[0].case.model, weights_label(rows[0].case)
    arms = [a for a in medium.ORDER if any(r.case.provider == a for r in rows)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    fig.suptitle(f"convergence --medium [arith]: {label}", fontsize=10)
    curve_n = min(medium.CURVE_N, rows[0].case.param("test_n") or 0)
    for ax, comp, title in zip(axes, ("train_loss", "eval_loss_curve", "eval_accuracy"),
                               ("train loss", f"held-out answer loss, first {curve_n} problems",
                                f"exact-match accuracy, {rows[0].case.param('test_n')} held-out problems")):
        for ci, arm in enumerate(arms):
            curves = [r.extra for r in rows if r.component == comp and r.case.provider == arm]
            if not curves:
                continue
            steps = curves[0]["steps"]
            vals = np.array([c["values"] for c in curves if c["steps"] == steps])
            if comp == "train_loss" and len(steps) >= 10:
                vals = np.array([np.convolve(v, np.ones(5) / 5, mode="valid") for v in vals])
                steps, title = steps[4:], "train loss (5-step mean)"
            mean, sd = vals.mean(0), vals.std(0)
            ax.plot(steps, mean, label=arm, color=f"C{ci}", lw=1.2, marker="o" if len(steps) < 10 else None, ms=3)
            ax.fill_between(steps, mean - sd, mean + sd, color=f"C{ci}", alpha=0.15)
        ax.set_title(title + ", band = ±1 sd over seeds", fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("accuracy, %" if comp == "eval_accuracy" else "cross-entropy, nats/token")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    paths = [save(fig, out_dir, f"convergence-medium-{model}.png")]
    st = medium.step_times(rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    fig.suptitle(f"convergence --medium: final metric against step time, {label}\nx: each run's median step "
                 f"time, geometric mean over seeds, bar 95% interval; y: mean over seeds, bar ±1 sd", fontsize=9)
    for ax, (metric, name, _) in zip(axes, medium.METRICS):
        for ci, arm in enumerate(a for a in arms if a in st):
            v = [r.extra[metric] for r in rows
                 if r.component == "final" and r.case.provider == arm and metric in r.extra]
            if not v:
                continue
            m, sd = _msd(v)
            s = st[arm]
            xerr = None if s["lo"] is None else [[s["ms"] - s["lo"]], [s["hi"] - s["ms"]]]
            ax.errorbar([s["ms"]], [m], xerr=xerr, yerr=[sd], fmt="o", color=f"C{ci}", capsize=3, label=arm)
            ax.annotate(arm, (s["ms"], m), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel("ms per training step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    paths.append(save(fig, out_dir, f"convergence-tradeoff-{model}.png"))
    return paths


def tables(rows: list[Row]) -> list[Table]:
    if medium.is_medium(rows):
        return [medium_table(rows)]
    return [summary_table(rows)]


def plots(rows: list[Row], out_dir: str, machine: dict | None = None) -> list[str]:
    if medium.is_medium(rows):
        return medium_plots(rows, out_dir)
    return plot(rows, out_dir)
