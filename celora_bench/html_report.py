"""One self-contained HTML page of one or more runs: the answer first, then plots, tables, machine, command.

Reads only results files, like ``show`` and ``plot``. Nothing in the page is
fetched: the CSS is inline and the plots are PNGs embedded as data: URIs, so
the file opens offline and can be mailed as it is. Every string that comes
from a results file is HTML-escaped.

Per run and per suite, in this order:
    the question and the answer (verdict counts per check, the rows that did not pass),
    the plots (``celora_bench.plot.plot``: layer breakdowns, speed-up vs p, each suite's own),
    the tables (the suite's own rich tables, converted cell by cell; for backward-breakdown
    components × providers per layer), every verdict row,
then the machine fingerprint and the exact command. Several runs get a
side-by-side summary and verdict comparison on top.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import os
import shlex
import tempfile
from collections import Counter, defaultdict

from rich.table import Table
from rich.text import Text

from celora_bench import registry, report
from celora_bench.cases import Case, Row
from celora_bench.flops import CONVENTION
from celora_bench.models import PROJECTIONS as LAYER_ORDER  # layers in block order, as the plots have them
from celora_bench.results import Run
from celora_bench.suite import Check

STATUS_TEXT = {"PASS": "PASS", "FAIL": "FAIL", "NOISE": "within noise", "INFO": "INFO"}
STATUS_ORDER = ("PASS", "FAIL", "NOISE", "INFO")
LAUNCH_MARK = "⚑ launch-bound"

# What each suite exists to answer; a suite not named here is asked its DESCRIPTION.
QUESTIONS = {
    "backward-breakdown": "Is G_y·W0 (the frozen weight's input gradient) about half of a LoRA layer's "
                          "forward+backward, does CE-LoRA cut it to p×, and does the layer reach the "
                          "Amdahl bound that follows?",
    "model-step": "How much of a whole model's training step is G_y·W0, and how much faster is a step with "
                  "CE-LoRA than with dense LoRA and with HF peft?",
    "approx-error": "How far are CE-LoRA's approximate gradients from the exact ones, and do double-LoRA "
                    "(r0 > 0) and the product score make them closer?",
    "convergence": "Does fine-tuning with CE-LoRA reach LoRA's held-out loss, and what does each ablation change?",
}
PLOT_CAPTIONS = {   # file-name prefix written by celora_bench.plot / a suite's plot -> what it shows
    "breakdown-": "backward components per layer, stacked (median ms): dense vs CE-LoRA at each p",
    "speedup-": "speed-up vs p per layer: the G_y·W0 component and the whole layer, with ideal 1/p and "
                "the Amdahl bound from the measured dense share",
    "approx-error": "relative error of G_x against p, and against the index's age",
    "convergence": "loss curves, band = ±1 sd over seeds",
    "step-phases": "one training step per provider: forward, backward and optimizer, median ms",
    "roofline-": "roofline from the run's calibrated peaks: each component of dense LoRA and of CE-LoRA "
                 "(r0 = 0, lean) at its arithmetic intensity; the distance below the roof is 1 - SOL",
}
HEADLINES = {      # the verdict rows that answer the question in one look
    "backward-breakdown": lambda c: c.scope.startswith("whole block"),
    "model-step": lambda c: c.check.startswith("2.") and c.metric.startswith("measured"),
    "convergence": lambda c: c.check.startswith("1."),
}
TABLE_FUNCS = ("summary_table", "accuracy_table", "spectra_table")   # suite functions rows -> rich Table

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1b1f24;
background:#f6f7f9}
main{max-width:1360px;margin:0 auto;padding:18px 28px 60px}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:20px;margin:34px 0 8px;border-bottom:2px solid #d0d7de;
padding-bottom:4px}h3{font-size:16px;margin:22px 0 6px}h4{font-size:14px;margin:14px 0 4px}
.meta,.caption,.note{color:#57606a;font-size:12.5px}.question{font-size:15px;font-style:italic;margin:6px 0}
section.run{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:6px 22px 18px;margin:22px 0}
table{border-collapse:collapse;margin:6px 0 4px;font-size:12.5px;background:#fff}
th,td{border:1px solid #d8dee4;padding:3px 7px;vertical-align:top}th{background:#eef1f4;text-align:left}
tr:nth-child(even) td{background:#fafbfc}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.c,th.c{text-align:center}.tablecap{font-weight:600;font-size:13px;margin-top:12px}
.PASS{color:#116329;font-weight:700}.FAIL{color:#b42318;font-weight:700}.NOISE{color:#9a6700;font-weight:700}
.INFO{color:#0969da}.PASS,.FAIL,.NOISE,.INFO{white-space:nowrap}
.counts span{display:inline-block;margin-right:14px;font-size:15px}
.badge{display:inline-block;font-size:11px;padding:0 5px;border-radius:8px;background:#fff1c2;color:#7a4f00;
border:1px solid #e3c46b;white-space:nowrap}.iv{color:#57606a;font-size:11.5px;white-space:nowrap}
.cell{font-size:12px}.cell small{color:#57606a;display:block;white-space:nowrap;font-size:11px}
figure{margin:10px 0 18px}
figure img{max-width:100%;border:1px solid #d8dee4;border-radius:4px;background:#fff}
figcaption{color:#57606a;font-size:12.5px}pre{background:#f0f2f4;padding:8px 10px;border-radius:6px;
white-space:pre-wrap;word-break:break-all}details{margin:6px 0}summary{cursor:pointer;font-weight:600}
nav a{margin-right:14px}.scroll{overflow-x:auto}.err{color:#b42318}
"""


def esc(v) -> str:
    """HTML-escaped text of anything (None is an em dash)."""
    return "—" if v is None else html.escape(str(v), quote=True)


def page(title: str, body: str) -> str:
    """A complete page: doctype, charset, title, the inline CSS."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
            f"</body>\n</html>\n")


# ---- rich tables -> HTML ------------------------------------------------------------------

def plain(cell) -> str:
    """The text a rich cell shows: markup strings are parsed the way rich renders them."""
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        try:
            return Text.from_markup(cell).plain
        except Exception:        # not valid markup: rich would fail too; show it verbatim
            return cell
    return str(cell)


def rich_table(t: Table) -> str:
    """Any rich Table as an HTML table: title, header, every cell as the terminal shows it, caption."""
    cols = t.columns
    cells = [[plain(c) for c in col.cells] for col in cols]
    nrows = max((len(c) for c in cells), default=0)
    cls = ['num' if col.justify == "right" else "" for col in cols]
    out = []
    if t.title:
        out.append(f'<div class="tablecap">{esc(plain(t.title))}</div>')
    out.append('<div class="scroll"><table><thead><tr>'
               + "".join(f'<th class="{c}">{esc(plain(col.header))}</th>' for col, c in zip(cols, cls))
               + "</tr></thead><tbody>")
    for i in range(nrows):
        out.append("<tr>" + "".join(f'<td class="{c}">{esc(col[i] if i < len(col) else "")}</td>'
                                    for col, c in zip(cells, cls)) + "</tr>")
    out.append("</tbody></table></div>")
    if t.caption:
        out.append(f'<div class="caption">{esc(plain(t.caption))}</div>')
    return "\n".join(out)


# ---- the verdict -----------------------------------------------------------------------------

def value_text(c: Check) -> str:
    """The value as ``show`` prints it (4 significant digits)."""
    return "—" if c.value is None else f"{c.value:.4g}"


def interval_text(c: Check) -> str:
    lo, hi = c.lo, c.hi
    if c.kind != "measured" or (lo is not None and lo == hi):
        return ""
    if lo is None and hi is None:
        return "[no interval]"
    return f"[{'—' if lo is None else f'{lo:.4g}'}–{'—' if hi is None else f'{hi:.4g}'}]"


def status_html(status: str) -> str:
    return f'<span class="{esc(status)}">{esc(STATUS_TEXT.get(status, status))}</span>'


def counts(checks: list[Check]) -> dict[str, int]:
    """Checks per status, and how many are timed (kind "measured")."""
    n = Counter(c.status for c in checks)
    out = {s: n.get(s, 0) for s in STATUS_ORDER}
    out["measured"] = sum(c.kind == "measured" for c in checks)
    out["total"] = len(checks)
    return out


def counts_html(checks: list[Check]) -> str:
    """The summary as ``show`` words it: timed checks counted apart from exact ones."""
    from celora_bench.report import verdict_counts
    return f'<div class="counts"><span class="note">{esc(verdict_counts(checks))}</span></div>'


def _value_cell(c: Check) -> str:
    iv = interval_text(c)
    return esc(value_text(c)) + (f' <span class="iv">{esc(iv)}</span>' if iv else "")


def answer_html(checks: list[Check]) -> str:
    """Per check: its statuses and the range of its values; then each row that did not pass."""
    groups: dict[str, list[Check]] = defaultdict(list)
    for c in checks:
        groups[c.check].append(c)
    out = ['<div class="tablecap">per check and metric</div><table><thead><tr><th>check</th><th>metric</th>'
           + "".join(f'<th class="num">{status_html(s)}</th>' for s in STATUS_ORDER)
           + '<th class="num">values (min – max)</th></tr></thead><tbody>']
    for name, cs in groups.items():
        metrics = list(dict.fromkeys(c.metric for c in cs))
        for metric in metrics:
            ms = [c for c in cs if c.metric == metric]
            n = Counter(c.status for c in ms)
            vals = [c.value for c in ms if c.value is not None]
            rng = "—" if not vals else (f"{min(vals):.4g}" if min(vals) == max(vals)
                                        else f"{min(vals):.4g} – {max(vals):.4g}")
            out.append(f"<tr><td>{esc(name)}</td><td>{esc(metric)}</td>"
                       + "".join(f'<td class="num">{n.get(s, 0) or ""}</td>' for s in STATUS_ORDER)
                       + f'<td class="num">{esc(rng)}</td></tr>')
    out.append("</tbody></table>")
    failed = [c for c in checks if c.status == "FAIL"]
    noise = [c for c in checks if c.status == "NOISE"]
    if failed:
        out.append(f"<h4>failed ({len(failed)})</h4>")
        out.append(verdict_html(failed))
    if noise:
        out.append(f"<details><summary>within noise: the interval straddles the line ({len(noise)})</summary>"
                   f"{verdict_html(noise)}</details>")
    return "\n".join(out)


def verdict_html(checks: list[Check]) -> str:
    """Every check as one row: value with its interval, target, status ("within noise" for NOISE), kind."""
    out = ['<div class="scroll"><table><thead><tr><th>check</th><th>scope</th><th>metric</th>'
           '<th class="num">value [interval]</th><th>target</th><th>status</th><th>kind</th>'
           '<th class="num">rounds</th><th>detail</th></tr></thead><tbody>']
    for c in checks:
        out.append(f"<tr><td>{esc(c.check)}</td><td>{esc(c.scope)}</td><td>{esc(c.metric)}</td>"
                   f'<td class="num">{_value_cell(c)}</td><td>{esc(c.target)}</td><td>{status_html(c.status)}</td>'
                   f'<td>{esc(c.kind)}</td><td class="num">{c.rounds or ""}</td><td>{esc(c.detail)}</td></tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)


# ---- plots -----------------------------------------------------------------------------------

def _caption(name: str) -> str:
    base = os.path.basename(name)
    for prefix, text in PLOT_CAPTIONS.items():
        if base.startswith(prefix):
            return f"{text} ({base})"
    return base


def plots_html(run: Run, suite: str, rows: list[Row]) -> str:
    """The suite's plots, as ``celora-bench plot`` draws them, as inline PNGs.

    backward-breakdown: the layer breakdown and speed-up plots; another suite: its own ``plot``;
    model-step (no plot of its own): the step's phases per provider.
    """
    from celora_bench import plot as plots  # matplotlib: only when a page with plots is made

    mod = _module(suite)
    with tempfile.TemporaryDirectory(prefix="celora-report-") as tmp:
        try:
            if suite == "backward-breakdown":
                paths = plots.plot(dataclasses.replace(run, rows=rows, writer=False), tmp)
            elif hasattr(mod, "plot"):
                paths = mod.plot(rows, tmp)
            elif suite == "model-step":
                paths = plots.step_phases(rows, tmp)
            else:
                paths = []
        except Exception as e:     # a plot that cannot be drawn must not cost the rest of the page
            return f'<p class="err">plots could not be drawn: {esc(type(e).__name__)}: {esc(e)}</p>'
        figs = []
        for p in paths:
            with open(p, "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            cap = _caption(p)
            figs.append(f'<figure><img alt="{esc(cap)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{esc(cap)}</figcaption></figure>")
    return "\n".join(figs) if figs else '<p class="note">no plots for these rows</p>'


# ---- tables ----------------------------------------------------------------------------------

def launch_bound(row: Row) -> bool:
    return bool(row.extra.get("launch_bound"))


def _component_cell(r: Row | None) -> str:
    if r is None:
        return '<td class="num">—</td>'
    lines = []
    t = r.time
    if t is not None:
        iqr = f"{t.iqr / t.median * 100:.1f}" if t.median else "—"
        lines.append(f"<b>{t.median * 1e3:.3f}</b>{'*' if t.spread else ''} <small>IQR {iqr}%, n={t.count}</small>")
    if r.extra.get("kernel_s") is not None:
        lines.append(f"<small>kernel {float(r.extra['kernel_s']) * 1e3:.3f} ms</small>")
    if r.flops_analytic is not None or r.flops_counted is not None:
        fa = "—" if r.flops_analytic is None else f"{r.flops_analytic / 1e9:.3f}"
        fc = "—" if r.flops_counted is None else f"{r.flops_counted / 1e9:.3f}"
        lines.append(f"<small>{fa} / {fc} GF</small>")
    if r.mem_bytes is not None:
        lines.append(f"<small>{r.mem_bytes / 2**20:.2f} MiB</small>")
    if launch_bound(r):
        lines.append(f'<span class="badge">{LAUNCH_MARK}</span>')
    return f'<td class="num cell">{"".join(lines) or "—"}</td>'


def _case_order(c: Case):
    return (c.provider != "dense", c.provider != "peft", -c.keep_ratio, c.svd_rank, c.cache_rows, c.provider)


def components_tables(rows: list[Row]) -> str:
    """Per layer: components × providers, each cell time (median, IQR, n), FLOPs analytic/counted, memory."""
    cases = report.by_case(rows)
    layers: dict[tuple, list[Case]] = defaultdict(list)
    for c in cases:
        layers[(c.model, c.tokens, c.rank, c.dtype, c.device, c.layer)].append(c)
    out = []
    for i, key in enumerate(sorted(layers, key=lambda k: (k[:5], LAYER_ORDER.index(k[5]) if k[5] in LAYER_ORDER else 99,
                                                           k[5]))):
        cs = sorted(layers[key], key=_case_order)
        comps = list(dict.fromkeys(name for c in cs for name in cases[c]))
        model, tokens, rank, dtype, device, layer = key
        c0 = cs[0]
        head = f"{layer} {c0.m}x{c0.n} · {model} · N={tokens} · r={rank} · {dtype} · {device}"
        body = ['<div class="scroll"><table><thead><tr><th>component</th>'
                + "".join(f'<th class="num">{esc(report.case_label(c))}</th>' for c in cs) + "</tr></thead><tbody>"]
        for name in comps:
            body.append(f"<tr><td>{esc(name)}</td>" + "".join(_component_cell(cases[c].get(name)) for c in cs)
                        + "</tr>")
        body.append("</tbody></table></div>")
        out.append(f'<details{" open" if i == 0 else ""}><summary>{esc(head)}</summary>' + "\n".join(body)
                   + "</details>")
    cap = (f"each cell: median ms over the raw samples (* = IQR/median > 10%), IQR % and n samples; GFLOP "
           f"analytic / counted ({CONVENTION}); memory MiB (what each memory row measures: "
           f"celora-bench show --detail); {LAUNCH_MARK}: the device time is launch overhead, not the kernel")
    return f'<div class="caption">{esc(cap)}</div>' + "\n".join(out) if out else ""


def case_details(rows: list[Row]) -> str:
    """Every case's component table, as ``show --detail`` prints it, folded."""
    out = []
    for case, comps in sorted(report.by_case(rows).items(), key=lambda kv: kv[0].id):
        out.append(f"<details><summary>{esc(case.id)}</summary>{rich_table(report.detail_table(case, comps))}"
                   "</details>")
    return "\n".join(out)


def suite_tables(mod, suite: str, rows: list[Row]) -> list[str]:
    """The suite's own rich tables (as ``show`` prints them), or the generic per-case table."""
    out = []
    for name in TABLE_FUNCS:
        fn = getattr(mod, name, None) if mod is not None else None
        if fn is None:
            continue
        try:
            t = fn(rows)
        except Exception as e:
            out.append(f'<p class="err">{esc(name)} could not be drawn: {esc(type(e).__name__)}: {esc(e)}</p>')
            continue
        if t is not None:
            out.append(rich_table(t))
    if not out:
        out.append(rich_table(report.summary_table(f"{suite}: per case", rows)))
    return out


# ---- a suite's section -------------------------------------------------------------------------

def checks_for(run: Run, suite: str) -> list[Check]:
    try:
        return report.checks_of(run, suite)
    except registry.UnknownSuite:
        return []


def _module(suite: str):
    try:
        return registry.get(suite)
    except registry.UnknownSuite:
        return None


def suite_html(run: Run, suite: str, anchor: str) -> str:
    rows = [r for r in run.rows if r.case.suite == suite]
    out = [f'<h2 id="{esc(anchor)}">{esc(suite)}</h2>']
    if not rows:
        return out[0] + '<p class="note">no rows measured</p>'
    mod = _module(suite)
    question = QUESTIONS.get(suite) or getattr(mod, "DESCRIPTION", "")
    if question:
        out.append(f'<p class="question">{esc(question)}</p>')
    if mod is None:
        out.append(f'<p class="err">suite {esc(suite)!s} is not registered in this celora-bench: no verdict</p>')
    checks = checks_for(run, suite)
    out.append("<h3>the answer</h3>")
    out.append(counts_html(checks))
    lb = [r for r in rows if launch_bound(r)]
    if lb:
        out.append(f'<p class="note"><span class="badge">{LAUNCH_MARK}</span> {len(lb)} of {len(rows)} rows: '
                   f"their device time is launch overhead, not kernel time; marked in the tables below</p>")
    head = [c for c in checks if HEADLINES.get(suite, lambda c: False)(c)]
    if head:
        out.append('<div class="tablecap">headline</div>' + verdict_html(head))
    if checks:
        out.append(answer_html(checks))
    out.append("<h3>plots</h3>")
    out.append(plots_html(run, suite, rows))
    out.append("<h3>tables</h3>")
    out += suite_tables(mod, suite, rows)
    if suite == "backward-breakdown":
        out.append("<h4>components × providers, per layer</h4>")
        out.append(components_tables(rows))
        roof = report.roofline_table("speed of light", rows, run.machine_info)
        if roof is not None and roof.row_count:
            out.append("<h4>speed of light: every component against the measured roofs</h4>")
            out.append(rich_table(roof))
    elif suite == "model-step":
        out.append("<h4>every case's components</h4>")
        out.append(case_details(rows))
    if checks:
        out.append(f"<details><summary>every verdict row ({len(checks)})</summary>{verdict_html(checks)}</details>")
    return "\n".join(out)


# ---- machine, command, run ---------------------------------------------------------------------

def _flat(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        elif isinstance(v, (list, tuple)):
            yield f"{prefix}{k}", ", ".join(str(x) for x in v)
        else:
            yield f"{prefix}{k}", v


def kv_table(d: dict) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _flat(d))
    return f"<table><tbody>{rows}</tbody></table>"


def command(run: Run) -> str:
    argv = run.run.get("argv")
    if not argv:
        return "(not recorded)"
    return "celora-bench " + shlex.join(str(a) for a in argv)


def suites_of(run: Run) -> list[str]:
    listed = list(run.run.get("suites") or [])
    return listed + sorted({r.case.suite for r in run.rows} - set(listed))


def run_label(run: Run) -> str:
    opts = run.run.get("options") or {}
    gpu = (run.machine_info.get("gpu") or {}).get("name") if isinstance(run.machine_info.get("gpu"), dict) else None
    where = gpu if opts.get("device") == "cuda" and gpu else run.machine_info.get("cpu")
    return f"{os.path.basename(run.path)} — {opts.get('device', '?')}, {where or '?'}"


def run_html(run: Run, anchor: str) -> str:
    ci = run.commit_info
    commit = f"{(ci.get('id') or '?')[:10]}{' (dirty)' if ci.get('dirty') else ''}"
    out = [f'<section class="run" id="{esc(anchor)}"><h1>{esc(run_label(run))}</h1>',
           f'<div class="meta">{esc(run.path)} · status {esc(run.status)} · {esc(run.datetime)} · commit '
           f"{esc(commit)} · {len(run.rows)} rows</div>"]
    suites = suites_of(run)
    if len(suites) > 1:
        out.append("<nav>" + "".join(f'<a href="#{esc(anchor)}-{esc(s)}">{esc(s)}</a>' for s in suites) + "</nav>")
    for s in suites:
        out.append(suite_html(run, s, f"{anchor}-{s}"))
    if run.errors:
        out.append("<h2>errors</h2><ul>" + "".join(f"<li><b>{esc(e.get('case_id'))}</b>: {esc(e.get('error'))}</li>"
                                                   for e in run.errors) + "</ul>")
    out.append("<h2>machine</h2>")
    out.append(kv_table(run.machine_info))
    out.append("<h3>commit</h3>" + kv_table(ci))
    out.append("<h3>command</h3>")
    out.append(f"<pre>{esc(command(run))}</pre>")
    opts = {k: v for k, v in run.run.items() if k != "argv"}
    out.append(kv_table(opts))
    out.append("</section>")
    return "\n".join(out)


def _run_verdicts(run: Run) -> list[tuple[str, Check]]:
    return [(s, c) for s in suites_of(run) for c in checks_for(run, s)]


def _group_cell(cs: list[Check]) -> str:
    if not cs:
        return "<td>—</td>"
    n = Counter(c.status for c in cs)
    vals = [c.value for c in cs if c.value is not None]
    rng = "" if not vals else (f"{min(vals):.4g}" if min(vals) == max(vals) else f"{min(vals):.4g} – {max(vals):.4g}")
    st = " ".join(f"{status_html(s)} {n[s]}" for s in STATUS_ORDER if n.get(s))
    return f'<td class="num">{esc(rng)}<br><small>{st}</small></td>'


def side_by_side(runs: list[Run], anchors: list[str]) -> str:
    """Several runs: one line each; each check and metric across the runs; the rows with the same scope."""
    names = [f"#{i + 1} {os.path.basename(r.path)}" for i, r in enumerate(runs)]
    out = ["<h2>runs side by side</h2>", "<table><thead><tr><th>run</th><th>suites</th><th>device, dtype, mode</th>"
           "<th>machine</th><th>commit</th><th>status</th>"
           + "".join(f'<th class="num">{status_html(s)}</th>' for s in STATUS_ORDER)
           + '<th class="num">measured</th></tr></thead><tbody>']
    verdicts = [_run_verdicts(r) for r in runs]
    for run, a, name, v in zip(runs, anchors, names, verdicts):
        n = counts([c for _, c in v])
        o = run.run.get("options") or {}
        gpu = run.machine_info.get("gpu")
        where = f"{run.machine_info.get('cpu')}" + (f"; {gpu.get('name')}" if isinstance(gpu, dict) else "")
        out.append(f'<tr><td><a href="#{esc(a)}">{esc(name)}</a></td><td>{esc(", ".join(suites_of(run)))}</td>'
                   f"<td>{esc(o.get('device'))}, {esc(o.get('dtype'))}, {esc(o.get('mode'))}</td><td>{esc(where)}</td>"
                   f"<td>{esc((run.commit_info.get('id') or '?')[:10])}</td><td>{esc(run.status)}</td>"
                   + "".join(f'<td class="num">{n[s]}</td>' for s in STATUS_ORDER)
                   + f'<td class="num">{n["measured"]} of {n["total"]}</td></tr>')
    out.append("</tbody></table>")
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    groups = list(dict.fromkeys((s, c.check, c.metric) for v in verdicts for s, c in v))
    out.append("<h3>each check across the runs</h3>")
    out.append('<div class="caption">values: min – max over the check\'s scopes; then the statuses</div>')
    body = [f'<div class="scroll"><table><thead><tr><th>suite</th><th>check</th><th>metric</th>{head}</tr></thead>'
            "<tbody>"]
    for g in groups:
        body.append("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in g)
                    + "".join(_group_cell([c for s, c in v if (s, c.check, c.metric) == g]) for v in verdicts)
                    + "</tr>")
    body.append("</tbody></table></div>")
    out += body
    by_key = [{(s, c.check, c.scope, c.metric): c for s, c in v} for v in verdicts]
    shared = [k for k in dict.fromkeys(k for d in by_key for k in d) if sum(k in d for d in by_key) > 1]
    if shared:
        rows = [f'<div class="scroll"><table><thead><tr><th>suite</th><th>check</th><th>scope</th><th>metric</th>'
                f"{head}</tr></thead><tbody>"]
        for k in shared:
            cells = "".join("<td>—</td>" if k not in d else
                            f'<td class="num">{_value_cell(d[k])} {status_html(d[k].status)}</td>' for d in by_key)
            rows.append("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in k) + cells + "</tr>")
        rows.append("</tbody></table></div>")
        out.append(f"<details><summary>the verdict rows with the same scope in several runs ({len(shared)})</summary>"
                   + "\n".join(rows) + "</details>")
    return "\n".join(out)


def render(runs: list[Run]) -> str:
    """The whole page for one or more runs."""
    anchors = [f"run-{i + 1}" for i in range(len(runs))]
    title = "celora-bench report: " + ", ".join(os.path.basename(r.path) for r in runs)
    parts = []
    if len(runs) > 1:
        parts.append(f"<h1>{esc(title)}</h1>")
        parts.append(side_by_side(runs, anchors))
    parts += [run_html(r, a) for r, a in zip(runs, anchors)]
    parts.append(f'<p class="note">written by celora-bench from the results file(s) only; {esc(CONVENTION)}</p>')
    return page(title, "\n".join(parts))


def write(runs: list[Run], out: str) -> str:
    """Writes the page to out (folders made as needed); returns out."""
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    text = render(runs)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    return out
