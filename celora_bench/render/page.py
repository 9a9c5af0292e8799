"""`celora-bench report`: one self-contained HTML page of one or more runs, the answer first.

Reads only results files, like `show` and `plot`. Nothing in the page is fetched: the CSS is inline and
the plots are PNGs embedded as data: URIs, so the file opens offline and can be mailed as it is.

Per run and per suite, in this order: the question and the answer (verdict counts, headline rows, per
check and metric, the rows that did not pass), the plots (celora_bench.render.figures), the tables (the
suite's own; components × providers per layer; speed of light; every case's components, folded), every
verdict row; then the machine, the commit and the exact command. Several runs get a side-by-side summary
and verdict comparison on top.
"""
from __future__ import annotations

import base64
import dataclasses
import os
import tempfile

from celora_bench.flops import CONVENTION
from celora_bench.render import figures
from celora_bench.render.html import (
    answer_html,
    counts,
    counts_html,
    esc,
    page,
    status_html,
    table_html,
    value_cell,
    value_range,
    verdict_html,
)
from celora_bench.render.tables import GRID_CAPTION, LAUNCH_MARK
from celora_bench.render.view import STATUS_ORDER, RunView, Section, build, gpu_name
from celora_bench.results import Run


def plots_html(run: Run, s: Section) -> str:
    """The section's plots, as `celora-bench plot` draws them, as inline PNGs with captions."""
    with tempfile.TemporaryDirectory(prefix="celora-report-") as tmp:
        try:
            paths = figures.plot(dataclasses.replace(run, rows=list(s.rows), writer=False), tmp)
        except Exception as e:     # a plot that cannot be drawn must not cost the rest of the page
            return f'<p class="err">plots could not be drawn: {esc(type(e).__name__)}: {esc(e)}</p>'
        figs = []
        for p in paths:
            with open(p, "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            cap = figures.caption(p, s.suite)
            figs.append(f'<figure><img alt="{esc(cap)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{esc(cap)}</figcaption></figure>")
    return "\n".join(figs) if figs else '<p class="note">no plots for these rows</p>'


def _folded(tables, first_open: bool = False) -> str:
    return "\n".join(f'<details{" open" if first_open and i == 0 else ""}><summary>{esc(t.title)}</summary>'
                     f"{table_html(dataclasses.replace(t, title=''), caption=False)}</details>"
                     for i, t in enumerate(tables))


def section_html(run: Run, s: Section, anchor: str) -> str:
    out = [f'<h2 id="{esc(anchor)}">{esc(s.suite)}</h2>']
    if not s.rows:
        return out[0] + '<p class="note">no rows measured</p>'
    if s.question:
        out.append(f'<p class="question">{esc(s.question)}</p>')
    if not s.known:
        out.append(f'<p class="err">suite {esc(s.suite)} is not registered in this celora-bench: no verdict</p>')
    checks = list(s.checks)
    out += ["<h3>the answer</h3>", counts_html(checks)]
    if s.launch_bound:
        out.append(f'<p class="note"><span class="badge">{LAUNCH_MARK}</span> {s.launch_bound} of {len(s.rows)} '
                   f"rows: their device time is launch overhead, not kernel time; marked in the tables below</p>")
    if s.headline:
        out.append('<div class="tablecap">headline</div>' + verdict_html(list(s.headline)))
    if checks:
        out.append(answer_html(checks))
    out += ["<h3>plots</h3>", plots_html(run, s), "<h3>tables</h3>"]
    out += [table_html(t) for t in s.tables]
    if s.grids:
        out.append("<h4>components × providers, per layer</h4>")
        out.append(f'<div class="caption">{esc(GRID_CAPTION)}</div>' + _folded(s.grids, first_open=True))
    if s.roofline is not None:
        out.append("<h4>speed of light: every component against the measured roofs</h4>")
        out.append(table_html(s.roofline))
    if s.details:
        out.append("<h4>every case's components</h4>")
        out.append(_folded(s.details))
    if checks:
        out.append(f"<details><summary>every verdict row ({len(checks)})</summary>{verdict_html(checks)}</details>")
    return "\n".join(out)


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


def run_html(run: Run, v: RunView, anchor: str) -> str:
    out = [f'<section class="run" id="{esc(anchor)}"><h1>{esc(v.label)}</h1>',
           f'<div class="meta">{esc(v.path)} · status {esc(v.status)} · {esc(v.datetime)} · commit '
           f"{esc(v.commit)} · {len(run.rows)} rows</div>"]
    if len(v.sections) > 1:
        out.append("<nav>" + "".join(f'<a href="#{esc(anchor)}-{esc(s.suite)}">{esc(s.suite)}</a>'
                                     for s in v.sections) + "</nav>")
    out += [section_html(run, s, f"{anchor}-{s.suite}") for s in v.sections]
    if v.errors:
        out.append("<h2>errors</h2><ul>" + "".join(f"<li><b>{esc(c)}</b>: {esc(e)}</li>" for c, e in v.errors)
                   + "</ul>")
    out += ["<h2>machine</h2>", kv_table(v.machine), "<h3>commit</h3>" + kv_table(v.commit_info),
            "<h3>command</h3>", f"<pre>{esc(v.command)}</pre>", kv_table(v.options), "</section>"]
    return "\n".join(out)


def _group_cell(cs) -> str:
    if not cs:
        return "<td>—</td>"
    st = " ".join(f"{status_html(s)} {sum(c.status == s for c in cs)}" for s in STATUS_ORDER
                  if any(c.status == s for c in cs))
    return f'<td class="num">{esc(value_range(cs))}<br><small>{st}</small></td>'


def side_by_side(runs: list[Run], views: list[RunView], anchors: list[str]) -> str:
    """Several runs: one line each; each check and metric across the runs; the rows with the same scope."""
    names = [f"#{i + 1} {v.name}" for i, v in enumerate(views)]
    out = ["<h2>runs side by side</h2>", "<table><thead><tr><th>run</th><th>suites</th><th>device, dtype, mode</th>"
           "<th>machine</th><th>commit</th><th>status</th>"
           + "".join(f'<th class="num">{status_html(s)}</th>' for s in STATUS_ORDER)
           + '<th class="num">measured</th></tr></thead><tbody>']
    verdicts = [[(s.suite, c) for s in v.sections for c in s.checks] for v in views]
    for run, v, a, name, vd in zip(runs, views, anchors, names, verdicts):
        n = counts([c for _, c in vd])
        o = run.run.get("options") or {}
        gpu = gpu_name(v.machine)
        where = f"{v.machine.get('cpu')}" + (f"; {gpu}" if gpu else "")
        out.append(f'<tr><td><a href="#{esc(a)}">{esc(name)}</a></td>'
                   f"<td>{esc(', '.join(s.suite for s in v.sections))}</td>"
                   f"<td>{esc(o.get('device'))}, {esc(o.get('dtype'))}, {esc(o.get('mode'))}</td><td>{esc(where)}</td>"
                   f"<td>{esc(v.commit)}</td><td>{esc(v.status)}</td>"
                   + "".join(f'<td class="num">{n[s]}</td>' for s in STATUS_ORDER)
                   + f'<td class="num">{n["measured"]} of {n["total"]}</td></tr>')
    out.append("</tbody></table>")
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    groups = list(dict.fromkeys((s, c.check.title, c.metric) for vd in verdicts for s, c in vd))
    out += ["<h3>each check across the runs</h3>",
            '<div class="caption">values: min – max over the check\'s scopes; then the statuses</div>',
            f'<div class="scroll"><table><thead><tr><th>suite</th><th>check</th><th>metric</th>{head}</tr></thead>'
            "<tbody>"]
    for g in groups:
        out.append("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in g)
                   + "".join(_group_cell([c for s, c in vd if (s, c.check.title, c.metric) == g]) for vd in verdicts)
                   + "</tr>")
    out.append("</tbody></table></div>")
    by_key = [{(s, c.check.title, c.scope, c.metric): c for s, c in vd} for vd in verdicts]
    shared = [k for k in dict.fromkeys(k for d in by_key for k in d) if sum(k in d for d in by_key) > 1]
    if shared:
        rows = [f'<div class="scroll"><table><thead><tr><th>suite</th><th>check</th><th>scope</th><th>metric</th>'
                f"{head}</tr></thead><tbody>"]
        for k in shared:
            cells = "".join("<td>—</td>" if k not in d else
                            f'<td class="num">{value_cell(d[k])} {status_html(d[k].status)}</td>' for d in by_key)
            rows.append("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in k) + cells + "</tr>")
        rows.append("</tbody></table></div>")
        out.append(f"<details><summary>the verdict rows with the same scope in several runs ({len(shared)})</summary>"
                   + "\n".join(rows) + "</details>")
    return "\n".join(out)


def render(runs: list[Run]) -> str:
    """The whole page for one or more runs."""
    views = [build(r) for r in runs]
    anchors = [f"run-{i + 1}" for i in range(len(runs))]
    title = "celora-bench report: " + ", ".join(v.name for v in views)
    parts = [f"<h1>{esc(title)}</h1>", side_by_side(runs, views, anchors)] if len(runs) > 1 else []
    parts += [run_html(r, v, a) for r, v, a in zip(runs, views, anchors)]
    parts.append(f'<p class="note">written by celora-bench from the results file(s) only; {esc(CONVENTION)}</p>')
    return page(title, "\n".join(parts))


def write(runs: list[Run], out: str) -> str:
    """Writes the page to out (folders made as needed); returns out."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(render(runs))
    return out
