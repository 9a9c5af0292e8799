"""approx-error's tables and plots: mean error and cosine per kind and setting, W0's singular-value spectrum
per module type, G_x error against p and against the index's age."""
from __future__ import annotations

import statistics
from collections import defaultdict

from celora_bench.cases import Row
from celora_bench.models import PROJECTIONS
from celora_bench.render.figures import save
from celora_bench.render.tables import Table
from core.config import balanced_rank
from suites.approx_error.checks import RANK, spectra
from suites.text_task import weights_label


def spectra_table(rows: list[Row]):
    """W0 spectrum per module type beside the G_x error it leaves, or None without spectrum rows."""
    sp = spectra(rows)
    if not sp:
        return None
    label = weights_label(next(r.case for r in rows if r.case.param("kind") == "spectrum"))
    r0 = sp[0]["r0"]
    t = Table(title=f"approx-error: W0 singular-value spectrum, {label}",
              caption="energy share = Σ_(i≤r) s_i² / Σ s_i², mean over blocks; G_x error at p=0.5, product "
                      "score, fresh index")
    for col in ("module", "m x n", "blocks", f"energy top {r0}", f"energy top {2 * r0}", "G_x err r0=0",
                f"G_x err r0={r0}", f"G_x err r0={2 * r0}", f"change r0=0→{r0}"):
        t.add_column(col, justify="left" if col == "module" else "right")

    def f(v):
        return "—" if v is None else f"{v:.4f}"
    for d in sp:
        t.add_row(d["module"], f"{d['m']}x{d['n']}", str(d["layers"]), f"{d['energy_r0']:.3f}",
                  f"{d['energy_2r0']:.3f}", f(d["err0"]), f(d["errb"]), f(d["err2"]),
                  f"{(d['errb'] / d['err0'] - 1) * 100:+.1f}%" if d["err0"] and d["errb"] else "—")
    return t

def summary_table(rows: list[Row]):
    rows = [r for r in rows if r.case.param("kind") != "spectrum"]
    label = weights_label(rows[0].case) if rows else ""
    t = Table(title=f"approx-error: mean over modules and layers (fresh index unless stated), {label}",
              caption="relative error ‖Ĝ − G‖/‖G‖ and cosine of G_x (exact LoRA part included), "
                      "or of G_A/G_B after a full backward")
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

    gx = [r for r in rows if r.case.param("kind") == "gx" and r.extra.get("staleness") == 0]
    paths = spectrum_plot(rows, out_dir)
    if not gx:
        return paths
    model = gx[0].case.model
    tag = "" if model == "tiny-byte" else f"-{model}"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    fig.suptitle(f"approx-error: {weights_label(gx[0].case)}", fontsize=10)
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
    return paths + [save(fig, out_dir, f"approx-error{tag}.png")]

def spectrum_plot(rows: list[Row], out_dir: str) -> list[str]:
    """Cumulative energy share of W0's singular values against rank, mean over blocks, per module type."""
    import matplotlib.pyplot as plt

    spec = [r for r in rows if r.case.param("kind") == "spectrum"]
    if not spec:
        return []
    case = spec[0].case
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mod in [m for m in PROJECTIONS if any(r.extra["module"] == m for r in spec)]:
        rs = [r for r in spec if r.extra["module"] == mod]
        ranks = rs[0].extra["ranks"]
        mean = [statistics.fmean(r.extra["energy"][i] for r in rs) for i in range(len(ranks))]
        ax.plot(ranks, mean, "o-", ms=3, label=f"{mod} {rs[0].extra['m']}x{rs[0].extra['n']}")
    for r0, ls in ((case.svd_rank, "--"), (2 * case.svd_rank, ":")):
        ax.axvline(r0, color="k", ls=ls, lw=0.8, label=f"r0={r0}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank r")
    ax.set_ylabel("energy share Σ_(i≤r) s_i² / Σ s_i²")
    ax.set_title(f"W0 spectra, mean over {len(spec) // max(1, len({r.extra['module'] for r in spec}))} blocks: "
                 f"{weights_label(case)}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    tag = "" if case.model == "tiny-byte" else f"-{case.model}"
    return [save(fig, out_dir, f"approx-error-spectrum{tag}.png")]


def tables(rows: list[Row]) -> list[Table]:
    return [t for t in (summary_table(rows), spectra_table(rows)) if t is not None]


def plots(rows: list[Row], out_dir: str, machine: dict | None = None) -> list[str]:
    return plot(rows, out_dir)
