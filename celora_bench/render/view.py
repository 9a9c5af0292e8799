"""A run as a format-neutral view, built once: per suite its question, verdict (Check objects: structured
fields, not strings), headline checks, its own tables (or the generic per-case table), components ×
providers per layer, every case's detail and the speed-of-light table; then machine, commit, command and
errors. Back-ends (terminal, html, export) format it and compute nothing."""
from __future__ import annotations

import os
import shlex
from collections import defaultdict
from dataclasses import dataclass, replace

from celora_bench import intervals as I
from celora_bench import registry
from celora_bench.cases import Row
from celora_bench.render.tables import (
    Table,
    by_case,
    component_grids,
    detail_table,
    launch_bound,
    roofline_table,
)
from celora_bench.results import Run
from celora_bench.suite import Check

STATUS_WORDS = {"PASS": "PASS", "FAIL": "FAIL", "NOISE": "within noise", "INFO": "INFO"}
STATUS_ORDER = ("PASS", "FAIL", "NOISE", "INFO")
VERDICT_CAPTION = ("value [95.5% interval: mean of each worker process's trimmed mean of its per-round values, t "
                   "over the spread of those process means; 6 looks spend 5% in all, Haybittle-Peto]; "
                   "PASS: the whole interval clears the line, FAIL: it misses it wholly, within noise: it "
                   "straddles the line; rounds: how many rounds the interval used; exact: a count that must "
                   "equal its rule")


def value_text(c: Check) -> str:
    """The value with its interval, where it has one: 0.468 [0.455, 0.481]."""
    if c.value is None:
        return "—"
    if c.kind != "measured" or c.lo == c.hi and c.lo is not None:
        return f"{c.value:.4g}"
    return str(I.Interval(c.value, c.lo, c.hi))


def rounds_text(c: Check) -> str:
    return str(c.rounds) if c.rounds else ("exact" if c.kind == "exact" else "—")


def verdict_counts(checks: list[Check]) -> str:
    """"37 timed: 30 pass, 2 fail, 5 within noise; 24 exact (all pass); 3 info": timed checks (measurements
    judged by their interval) counted apart from exact ones (counts that must equal their rule)."""
    if not checks:
        return "no checks"
    timed = [c for c in checks if c.kind == "measured"]
    exact = [c for c in checks if c.kind == "exact"]
    info = [c for c in checks if c.kind not in ("measured", "exact")]
    n: dict[str, int] = defaultdict(int)
    for c in timed:
        n[c.status] += 1
    parts = []
    if timed:
        parts.append(f"{len(timed)} timed: {n['PASS']} pass, {n['FAIL']} fail, {n['NOISE']} within noise")
    if exact:
        failed = sum(c.status == "FAIL" for c in exact)
        parts.append(f"{len(exact)} exact ({'all pass' if not failed else f'{failed} FAIL'})")
    if info:
        parts.append(f"{len(info)} info")
    return "; ".join(parts)


def suites_of(run: Run) -> list[str]:
    """The suites the run asked for, then any other whose rows it holds (a merged file)."""
    listed = list(run.run.get("suites") or [])
    return listed + sorted({r.case.suite for r in run.rows} - set(listed))


checks_of = registry.checks_of          # the verdict, recomputed from the rows with the current rules


def gpu_name(machine_info: dict) -> str | None:
    gpu = machine_info.get("gpu")
    return gpu.get("name") if isinstance(gpu, dict) else None


def run_where(run: Run) -> str:
    """"cuda bfloat16, NVIDIA H200" / "cpu float32": the device and dtype every table title carries."""
    opts = run.run.get("options") or {}
    devices = sorted({r.case.device for r in run.rows}) or [opts.get("device", "?")]
    dtypes = sorted({r.case.dtype for r in run.rows}) or [opts.get("dtype", "?")]
    gpu = gpu_name(run.machine_info)
    on_gpu = any(d.startswith("cuda") for d in devices)
    return f"{'/'.join(devices)} {'/'.join(dtypes)}" + (f", {gpu}" if on_gpu and gpu else "")


@dataclass(frozen=True)
class Section:
    """One suite of one run."""

    suite: str
    known: bool                         # registered in this celora-bench (else: no verdict, no tables of its own)
    question: str
    rows: tuple[Row, ...]
    checks: tuple[Check, ...]
    headline: tuple[Check, ...]
    tables: tuple[Table, ...]           # the suite's own, or the generic per-case summary
    grids: tuple[Table, ...]            # components × providers per layer (timed suites)
    details: tuple[Table, ...]          # every case's components
    roofline: Table | None              # every timed component against the measured roofs
    roofline_shown: Table | None        # the components the suite shows (SOL_SHOWN) (`show` without --detail)
    launch_bound: int                   # rows whose device time is launch overhead


@dataclass(frozen=True)
class RunView:
    path: str
    name: str
    label: str                          # "quick-1.json — cpu, Intel Xeon …"
    status: str
    datetime: str
    commit: str                         # "1a2b3c4d5e (dirty)"
    where: str
    machine: dict
    machine_line: str
    commit_info: dict
    command: str
    options: dict
    sections: tuple[Section, ...]
    errors: tuple[tuple[str, str], ...]


def section(run: Run, suite: str) -> Section:
    rows = [r for r in run.rows if r.case.suite == suite]
    known = suite in registry.SUITES
    s = registry.get(suite) if known else None
    checks = checks_of(run, suite)
    own = list(s.tables(rows)) if s is not None and rows else []
    where = run_where(run)
    tables = tuple(own) + (tuple(s.case_tables(rows)) if s is not None and rows else ())
    timed = [r for r in rows if r.time is not None]
    roof = roofline_table(f"{suite}: speed of light ({where})", rows, run.machine_info)
    sol = s.SOL_SHOWN if s is not None else ()
    shown = replace(roof, rows=[r for r in roof.rows if r[2] in sol]) if roof is not None else None
    return Section(
        suite=suite, known=known, question=s.QUESTION if s else "", rows=tuple(rows), checks=tuple(checks),
        headline=tuple(s.headline(checks)) if s else (), tables=tables,
        grids=tuple(component_grids(timed)) if s is not None and s.timed else (),
        details=tuple(detail_table(c, comps) for c, comps in sorted(by_case(rows).items(), key=lambda kv: kv[0].id)),
        roofline=roof, roofline_shown=shown if roof is not None and shown.rows else None,
        launch_bound=sum(launch_bound(r) for r in rows))


def command(run: Run) -> str:
    argv = run.run.get("argv")
    return "celora-bench " + shlex.join(str(a) for a in argv) if argv else "(not recorded)"


def build(run: Run) -> RunView:
    mi, ci = run.machine_info, run.commit_info
    gpu = gpu_name(mi)
    opts = run.run.get("options") or {}
    on = gpu if str(opts.get("device", "")).startswith("cuda") and gpu else mi.get("cpu")
    return RunView(
        path=run.path, name=os.path.basename(run.path),
        label=f"{os.path.basename(run.path)} — {opts.get('device', '?')}, {on or '?'}",
        status=run.status, datetime=run.datetime,
        commit=f"{(ci.get('id') or '?')[:10]}{' (dirty)' if ci.get('dirty') else ''}", where=run_where(run),
        machine=mi, commit_info=ci, command=command(run), options={k: v for k, v in run.run.items() if k != "argv"},
        machine_line=(f"{mi.get('cpu')}, {mi.get('cores')} cores, {mi.get('threads')} threads, BLAS {mi.get('blas')}, "
                      f"torch {mi.get('torch')}, malloc {mi.get('malloc')}, GPU {gpu}"),
        sections=tuple(section(run, s) for s in suites_of(run)),
        errors=tuple((str(e.get("case_id")), str(e.get("error"))) for e in run.errors))
