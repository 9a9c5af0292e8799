"""The HTML back-end's toolkit: escaping, the page frame with its inline CSS, a view Table and verdict
checks as HTML. Every string that comes from a results file is escaped here."""
from __future__ import annotations

import html
from collections import Counter, defaultdict

from celora_bench.render.tables import Table
from celora_bench.render.view import STATUS_ORDER, STATUS_WORDS, rounds_text, verdict_counts
from celora_bench.suite import Check

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


def _lines(text: str) -> str:
    return "<br>".join(esc(x) for x in str(text).split("\n"))


def table_html(t: Table, caption: bool = True) -> str:
    """A view Table: title, header, every cell (a newline in a cell is a line break), caption."""
    cls = ["num" if c.numeric else "" for c in t.columns]
    out = [f'<div class="tablecap">{esc(t.title)}</div>'] if t.title else []
    out.append('<div class="scroll"><table><thead><tr>'
               + "".join(f'<th class="{k}">{esc(c.name)}</th>' for c, k in zip(t.columns, cls))
               + "</tr></thead><tbody>")
    for row in t.rows:
        out.append("<tr>" + "".join(f'<td class="{k}">{_lines(v)}</td>' for v, k in zip(row, cls)) + "</tr>")
    out.append("</tbody></table></div>")
    if caption and t.caption:
        out.append(f'<div class="caption">{esc(t.caption)}</div>')
    return "\n".join(out)


def interval_text(c: Check) -> str:
    lo, hi = c.lo, c.hi
    if c.kind != "measured" or (lo is not None and lo == hi):
        return ""
    if lo is None and hi is None:
        return "[no interval]"
    return f"[{'—' if lo is None else f'{lo:.4g}'}–{'—' if hi is None else f'{hi:.4g}'}]"


def status_html(status: str) -> str:
    return f'<span class="{esc(status)}">{esc(STATUS_WORDS.get(status, status))}</span>'


def counts(checks: list[Check]) -> dict[str, int]:
    """Checks per status, and how many are timed (kind "measured")."""
    n = Counter(c.status for c in checks)
    out = {s: n.get(s, 0) for s in STATUS_ORDER}
    out["measured"] = sum(c.kind == "measured" for c in checks)
    out["total"] = len(checks)
    return out


def counts_html(checks: list[Check]) -> str:
    """The summary as `show` words it: timed checks counted apart from exact ones."""
    return f'<div class="counts"><span class="note">{esc(verdict_counts(checks))}</span></div>'


def value_cell(c: Check) -> str:
    iv = interval_text(c)
    v = "—" if c.value is None else f"{c.value:.4g}"
    return esc(v) + (f' <span class="iv">{esc(iv)}</span>' if iv else "")


def value_range(checks: list[Check]) -> str:
    vals = [c.value for c in checks if c.value is not None]
    if not vals:
        return ""
    return f"{min(vals):.4g}" if min(vals) == max(vals) else f"{min(vals):.4g} – {max(vals):.4g}"


def verdict_html(checks: list[Check]) -> str:
    """Every check as one row: value with its interval, target, status ("within noise" for NOISE), kind."""
    out = ['<div class="scroll"><table><thead><tr><th>check</th><th>scope</th><th>metric</th>'
           '<th class="num">value [interval]</th><th>target</th><th>status</th><th>kind</th>'
           '<th class="num">rounds</th><th>detail</th></tr></thead><tbody>']
    for c in checks:
        out.append(f"<tr><td>{esc(c.check.title)}</td><td>{esc(c.scope)}</td><td>{esc(c.metric)}</td>"
                   f'<td class="num">{value_cell(c)}</td><td>{esc(c.target)}</td><td>{status_html(c.status)}</td>'
                   f'<td>{esc(c.kind)}</td><td class="num">{esc(rounds_text(c))}</td><td>{esc(c.detail)}</td></tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)


def answer_html(checks: list[Check]) -> str:
    """Per check and metric: its statuses and the range of its values; then each row that did not pass."""
    groups: dict[tuple[str, str], list[Check]] = defaultdict(list)
    for c in checks:
        groups[(c.check.title, c.metric)].append(c)
    out = ['<div class="tablecap">per check and metric</div><table><thead><tr><th>check</th><th>metric</th>'
           + "".join(f'<th class="num">{status_html(s)}</th>' for s in STATUS_ORDER)
           + '<th class="num">values (min – max)</th></tr></thead><tbody>']
    for (name, metric), cs in groups.items():
        n = Counter(c.status for c in cs)
        out.append(f"<tr><td>{esc(name)}</td><td>{esc(metric)}</td>"
                   + "".join(f'<td class="num">{n.get(s, 0) or ""}</td>' for s in STATUS_ORDER)
                   + f'<td class="num">{esc(value_range(cs) or "—")}</td></tr>')
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
