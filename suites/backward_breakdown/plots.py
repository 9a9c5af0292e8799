"""backward-breakdown's plots: the backward components per layer, stacked, and the rooflines. Its figure of
checks (the cost, Amdahl and kept-column checks against p) is declared as SPEEDUP and drawn by the harness from
the verdict itself, so each point is its verdict row's value, interval and line."""
from __future__ import annotations

import os

import numpy as np

from celora_bench.models import layer_order
from celora_bench.render.figures import plt, save
from celora_bench.suite import CheckPlot
from core.scopes import GRAD_A, GRAD_B, GRAD_H, GRAD_X_FROZEN, GRAD_X_LORA
from suites.backward_breakdown.checks import AMDAHL_CHECK, COST_CHECK, KEPT_CHECK
from suites.layer_bench import ROOFLINE_CAPTION, layer_groups, rooflines

BWD = (GRAD_X_FROZEN, GRAD_H, GRAD_B, GRAD_A, GRAD_X_LORA, "selection.amortized")
PLOT_CAPTIONS = {
    "breakdown-": "backward components per layer, stacked (median ms): dense vs CE-LoRA at each p",
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


SPEEDUP = CheckPlot(
    "speedup-", "the verdict against p per layer: G_y·W0's cost over dense's (its line 1.15·p), the layer's "
    "speed-up over its Amdahl bound (the device's line) and the kept-column product over p_eff·dense; every point "
    "is its verdict row's value and 95.5% interval, the dash its line", (COST_CHECK, AMDAHL_CHECK, KEPT_CHECK),
    x="p", panel="layer", series=("r0", "mode"), split=("model", "N", "r", "dtype", "device"))


def plots(rows, out_dir: str, machine: dict | None = None) -> list[str]:
    """Per layer group (model, N, r, dtype, device): the breakdown; then the rooflines."""
    paths = []
    for (model, N, r, dtype, device), cases in sorted(layer_groups(rows).items()):
        tag = f"{model}-N{N}-r{r}-{dtype}-{device}"
        title = f"{model}, N={N}, r={r}, {dtype}, {device}"
        paths.append(breakdown(cases, f"backward components: {title}", os.path.join(out_dir, f"breakdown-{tag}.png")))
    return paths + rooflines(rows, out_dir, machine)
