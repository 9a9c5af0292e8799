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

from celora_bench import intervals  # noqa: E402
from celora_bench.models import layer_order  # noqa: E402  (plot order: as in a block; "q_proj+o_proj" as q)
from celora_bench.report import by_case, case_label  # noqa: E402
from celora_bench.results import Run  # noqa: E402

BWD = ("bwd.grad_x_frozen", "bwd.grad_h", "bwd.grad_B", "bwd.grad_A", "bwd.grad_x_lora", "selection.amortized")


def save(fig, out_dir: str, name: str, rect=None) -> str:
    """Writes a figure as out_dir/name at 120 dpi and closes it; returns the path.

    rect: the (left, bottom, right, top) part of the figure tight_layout may fill (room for a figure legend).
    """
    path = os.path.join(out_dir, name)
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _groups(run: Run):
    """(model, N, r, dtype, device) -> {case: {component: Row}} for layer-level cases (a timed G_y·W0 and
    fwd+bwd; model-step's whole-model rows have neither timed)."""
    out = defaultdict(dict)
    for case, comps in by_case(run.rows).items():
        if case.provider in ("dense", "celora") and "bwd.grad_x_frozen" in comps and "fwd+bwd" in comps:
            out[(case.model, case.tokens, case.rank, case.dtype, case.device)][case] = comps
    return out


def _order(layer: str) -> int:
    return layer_order(layer)


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


def _samples(row) -> tuple[float, ...]:
    """Kernel-time samples where the row has them (CUDA), else wall-time samples, as the verdict judges."""
    return tuple(row.extra.get("kernel_samples") or row.samples)


def _series(row) -> intervals.Series:
    return row.kernel_series() or row.series


def speedup(cases: dict, title: str, path: str) -> str:
    """Speed-up against p per layer, each point with its 95% interval (bootstrap over the paired rounds)."""
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
        share = np.median(_samples(d["bwd.grad_x_frozen"])) / np.median(_samples(d["fwd+bwd"]))
        ax.plot(ps, 1 / ps, "k--", lw=1, label="ideal 1/p (G_y·W0)")
        ax.plot(ps, 1 / (1 - share + share * ps), "k:", lw=1, label=f"Amdahl, share {share:.2f}")
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
    fig.legend(h, ["ideal 1/p", "Amdahl bound (measured share)", "G_y·W0 component (95% interval)",
                   "layer fwd+bwd (95% interval)",
                   "square: double-LoRA r0>0; hollow: lean"], loc="lower center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title)
    return save(fig, *os.path.split(path), rect=(0, 0.6 / fig.get_figheight(), 1, 1))   # legend below


MARKERS = "osD^v<>pPX*hH"


def roofline_plot(rows, peaks, title: str, path: str) -> str | None:
    """Log-log roofline from the run's measured peaks: every timed component with analytic FLOPs and bytes
    as a point (colour: provider, marker: component), one panel per layer; FLOP-free components (a gather)
    sit on the bandwidth axis at their bytes/s instead."""
    from celora_bench import roofline

    pts = roofline.points(rows, peaks)
    if not pts:
        return None
    layers = sorted({r.case.layer for r, _ in pts}, key=_order)
    comps = sorted({r.component for r, _ in pts})
    provs = sorted({case_label(r.case) for r, _ in pts}, key=lambda s: (s != "dense", s))
    cols = min(2, len(layers))
    nrows = (len(layers) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.2 * cols, 4.6 * nrows), squeeze=False)
    ridge = roofline.ridge(peaks)
    xs = np.logspace(-1, 4, 200)
    for ax, layer in zip(axes.flat, layers):
        ax.plot(xs, np.minimum(peaks.flops_per_s, xs * peaks.bytes_per_s) / 1e9, "k-", lw=1.2)
        ax.axvline(ridge, color="grey", ls=":", lw=0.8)
        for r, p in pts:
            if r.case.layer != layer:
                continue
            color = f"C{provs.index(case_label(r.case)) % 10}"
            marker = MARKERS[comps.index(r.component) % len(MARKERS)]
            if p.flops:
                ax.loglog(p.intensity, p.flops_per_s / 1e9, marker, color=color, ms=6, alpha=0.85)
            else:                                  # a gather: its bytes/s against the bandwidth roof
                ax.loglog(0.15, p.bytes_per_s / 1e9 * 0.15, marker, color=color, ms=6, alpha=0.85)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP/byte; a gather: at the left edge, on the bandwidth roof)")
        ax.set_ylabel("GFLOP/s (2·m·n·k)")
        ax.set_title(layer, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(layers):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", ls="", color=f"C{i % 10}") for i in range(len(provs))]
    handles += [plt.Line2D([], [], marker=MARKERS[i % len(MARKERS)], ls="", color="grey") for i in range(len(comps))]
    fig.legend(handles, provs + comps, loc="lower center", ncol=4, fontsize=7, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"{title}: {peaks.flops_per_s / 1e9:.0f} GFLOP/s, {peaks.bytes_per_s / 1e9:.1f} GB/s measured")
    extra = (len(provs) + len(comps) + 3) // 4 * 0.22 + 0.3
    return save(fig, *os.path.split(path), rect=(0, extra / fig.get_figheight(), 1, 1))


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
        peaks = roofline_peaks(run)
        if peaks is not None:
            rows = [r for comps in cases.values() for r in comps.values()
                    if r.case.provider == "dense" or (r.case.svd_rank == 0 and not r.case.cache_rows)]
            got = roofline_plot(rows, peaks, f"roofline: {title}", os.path.join(out_dir, f"roofline-{tag}.png"))
            if got:
                paths.append(got)
    return paths


def roofline_peaks(run: Run):
    from celora_bench import roofline
    return roofline.peaks_of(run.machine_info)


def step_phases(rows, out_dir: str) -> list[str]:
    """model-step: per model and token count, each provider's step as forward | backward | optimizer (median ms)."""
    from suites.model_step import PROVIDERS

    groups = defaultdict(dict)
    for case, comps in by_case(rows).items():
        if all(c in comps and comps[c].time for c in ("fwd", "optimizer")) and (
                "fwd+bwd" in comps or "bwd" in comps):
            groups[(case.model, case.tokens)][case.provider] = comps
    if not groups:
        return []
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 3.2), squeeze=False)
    for ax, (model, tokens) in zip(axes.flat, sorted(groups)):
        provs = sorted(groups[(model, tokens)], key=lambda p: PROVIDERS.index(p) if p in PROVIDERS else 99)
        for yi, prov in enumerate(provs):
            left = 0.0
            comps = groups[(model, tokens)][prov]
            med = {n: comps[n].time.median * 1e3 for n in ("fwd", "fwd+bwd", "bwd", "optimizer") if n in comps}
            bwd = med["bwd"] if "bwd" in med else med["fwd+bwd"] - med["fwd"]     # older files timed bwd alone
            for ci, (phase, w) in enumerate((("fwd", med["fwd"]), ("bwd", bwd),
                                             ("optimizer", med["optimizer"]))):
                ax.barh(yi, w, left=left, color=f"C{ci}", label=phase if yi == 0 else None)
                left += w
            ax.text(left, yi, f" {left:.1f}", va="center", fontsize=8)
        ax.set_yticks(range(len(provs)), provs)
        ax.invert_yaxis()
        ax.set_xlabel("median ms per step (phases timed separately)")
        ax.set_title(f"{model}, {tokens} tokens", fontsize=10)
        ax.margins(x=0.15)
    h = [plt.Rectangle((0, 0), 1, 1, color=f"C{i}") for i in range(3)]
    fig.legend(h, ["forward", "backward", "optimizer"], loc="upper center", ncol=3, fontsize=8)
    return [save(fig, out_dir, "step-phases.png", rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))]
