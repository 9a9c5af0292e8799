"""backward-breakdown's plots: the backward components per layer, stacked, and the speed-up against p with
the ideal 1/p and the Amdahl bound from the measured dense share drawn in."""
from __future__ import annotations

import os

import numpy as np

from celora_bench import intervals
from celora_bench.models import layer_order
from celora_bench.render.figures import layer_groups, plt, save
from celora_bench.render.tables import case_label
from celora_bench.roofline import amdahl_bound

BWD = ("bwd.grad_x_frozen", "bwd.grad_h", "bwd.grad_B", "bwd.grad_A", "bwd.grad_x_lora", "selection.amortized")
PLOT_CAPTIONS = {
    "breakdown-": "backward components per layer, stacked (median ms): dense vs CE-LoRA at each p",
    "speedup-": "speed-up vs p per layer: the G_y·W0 component and the whole layer, with ideal 1/p and "
                "the Amdahl bound from the measured dense share",
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
            ax.text(li + (vi - (len(variants) - 1) / 2) * width, bottom, case_label(case).replace("celora ", ""),
                    rotation=90, fontsize=6, ha="center", va="bottom")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[i]) for i in range(len(BWD))]
    ax.legend(handles, BWD, fontsize=8, loc="upper left")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel("backward time, ms (median)")
    ax.set_title(title)
    ax.margins(y=0.25)
    return save(fig, *os.path.split(path))


def _samples(row) -> tuple[float, ...]:
    """Kernel-time samples where the row has them (CUDA), else wall-time samples, as the verdict judges."""
    return row.kernel or row.samples


def _series(row) -> intervals.Series:
    return row.judged_series()


def speedup(cases: dict, title: str, path: str) -> str:
    """Speed-up against p per layer, each point with its 95.5% interval (process-nested, celora_bench.intervals)."""
    layers = sorted({c.layer for c in cases}, key=layer_order)
    cols = min(4, len(layers))
    rows_n = (len(layers) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 3.2 * rows_n), squeeze=False)
    ps = np.linspace(0.2, 1.0, 50)
    for ax, layer in zip(axes.flat, layers):
        dense = next((c for c in cases if c.layer == layer and c.provider == "dense"), None)
        if dense is None:
            continue
        d = cases[dense]
        share = np.median(_samples(d["bwd.grad_x_frozen"])) / np.median(_samples(d["fwd+bwd"]))
        ax.plot(ps, 1 / ps, "k--", lw=1, label="ideal 1/p (G_y·W0)")
        ax.plot(ps, amdahl_bound(share, ps), "k:", lw=1, label=f"Amdahl, share {share:.2f}")
        for c, comps in cases.items():
            if c.layer != layer or c.provider != "celora":
                continue
            mk = "o" if c.svd_rank == 0 else "s"
            fill = "full" if c.cache_rows else "none"
            for name, color in (("bwd.grad_x_frozen", "C0"), ("fwd+bwd", "C3")):
                try:                                                   # dense / CE-LoRA, paired by round
                    iv = intervals.paired_ratio(_series(d[name]), _series(comps[name]))
                except intervals.Unpaired:                             # a file from before rounds
                    iv = None
                if iv is None:
                    continue
                err = [[0.0], [0.0]] if iv.lo is None else [[iv.value - iv.lo], [iv.hi - iv.value]]
                ax.errorbar(c.keep_ratio, iv.value, yerr=err, fmt=mk, color=color, fillstyle=fill, capsize=2,
                            elinewidth=0.8)
        ax.set_title(f"{layer} {dense.m}x{dense.n}", fontsize=9)
        ax.set_xlabel("keep ratio p")
        ax.set_ylabel("speed-up vs dense")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(layers):]:
        ax.axis("off")
    h = [plt.Line2D([], [], ls="--", color="k"), plt.Line2D([], [], ls=":", color="k"),
         plt.Line2D([], [], marker="o", ls="", color="C0"), plt.Line2D([], [], marker="o", ls="", color="C3"),
         plt.Line2D([], [], marker="s", ls="", color="grey", fillstyle="none")]
    fig.legend(h, ["ideal 1/p", "Amdahl bound (measured share)", "G_y·W0 component (95.5% interval)",
                   "layer fwd+bwd (95.5% interval)",
                   "square: double-LoRA r0>0; hollow: lean"], loc="lower center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title)
    return save(fig, *os.path.split(path), rect=(0, 0.6 / fig.get_figheight(), 1, 1))   # legend below


def plots(rows, out_dir: str) -> list[str]:
    """Per layer group (model, N, r, dtype, device): the breakdown, and the speed-up where CE-LoRA ran."""
    paths = []
    for (model, N, r, dtype, device), cases in sorted(layer_groups(rows).items()):
        tag = f"{model}-N{N}-r{r}-{dtype}-{device}"
        title = f"{model}, N={N}, r={r}, {dtype}, {device}"
        paths.append(breakdown(cases, f"backward components: {title}", os.path.join(out_dir, f"breakdown-{tag}.png")))
        if any(c.provider == "celora" for c in cases):
            paths.append(speedup(cases, f"speed-up vs p: {title}", os.path.join(out_dir, f"speedup-{tag}.png")))
    return paths
