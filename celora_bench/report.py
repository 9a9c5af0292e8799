"""Renders a results file as rich tables: per-case summary, per-component detail, verdict.

Reads only the results file; never re-measures. Numbers are formatted here and
nowhere else (exports keep full precision).
"""
from __future__ import annotations

from collections import defaultdict

from rich.console import Console
from rich.table import Table

from celora_bench import registry
from celora_bench.cases import Case, Row
from celora_bench.flops import CONVENTION
from celora_bench.results import Run
from celora_bench.suite import Check

PARTS_PREFIX = ("fwd.", "bwd.")
STATUS_STYLE = {"PASS": "bold green", "FAIL": "bold red", "NOISE": "yellow", "INFO": "cyan"}
STATUS_WORDS = {"PASS": "PASS", "FAIL": "FAIL", "NOISE": "within noise", "INFO": "INFO"}


def case_label(c: Case) -> str:
    if c.provider == "celora":
        mode = "cached" if c.cache_rows else "lean"
        return f"celora p={c.keep_ratio:g} r0={c.svd_rank} {mode}"
    return c.provider


def _ms(row: Row | None) -> str:
    if row is None or row.time is None:
        return "—"
    t = row.time
    flag = "*" if t.spread else ""
    return f"{t.median * 1e3:.2f}{flag}"


def _mb(v: int | None) -> str:
    return "—" if v is None else f"{v / 2**20:.1f}"


def by_case(rows: list[Row]) -> dict[Case, dict[str, Row]]:
    out: dict[Case, dict[str, Row]] = defaultdict(dict)
    for r in rows:
        out[r.case][r.component] = r
    return out


def parts_sum(comps: dict[str, Row]) -> float | None:
    parts = [r.time.median for name, r in comps.items() if name.startswith(PARTS_PREFIX) and r.time]
    return sum(parts) if parts else None


def summary_table(title: str, rows: list[Row]) -> Table:
    t = Table(title=title, caption=f"times: median ms over raw samples (* = IQR/median > 10%); "
                                   f"memory MiB; {CONVENTION}", caption_justify="left")
    for col in ("model / layer", "N", "r", "provider", "fwd+bwd ms", "Σparts ms", "gap %",
                "G_y·W0 ms", "G_y·W0 GFLOP", "sel. amort. ms", "fwd peak MiB", "bwd peak MiB", "state MiB"):
        t.add_column(col, justify="left" if col in ("model / layer", "provider") else "right")
    cases = by_case(rows)
    for case in sorted(cases, key=lambda c: (c.model, c.tokens, c.rank, c.layer, c.provider != "dense",
                                             c.provider != "peft", c.keep_ratio, c.svd_rank, c.cache_rows)):
        comps = cases[case]
        whole = comps.get("fwd+bwd")
        ps = parts_sum(comps)
        gap = (f"{(whole.time.median - ps) / whole.time.median * 100:+.1f}"
               if ps and whole is not None and whole.time else "—")
        gx = comps.get("bwd.grad_x_frozen")
        t.add_row(f"{case.model} {case.layer} {case.m}x{case.n}", str(case.tokens), str(case.rank),
                  case_label(case), _ms(whole), f"{ps * 1e3:.2f}" if ps else "—", gap, _ms(gx),
                  f"{gx.flops_analytic / 1e9:.3f}" if gx and gx.flops_analytic is not None else "—",
                  _ms(comps.get("selection.amortized")),
                  _mb(comps["fwd"].mem_bytes) if "fwd" in comps else "—",
                  _mb(comps["bwd"].mem_bytes) if "bwd" in comps else "—",
                  _mb(comps["state"].mem_bytes) if "state" in comps else "—")
    return t


def detail_table(case: Case, comps: dict[str, Row]) -> Table:
    t = Table(title=f"{case.id}", caption=f"{CONVENTION}; memory: see 'what' per row", caption_justify="left")
    for col in ("component", "median ms", "IQR %", "min ms", "n", "FLOPs analytic", "FLOPs counted",
                "memory bytes", "what / note"):
        t.add_column(col, justify="left" if col in ("component", "what / note") else "right")
    for name, r in comps.items():
        tm = r.time
        t.add_row(name, f"{tm.median * 1e3:.3f}" if tm else "—",
                  f"{tm.iqr / tm.median * 100:.1f}" if tm and tm.median else "—",
                  f"{tm.min * 1e3:.3f}" if tm else "—", str(tm.count) if tm else "0",
                  "—" if r.flops_analytic is None else f"{r.flops_analytic:,}",
                  "—" if r.flops_counted is None else f"{r.flops_counted:,}",
                  "—" if r.mem_bytes is None else f"{r.mem_bytes:,}",
                  "; ".join(x for x in (r.note, r.mem_what) if x))
    return t


def value_text(c: Check) -> str:
    """The value with its interval, where it has one: 0.468 [0.455, 0.481]."""
    if c.value is None:
        return "—"
    if c.kind != "measured" or c.lo == c.hi and c.lo is not None:
        return f"{c.value:.4g}"
    if c.lo is None or c.hi is None:
        return f"{c.value:.4g} [no interval]"
    return f"{c.value:.4g} [{c.lo:.4g}, {c.hi:.4g}]"


VERDICT_CAPTION = ("value [95% interval between rounds: trimmed mean of the per-round values, Yuen's interval]; "
                   "PASS: the whole interval clears the line, FAIL: it misses it wholly, within noise: it "
                   "straddles the line; rounds: how many rounds the interval used; exact: a count that must "
                   "equal its rule")


def verdict_table(title: str, checks: list[Check]) -> Table:
    t = Table(title=title, caption=VERDICT_CAPTION, caption_justify="left")
    for col in ("check", "scope", "metric", "value", "target", "status", "rounds", "detail"):
        t.add_column(col, justify="right" if col in ("value", "rounds") else "left")
    for c in checks:
        t.add_row(c.check, c.scope, c.metric, value_text(c), c.target,
                  f"[{STATUS_STYLE.get(c.status, '')}]{STATUS_WORDS.get(c.status, c.status)}[/]",
                  str(c.rounds) if c.rounds else ("exact" if c.kind == "exact" else "—"), c.detail)
    return t


def verdict_counts(checks: list[Check]) -> str:
    """"37 timed: 30 pass, 2 fail, 5 within noise; 24 exact (all pass); 3 info": timed checks (measurements
    judged by their interval) counted apart from exact ones (counts that must equal their rule)."""
    if not checks:
        return "no checks"
    timed = [c for c in checks if c.kind == "measured"]
    exact = [c for c in checks if c.kind == "exact"]
    info = [c for c in checks if c.kind not in ("measured", "exact")]
    n = defaultdict(int)
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


def checks_of(run: Run, suite: str) -> list[Check]:
    """The verdict, recomputed from the rows (so partial and merged runs get one too)."""
    rows = [r for r in run.rows if r.case.suite == suite]
    if not rows:
        return []
    return registry.get(suite).verdict(rows, run.machine_info)


ROOFLINE_SHOWN = ("bwd.grad_x_frozen", "detail.gather", "detail.kept_product")   # without --detail
ROOFLINE_CAPTION = ("speed of light: analytic bytes (each operand read once, each result written once), "
                    "intensity = FLOPs/byte, achieved = FLOPs (bytes) over the median time, roof = the one that "
                    "binds at that intensity, SOL = achieved / roof; peaks calibrated at the start of the run")


def peaks_text(peaks) -> str:
    from celora_bench import roofline
    return (f"peaks {peaks.flops_per_s / 1e9:.1f} GFLOP/s, {peaks.bytes_per_s / 1e9:.1f} GB/s (ridge "
            f"{roofline.ridge(peaks):.1f} FLOP/B; {peaks.device} {peaks.dtype}, {peaks.threads} threads)")


def roofline_table(title: str, rows: list[Row], machine_info: dict) -> Table | None:
    """Every timed component against the machine's measured roofs (celora_bench.roofline); None without peaks."""
    from celora_bench import roofline

    peaks = roofline.peaks_of(machine_info)
    if peaks is None:
        return None
    t = Table(title=f"{title}: {peaks_text(peaks)}", caption=ROOFLINE_CAPTION, caption_justify="left")
    for col in ("layer", "provider", "component", "GFLOP", "MB", "FLOP/B", "GFLOP/s", "GB/s", "roof", "SOL %"):
        t.add_column(col, justify="left" if col in ("layer", "provider", "component", "roof") else "right")
    for r, p in roofline.points(rows, peaks):
        t.add_row(f"{r.case.layer} {r.case.m}x{r.case.n}", case_label(r.case), r.component, f"{p.flops / 1e9:.3f}",
                  f"{p.bytes / 1e6:.2f}", f"{p.intensity:.1f}", f"{p.flops_per_s / 1e9:.1f}",
                  f"{p.bytes_per_s / 1e9:.1f}", p.roof, f"{p.sol * 100:.0f}")
    return t


def run_where(run: Run) -> str:
    """"cuda bfloat16, NVIDIA H200" / "cpu float32": the device and dtype every table title carries."""
    opts = run.run.get("options") or {}
    devices = sorted({r.case.device for r in run.rows}) or [opts.get("device", "?")]
    dtypes = sorted({r.case.dtype for r in run.rows}) or [opts.get("dtype", "?")]
    gpu = (run.machine_info.get("gpu") or {}).get("name")
    on_gpu = any(d.startswith("cuda") for d in devices)
    return f"{'/'.join(devices)} {'/'.join(dtypes)}" + (f", {gpu}" if on_gpu and gpu else "")


def render(run: Run, console: Console, detail: bool = False) -> None:
    mi = run.machine_info
    console.print(f"[bold]{run.path}[/]  status: {run.status}  {run.datetime}  commit "
                  f"{(run.commit_info.get('id') or '?')[:10]}{' (dirty)' if run.commit_info.get('dirty') else ''}")
    console.print(f"{mi.get('cpu')}, {mi.get('cores')} cores, {mi.get('threads')} threads, BLAS {mi.get('blas')}, "
                  f"torch {mi.get('torch')}, malloc {mi.get('malloc')}, GPU {(mi.get('gpu') or {}).get('name')}")
    suites = run.run.get("suites") or sorted({r.case.suite for r in run.rows})
    where = run_where(run)
    for suite in suites:
        rows = [r for r in run.rows if r.case.suite == suite]
        if not rows:
            console.print(f"{suite}: no rows measured")
            continue
        mod = registry.get(suite)
        if hasattr(mod, "summary_table"):
            table = mod.summary_table(rows)
            table.title = f"{table.title} ({where})"
            console.print(table)
        else:
            console.print(summary_table(f"{suite}: per case ({where})", rows))
        if detail:
            for case, comps in sorted(by_case(rows).items(), key=lambda kv: kv[0].id):
                console.print(detail_table(case, comps))
        roof = roofline_table(f"{suite}: speed of light ({where})",
                              rows if detail else [r for r in rows if r.component in ROOFLINE_SHOWN], run.machine_info)
        if roof is not None and roof.row_count:
            console.print(roof)
        checks = checks_of(run, suite)
        console.print(verdict_table(f"{suite} on {where}: verdict ({verdict_counts(checks)})", checks))
    for e in run.errors:
        console.print(f"[red]error[/] {e['case_id']}: {e['error']}")


def compare_table(findings, show_all: bool) -> Table:
    scope = "" if show_all else " (regressions and rechecked rows only; --all for every row)"
    rechecked = any(f.rechecks for f in findings)
    t = Table(title="comparison: baseline → candidate" + scope,
              caption="time in ms (IQR/median of each side in brackets); flops 2·m·n·k; memory bytes; "
                      "ratio = CE-LoRA/dense of the same run"
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
