"""backward-breakdown's plots: the backward components per layer, stacked, and the verdict's cost and Amdahl
checks against p (drawn from the checks themselves, so each point is its table row's value and interval)."""
from __future__ import annotations

import os

import numpy as np

from celora_bench.models import layer_order
from celora_bench.render.figures import plt, save
from core.scopes import GRAD_A, GRAD_B, GRAD_H, GRAD_X_FROZEN, GRAD_X_LORA
from suites.backward_breakdown.checks import AMDAHL_CHECK, COST_CHECK, TIME_SLACK, verdict
from suites.layer_bench import ROOFLINE_CAPTION, layer_groups, rooflines
from suites.lines import amdahl_line

BWD = (GRAD_X_FROZEN, GRAD_H, GRAD_B, GRAD_A, GRAD_X_LORA, "selection.amortized")
PLOT_CAPTIONS = {
    "breakdown-": "backward components per layer, stacked (median ms): dense vs CE-LoRA at each p",
    "speedup-": "the verdict against p per layer: G_y·W0's cost over dense's (the cost check, with its line 1.15·p "
                "and the ideal p) and the layer's speed-up over its Amdahl bound (the Amdahl check, the device's "
                "line); every point is its verdict row's value and 95.5% interval",
    "roofline-": ROOFLINE_CAPTION,
}


def breakdown(cases: dict, title: str, path: str) -> str:
    layers = sorted({c.layer for c in cases}, key=layer_order)
    variants = sorted({(c.provider, c.keep_ratio, c.svd_rank, c.cache_rows) for c in cases},
                      key=lambda v: (v[0] != "dense", -v[1], v[2], v[3]))
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(layers) * max(1, len(variants) / 3)), 5))
    colors = plt.cm.tab10(np.arange(len(BWD)))
    for vi, v in enumerate(variants):
        for li, layer in enumerate(layers):
            case = next((c for c in cases if c.layer == layer and (c.provider, c.keep_ratio, c.svd_rank,
                                                                    c.cache_rows) == v), None)
            if case is None:
                continue
            bottom = 0.0
            for ci, comp in enumerate(BWD):
                row = cases[case].get(comp)
                if row is None or row.time is None:
                    continue
                h = row.time.median * 1e3
                ax.bar(li + (vi - (len(variants) - 1) / 2) * width, h, width * 0.95, bottom=bottom,
                       color=colors[ci], label=comp if vi == 0 and li == 0 else None)
                bottom += h
            ax.text(li + (vi - (len(variants) - 1) / 2) * width, bottom, case.label.replace("celora ", ""),
                    rotation=90, fontsize=6, ha="center", va="bottom")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[i]) for i in range(len(BWD))]
    ax.legend(handles, BWD, fontsize=8, loc="upper left")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel("backward time, ms (median)")
    ax.set_title(title)
    ax.margins(y=0.25)
    return save(fig, *os.path.split(path))


def points(checks: list, question: str) -> dict[str, list[tuple[float, float, float | None, float | None, dict]]]:
    """Per layer, the (p, value, lo, hi, labels) of every timed check of one question, in p order: what the
    figure draws, read from the checks alone."""
    out: dict[str, list] = {}
    for c in checks:
        lab = dict(c.labels)
        if c.check == question and c.kind == "measured" and "p" in lab and c.value is not None:
            out.setdefault(lab["layer"], []).append((float(lab["p"]), c.value, c.lo, c.hi, lab))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in out.items()}


def speedup(checks: list, title: str, path: str, device: str = "cpu") -> str:
    """Checks 2 (cost over dense) and 3 (speed-up over the Amdahl bound) against p, one column per layer; the
    lines are the verdict's on device (suites.lines: dotted, double-LoRA's where it differs)."""
    plain, double = amdahl_line(device, 0), amdahl_line(device, 1)
    cost, amdahl = points(checks, COST_CHECK), points(checks, AMDAHL_CHECK)
    layers = sorted(set(cost) | set(amdahl), key=layer_order)
    fig, axes = plt.subplots(2, len(layers), figsize=(3.4 * len(layers), 6.0), squeeze=False)
    ps = np.linspace(0.2, 1.0, 50)
    for j, layer in enumerate(layers):
        top, bottom = axes[0][j], axes[1][j]
        top.plot(ps, ps, "k-", lw=0.8)
        top.plot(ps, TIME_SLACK * ps, "k--", lw=1)
        bottom.axhline(plain, color="k", ls="--", lw=1)
        if double != plain:
            bottom.axhline(double, color="k", ls=":", lw=1)
        bottom.axhline(1.0, color="k", lw=0.8)
        for ax, pts in ((top, cost.get(layer, [])), (bottom, amdahl.get(layer, []))):
            for p, v, lo, hi, lab in pts:
                err = [[0.0], [0.0]] if lo is None else [[v - lo], [hi - v]]
                dx = 0.012 if lab.get("mode") == "cached" else -0.012 if lab.get("r0", "0") != "0" else 0.0
                ax.errorbar(p + dx, v, yerr=err, fmt="s" if lab.get("r0", "0") != "0" else "o", color="C0",
                            fillstyle="full" if lab.get("mode") == "cached" else "none", capsize=2, elinewidth=0.8)
            ax.grid(alpha=0.3)
        top.set_title(layer, fontsize=9)
        top.set_ylabel("G_y·W0 cost / dense")
        bottom.set_ylabel("speed-up / Amdahl bound")
        bottom.set_xlabel("keep ratio p")
    h = [plt.Line2D([], [], ls="-", color="k"), plt.Line2D([], [], ls="--", color="k"),
         plt.Line2D([], [], marker="o", ls="", color="C0", fillstyle="none"),
         plt.Line2D([], [], marker="s", ls="", color="C0", fillstyle="none")]
    line = f"{plain:.2f}" + (f", r0 > 0: {double:.2f}" if double != plain else "")
    fig.legend(h, ["ideal (p; bound 1.0)", f"the verdict's line (1.15·p; {line})", "r0 = 0 (filled: cached)",
                   "double-LoRA r0 > 0"], loc="lower center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title)
    return save(fig, *os.path.split(path), rect=(0, 0.5 / fig.get_figheight(), 1, 1))   # legend below


def plots(rows, out_dir: str, machine: dict | None = None) -> list[str]:
    """Per layer group (model, N, r, dtype, device): the breakdown, and the speed-up where CE-LoRA ran; then
    the rooflines."""
    paths = []
    for (model, N, r, dtype, device), cases in sorted(layer_groups(rows).items()):
        tag = f"{model}-N{N}-r{r}-{dtype}-{device}"
        title = f"{model}, N={N}, r={r}, {dtype}, {device}"
        paths.append(breakdown(cases, f"backward components: {title}", os.path.join(out_dir, f"breakdown-{tag}.png")))
        if any(c.provider == "celora" for c in cases):
            group = [r_ for r_ in rows if (r_.case.model, r_.case.tokens, r_.case.rank, r_.case.dtype,
                                           r_.case.device) == (model, N, r, dtype, device)]
            checks = verdict(group)
            if points(checks, COST_CHECK) or points(checks, AMDAHL_CHECK):
                paths.append(speedup(checks, f"the verdict against p: {title}",
                                     os.path.join(out_dir, f"speedup-{tag}.png"), device))
    return paths + rooflines(rows, out_dir, machine)
