"""The terminal back-end (`celora-bench show`, the end of `run`, `compare`/`gate`): rich tables of a view."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from celora_bench.render import tables as T
from celora_bench.render.view import (
    STATUS_WORDS,
    VERDICT_CAPTION,
    RunView,
    build,
    rounds_text,
    value_text,
    verdict_counts,
)
from celora_bench.results import Run
from celora_bench.suite import Check

STATUS_STYLE = {"PASS": "bold green", "FAIL": "bold red", "NOISE": "yellow", "INFO": "cyan"}


def rich(t: T.Table, title_suffix: str = "") -> RichTable:
    """A view Table as rich prints it; cells are plain text (a "[...]" in a cell is not markup)."""
    out = RichTable(title=Text(t.title + title_suffix), caption=Text(t.caption) if t.caption else None,
                    caption_justify="left")
    for c in t.columns:
        out.add_column(Text(c.name), justify="right" if c.numeric else "left")
    for row in t.rows:
        out.add_row(*(Text(c) for c in row))
    return out


def verdict_table(title: str, checks: list[Check]) -> RichTable:
    t = RichTable(title=title, caption=VERDICT_CAPTION, caption_justify="left")
    for col in ("check", "scope", "metric", "value", "target", "status", "rounds", "detail"):
        t.add_column(col, justify="right" if col in ("value", "rounds") else "left")
    for c in checks:
        t.add_row(c.check.title, c.scope, c.metric, value_text(c), c.target,
                  f"[{STATUS_STYLE.get(c.status, '')}]{STATUS_WORDS.get(c.status, c.status)}[/]", rounds_text(c),
                  c.detail)
    return t


def print_view(v: RunView, console: Console, detail: bool = False) -> None:
    console.print(f"[bold]{v.path}[/]  status: {v.status}  {v.datetime}  commit {v.commit}")
    console.print(v.machine_line)
    for s in v.sections:
        if not s.rows:
            console.print(f"{s.suite}: no rows measured")
            continue
        for t in s.tables:
            console.print(rich(t, "" if v.where in t.title else f" ({v.where})"))
        if detail:
            for t in s.details:
                console.print(rich(t))
        roof = s.roofline if detail else s.roofline_shown
        if roof is not None:
            console.print(rich(roof))
        if not s.known:
            console.print(f"[red]suite {s.suite!r} is not registered in this celora-bench: no verdict[/]")
            continue
        console.print(verdict_table(f"{s.suite} on {v.where}: verdict ({verdict_counts(list(s.checks))})",
                                    list(s.checks)))
    for case_id, error in v.errors:
        console.print(f"[red]error[/] {case_id}: {error}")


def render(run: Run, console: Console, detail: bool = False) -> None:
    """`show`: the run's view, printed."""
    print_view(build(run), console, detail)


def compare_table(findings, show_all: bool) -> RichTable:
    """`compare` and `gate`: baseline against candidate, one line per finding (regressions and rechecks only
    unless show_all)."""
    scope = "" if show_all else " (regressions and rechecked rows only; --all for every row)"
    rechecked = any(f.rechecks for f in findings)
    t = RichTable(title="comparison: baseline → candidate" + scope,
                  caption="time in ms (IQR/median of each side in brackets); flops 2·m·n·k; memory bytes; "
                          "check: a gated check of the suite (case: suite/check/labels; component: its id), its value"
                          + ("; rechecks = the candidate value each time a first-pass time regression was "
                             "measured again" if rechecked else ""), caption_justify="left")
    cols = ("rule", "case", "component", "baseline", "candidate", "Δ %") + (("rechecks",) if rechecked else ())
    for col in cols + ("status",):
        t.add_column(col, justify="right" if col in ("baseline", "candidate", "Δ %", "rechecks") else "left")
    for f in findings:
        if not (show_all or f.regression or f.rechecks):
            continue
        timed = f.rule.startswith("time.")

        def fmt(v, spread=None):
            if timed:
                return f"{v * 1e3:.3f}" + (f" ({spread * 100:.0f}%)" if spread is not None else "")
            return f"{v:.4f}" if f.rule.startswith("ratio") else f"{v:,}"
        cells = [f.rule, f.case_id, f.component, fmt(f.baseline, f.base_spread), fmt(f.candidate, f.cand_spread),
                 f"{f.delta * 100:+.1f}"]
        if rechecked:
            cells.append(", ".join(fmt(v) for v in f.rechecks) or "-")
        status = "[bold red]REGRESSION[/]" if f.regression else "[green]ok[/]"
        if f.rechecks and not f.regression:
            status = "[yellow]ok (not repeated)[/]"
        t.add_row(*cells, status)
    return t
