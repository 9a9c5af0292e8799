"""PNG figures of a run, read from the results file only: each suite's own (its `plots`, given the run's
rows and machine), its figures of checks (its CHECK_PLOTS, drawn here from the verdict `show` prints, so every
point is a verdict row's value and interval), and a roofline of any rows against the run's calibrated peaks."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from celora_bench import intervals, registry, roofline  # noqa: E402
from celora_bench.models import layer_order  # noqa: E402
from celora_bench.results import Run  # noqa: E402
from celora_bench.suite import Check, CheckPlot  # noqa: E402


def save(fig, out_dir: str, name: str, rect=None) -> str:
    """Writes a figure as out_dir/name at 120 dpi and closes it; returns the path.

    rect: the (left, bottom, right, top) part of the figure tight_layout may fill (room for a figure legend).
    """
    path = os.path.join(out_dir, name)
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


MARKERS = "osD^v<>pPX*hH"


def roofline_plot(rows, peaks, title: str, path: str) -> str | None:
    """Log-log roofline from the run's measured peaks: every timed component with analytic FLOPs and bytes
    as a point (colour: provider, marker: component), one panel per layer; FLOP-free components (a gather)
    sit on the bandwidth axis at their bytes/s instead."""

    pts = roofline.points(rows, peaks)
    if not pts:
        return None
    layers = sorted({r.case.layer for r, _ in pts}, key=layer_order)
    comps = sorted({r.component for r, _ in pts})
    provs = [c.label for c in sorted({r.case for r, _ in pts}, key=lambda c: c.order)]
    provs = list(dict.fromkeys(provs))
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
            color = f"C{provs.index(r.case.label) % 10}"
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


MARKS = "osD^v<>p"


def check_plot(spec: CheckPlot, checks: list[Check], out_dir: str) -> list[str]:
    """The figures spec declares, from these checks alone: each point a check's value with its interval (an
    error bar) and a dash at its line; one marker and colour per value of the spec's series labels, offset a
    little along x so that points at one x stay apart."""
    pts = [c for c in checks if c.check in spec.checks and c.value is not None
           and spec.x in dict(c.labels) and spec.panel in dict(c.labels)]
    files: dict[tuple, list[Check]] = {}
    for c in pts:
        files.setdefault(tuple(dict(c.labels).get(k, "") for k in spec.split), []).append(c)
    paths = []
    for key, cs in files.items():
        labs = [dict(c.labels) for c in cs]
        panels = list(dict.fromkeys(lab[spec.panel] for lab in labs))
        series = list(dict.fromkeys(tuple(lab.get(k, "") for k in spec.series) for lab in labs))
        fig, axes = plt.subplots(len(spec.checks), len(panels), figsize=(3.4 * len(panels), 3.0 * len(spec.checks)),
                                 squeeze=False, sharex=True)
        for c, lab in zip(cs, labs):
            ax = axes[spec.checks.index(c.check)][panels.index(lab[spec.panel])]
            si = series.index(tuple(lab.get(k, "") for k in spec.series))
            x = float(lab[spec.x]) + 0.012 * (si - (len(series) - 1) / 2)
            err = [[0.0], [0.0]] if c.lo is None else [[c.value - c.lo], [c.hi - c.value]]
            ax.errorbar(x, c.value, yerr=err, fmt=MARKS[si % len(MARKS)], color=f"C{si % 10}", capsize=2,
                        elinewidth=0.8, ms=5)
            if c.line is not None:
                ax.plot([x - 0.02, x + 0.02], [c.line, c.line], "k-", lw=1.2)
        for i, cid in enumerate(spec.checks):
            for j, panel in enumerate(panels):
                ax = axes[i][j]
                ax.grid(alpha=0.3)
                ax.set_title(panel if i == 0 else "", fontsize=9)
                ax.set_xlabel(spec.x if i == len(spec.checks) - 1 else "")
            axes[i][0].set_ylabel(cid.title, fontsize=8)
        handles = [plt.Line2D([], [], marker=MARKS[i % len(MARKS)], ls="", color=f"C{i % 10}")
                   for i in range(len(series))] + [plt.Line2D([], [], color="k")]
        names = [" ".join(f"{k}={v}" for k, v in zip(spec.series, s)) for s in series] + ["the check's line"]
        fig.legend(handles, names, loc="lower center", ncol=min(5, len(names)), fontsize=8,
                   bbox_to_anchor=(0.5, 0.0))
        fig.suptitle(", ".join(f"{k} {v}" for k, v in zip(spec.split, key)))
        name = spec.prefix + "-".join(v for v in key if v) + ".png"
        paths.append(save(fig, out_dir, name, rect=(0, 0.5 / fig.get_figheight(), 1, 1)))
    return paths


def plot(run: Run, out_dir: str) -> list[str]:
    """Each registered suite's own plots of its rows, then its figures of checks; returns the PNG paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for suite in sorted({r.case.suite for r in run.rows} & set(registry.SUITES)):
        s = registry.get(suite)
        with intervals.run_effect(run.machine_info.get("run_sd", 0.0)):
            paths += s.plots([r for r in run.rows if r.case.suite == suite], out_dir, run.machine_info)
        checks = registry.checks_of(run, suite) if s.CHECK_PLOTS else []     # the verdict `show` prints
        for spec in s.CHECK_PLOTS:
            paths += check_plot(spec, checks, out_dir)
    return paths


def caption(path: str, suite: str) -> str:
    """What a plot file shows: its suite's caption for the file-name prefix."""
    base = os.path.basename(path)
    s = registry.get(suite) if suite in registry.SUITES else None
    known = {**s.PLOT_CAPTIONS, **{p.prefix: p.caption for p in s.CHECK_PLOTS}} if s else {}
    for prefix, text in known.items():
        if base.startswith(prefix):
            return f"{text} ({base})"
    return base
