"""The end of `run`: the answer in about 30 lines that fit 120 columns, read from the checks alone.

Per question (a CheckId, in the order its suite declares) its timed checks as one grid over their labels:
rows are the first label whose values differ, columns the other differing labels; a cell is the value and its
status mark. A suite's own tables (e.g. convergence's per-arm table) come first; checks without labels are
one line each. Then the counts and where everything else is (`show --detail`, the HTML report).
`run --detail` prints it all.
"""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from celora_bench import registry
from celora_bench.render.terminal import rich
from celora_bench.render.view import RunView, build, value_text, verdict_counts
from celora_bench.results import Run
from celora_bench.suite import Check, CheckId

MARK = {"PASS": "✓", "FAIL": "✗", "NOISE": "~"}
LEGEND = "✓ PASS (the whole 95.5% interval clears the line)  ✗ FAIL (misses it wholly)  ~ within noise"
MAX_LINES = 12          # checks without labels shown one per line, at most


def grid(checks: list[Check]) -> tuple[str, list[str], list[tuple[str, list[str]]]]:
    """(row label's name, column headers, [(row value, cells)]) of one question's timed checks."""
    labels = [dict(c.labels) for c in checks]
    keys = list(dict.fromkeys(k for lab in labels for k in lab))
    varying = [k for k in keys if len({lab[k] for lab in labels if k in lab}) > 1]
    row_key, col_keys = (varying[0], varying[1:]) if varying else ("", [])
    rows = list(dict.fromkeys(lab.get(row_key, "") for lab in labels))
    cols = list(dict.fromkeys(tuple(lab.get(k, "") for k in col_keys) for lab in labels))
    cell = {(lab.get(row_key, ""), tuple(lab.get(k, "") for k in col_keys)): c for lab, c in zip(labels, checks)}
    headers = [" ".join(f"{k}={v}" for k, v in zip(col_keys, col) if v) or "value" for col in cols]
    out = []
    for r in rows:
        cells = []
        for col in cols:
            c = cell.get((r, col))
            cells.append("" if c is None or c.value is None else f"{c.value:.3g} {MARK.get(c.status, '')}".strip())
        out.append((r, cells))
    return row_key, headers, out


def title(number: int, checks: list[Check]) -> str:
    """"1. G_y·W0 share of fwd+bwd: time share (wall), line [0.40, 0.55]" (the line when all share one)."""
    targets = {c.target for c in checks}
    line = f", line {targets.pop()}" if len(targets) == 1 else ""
    return f"{number}. {checks[0].check.title}: {checks[0].metric}{line}"


def grid_table(checks: list[Check]) -> RichTable:
    row_key, headers, rows = grid(checks)
    t = RichTable(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    t.add_column(Text(row_key or "scope"))
    for h in headers:
        t.add_column(Text(h), justify="right")
    for r, cells in rows:
        t.add_row(Text(r), *(Text(c) for c in cells))
    return t


def print_answer(v: RunView, console: Console) -> None:
    console.print(f"[bold]{v.name}[/]  {v.status}  {v.where}  commit {v.commit}")
    for s in v.sections:
        if not s.rows:
            console.print(f"{s.suite}: no rows measured")
            continue
        own = registry.get(s.suite).tables(list(s.rows)) if s.known else []
        for t in own:
            console.print(rich(t))
        if s.question:
            console.print(f"[bold]{s.suite}[/]: {s.question}")
        timed = [c for c in s.checks if c.kind == "measured"]
        by_question: dict[CheckId, list[Check]] = {}
        for c in timed:
            by_question.setdefault(c.check, []).append(c)
        loose = []
        for number, checks in enumerate(by_question.values(), 1):
            if all(c.labels for c in checks):
                console.print(Text(title(number, checks), style="bold"))
                console.print(grid_table(checks))
            else:
                loose += checks
        for c in loose[:MAX_LINES]:
            console.print(f"  {c.check.title} | {c.scope}: {value_text(c)} {MARK.get(c.status, c.status)}")
        if len(loose) > MAX_LINES:
            console.print(f"  … {len(loose) - MAX_LINES} more timed checks: see show --detail")
        if timed:
            console.print(LEGEND)
        console.print(f"[bold]{s.suite}[/] verdict: {verdict_counts(list(s.checks))}")
    for case_id, error in v.errors:
        console.print(f"[red]error[/] {case_id}: {error}")
    console.print(f"every table and the full verdict: celora-bench show {v.path} --detail")


def render(run: Run, console: Console) -> None:
    print_answer(build(run), console)
