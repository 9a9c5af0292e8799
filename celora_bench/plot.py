"""PNG plots of a run, read from the results file only.

1. Stacked bars of the backward components per layer: dense vs CE-LoRA at each p.
2. Speed-up against p: the G_y·W0 component and the whole layer, with the
   ideal 1/p and the Amdahl bound from the measured dense share drawn in.
"""
from __future__ import annotations

import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from celora_bench.report import by_case, case_label  # noqa: E402
from celora_bench.results import Run  # noqa: E402
from suites.models import PROJECTIONS as LAYER_ORDER  # noqa: E402  (plot order: as in a block)

BWD = ("bwd.grad_x_frozen", "bwd.grad_h", "bwd.grad_B", "bwd.grad_A", "bwd.grad_x_lora", "selection.amortized")


def save(fig, out_dir: str, name: str) -> str:
    """Writes a figure as out_dir/name at 120 dpi and closes it; returns the path."""
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _groups(run: Run):
    """(model, N, r, dtype, device) -> {case: {component: Row}} for layer-level cases."""
    out = defaultdict(dict)
    for case, comps in by_case(run.rows).items():
        if case.provider in ("dense", "celora") and "bwd.grad_x_frozen" in comps:
            out[(case.model, case.tokens, case.rank, case.dtype, case.device)][case] = comps
    return out


def _order(layer: str) -> int:
    return LAYER_ORDER.index(layer) if layer in LAYER_ORDER else len(LAYER_ORDER)


def breakdown(cases: dict, title: str, path: str) -> str:
    layers = sorted({c.layer for c in cases}, key=_order)
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
                       color=colors[ci], label=comp if (vi == 0 and li == 0) or False else None)
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


def speedup(cases: dict, title: str, path: str) -> str:
    layers = sorted({c.layer for c in cases}, key=_order)
    cols = min(4, len(layers))
    rows_n = (len(layers) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 3.2 * rows_n), squeeze=False)
    ps = np.linspace(0.2, 1.0, 50)
    for ax, layer in zip(axes.flat, layers):
        dense = next((c for c in cases if c.layer == layer and c.provider == "dense"), None)
        if dense is None:
            continue
        d = cases[dense]
        comp_d, whole_d = d["bwd.grad_x_frozen"].time.median, d["fwd+bwd"].time.median
        share = comp_d / whole_d
        ax.plot(ps, 1 / ps, "k--", lw=1, label="ideal 1/p (G_y·W0)")
        ax.plot(ps, 1 / (1 - share + share * ps), "k:", lw=1, label=f"Amdahl, share {share:.2f}")
        for c, comps in cases.items():
            if c.layer != layer or c.provider != "celora":
                continue
            mk = "o" if c.svd_rank == 0 else "s"
            fill = "full" if c.cache_rows else "none"
            ax.plot(c.keep_ratio, comp_d / comps["bwd.grad_x_frozen"].time.median, mk, color="C0",
                    fillstyle=fill)
            ax.plot(c.keep_ratio, whole_d / comps["fwd+bwd"].time.median, mk, color="C3", fillstyle=fill)
        ax.set_title(f"{layer} {dense.m}x{dense.n}", fontsize=9)
        ax.set_xlabel("keep ratio p")
        ax.set_ylabel("speed-up vs dense")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(layers):]:
        ax.axis("off")
    h = [plt.Line2D([], [], ls="--", color="k"), plt.Line2D([], [], ls=":", color="k"),
         plt.Line2D([], [], marker="o", ls="", color="C0"), plt.Line2D([], [], marker="o", ls="", color="C3"),
         plt.Line2D([], [], marker="s", ls="", color="grey", fillstyle="none")]
    fig.legend(h, ["ideal 1/p", "Amdahl bound (measured share)", "G_y·W0 component", "layer fwd+bwd",
                   "square: double-LoRA r0>0; hollow: lean"], loc="lower center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title)
    fig.subplots_adjust(bottom=0.2)
    return save(fig, *os.path.split(path))


def plot(run: Run, out_dir: str) -> list[str]:
    """The layer plots for every layer-level group, then each suite's own plots (if it has any)."""
    from celora_bench import registry

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for suite in sorted({r.case.suite for r in run.rows}):
        mod = registry.get(suite)
        if hasattr(mod, "plot"):
            paths += mod.plot([r for r in run.rows if r.case.suite == suite], out_dir)
    for (model, N, r, dtype, device), cases in sorted(_groups(run).items()):
        tag = f"{model}-N{N}-r{r}-{dtype}-{device}"
        title = f"{model}, N={N}, r={r}, {dtype}, {device}"
        paths.append(breakdown(cases, f"backward components: {title}", os.path.join(out_dir, f"breakdown-{tag}.png")))
        if any(c.provider == "celora" for c in cases):
            paths.append(speedup(cases, f"speed-up vs p: {title}", os.path.join(out_dir, f"speedup-{tag}.png")))
    return paths
