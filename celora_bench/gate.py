"""The gate's recheck: a time regression seen in one pass is measured again and judged on the rechecks.

Timing on a shared machine has rare bad moments: in one CI run a single layer
ratio came out 17% over the baseline (15% allowed) with nothing changed. Each
flagged time finding is therefore measured again, its whole interleaved group,
``times`` times (DEFAULT_RECHECKS), with the same budget, threads and malloc
mode the run and the baseline were measured with, and judged on the median of
those rechecks (for an even count, the mean of the middle two). The first pass
is left out of the judgement: it was picked for being over the line, so it is
the one attempt that is biased. One lucky recheck does not clear a real
slowdown, one bad moment does not fail CI. FLOP, memory and case-set findings
are exact and are never rechecked. The baseline is itself the per-check median
of at least three runs (make_baseline).

The CLI (celora_bench.cli.gate) parses arguments and prints; this module decides:
which baseline, what to measure, the rechecks and the verdict (judge).
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, replace
from typing import Callable

from celora_bench import env, registry, runner
from celora_bench.compare import Finding, Rule, compare, gated
from celora_bench.results import Run
from celora_bench.suite import Options, budget_for

TIMED = ("check", "time.median", "time.min")
DEFAULT_RECHECKS = 3


class GateError(ValueError):
    """Runs the gate cannot judge; the message is one line for the user."""


def is_timed(f: Finding) -> bool:
    return f.rule.split(":")[0] in TIMED


def _key(f: Finding) -> tuple[str, str, str]:
    """A finding across passes: its rule, case (or check key) and component. A recheck is judged against the
    first pass's limit."""
    return f.rule, f.case_id, f.component


def _group(case) -> tuple:
    """What the case is timed together with: its suite's group_key (a suite not registered here: itself)."""
    return case.suite, (registry.get(case.suite).group_key(case) if case.suite in registry.SUITES else case.id)


def recheck_ids(findings: list[Finding], run: Run) -> list[str]:
    """Every case timed together (its suite's group_key) with a case a flagged finding read."""
    flagged = {i for f in findings if f.regression and is_timed(f) for i in (f.reads or (f.case_id,))}
    groups = {_group(r.case) for r in run.rows if r.case.id in flagged}
    return sorted({r.case.id for r in run.rows if _group(r.case) in groups})


def recheck(base: Run, cand: Run, findings: list[Finding], rules: list[Rule],
            remeasure: Callable[[list[str], int], Run], times: int) -> list[Finding]:
    """The findings with each timed regression judged on the median of its ``times`` rechecks.

    remeasure(case_ids, i) measures those cases again and returns the run; the
    values seen are kept in Finding.rechecks. A finding that could not be measured
    again (an error) keeps its first-pass judgement.
    """
    flagged = [f for f in findings if f.regression and is_timed(f)]
    seen: dict[tuple, list[float]] = {_key(f): [] for f in flagged}
    if flagged:
        ids = recheck_ids(flagged, cand)
        for i in range(1, times + 1):
            again = {_key(f): f for f in compare(base, remeasure(ids, i), rules)[0]}
            for k in seen:
                if k in again:
                    seen[k].append(again[k].candidate)

    def judged(f: Finding) -> Finding:
        values = seen[_key(f)]
        return replace(f, regression=f.worse(statistics.median(values)) if values else f.regression,
                       rechecks=tuple(values))
    return [judged(f) if _key(f) in seen else f for f in findings]


# ---- the baseline ---------------------------------------------------------------------

MACHINE_KEYS = ("cpu", "threads", "blas", "torch")


def machine_of(run: Run) -> dict:
    """What a stored comparison depends on: CPU model, threads, BLAS, torch build and the GPU, if any."""
    info = run.machine_info or {}
    out = {k: info.get(k) for k in MACHINE_KEYS}
    on_gpu = (run.run.get("options") or {}).get("device", "cpu") != "cpu"
    out["device"] = (info.get("gpu") or {}).get("name") if on_gpu else "cpu"
    return out


def same_machine(base: Run, cand: Run, force: bool = False) -> None:
    """GateError when base and cand were measured on machines that differ in machine_of (unless force)."""
    a, b = machine_of(base), machine_of(cand)
    diff = [f"{k} {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k]]
    if diff and not force:
        raise GateError(f"the baseline {base.path!r} was measured on another machine ({'; '.join(diff)}): timed "
                        f"checks move between machines; gate with --against REV here, or pass --force-machine")

MIN_BASELINE_RUNS = 3


class BaselineError(GateError):
    """Runs that cannot make one baseline; the message is one line for the user."""


def make_baseline(runs: list[Run], path: str) -> Run:
    """The baseline of several runs of one commit: the first run's rows (for the exact FLOP, memory and
    case-set rules, which every run must share) and, per gated check, the median over the runs, each run's
    value kept beside it. One run is a sample of this machine's drift; the median of three is not
    pulled by one run's bad stretch."""
    if len(runs) < MIN_BASELINE_RUNS:
        raise BaselineError(f"a baseline needs at least {MIN_BASELINE_RUNS} runs, got {len(runs)}")
    first = runs[0]
    ids = {r.case.id for r in first.rows}
    exact = {(r.case.id, r.component): _exact(r) for r in first.rows}
    for other in runs[1:]:
        if {r.case.id for r in other.rows} != ids:
            raise BaselineError(f"{other.path!r} measured other cases than {first.path!r}")
        for r in other.rows:
            k = (r.case.id, r.component)
            if k in exact and exact[k] != _exact(r):
                raise BaselineError(f"{other.path!r} counts other FLOPs or bytes than {first.path!r} for {k}")
    per_run = [gated(r) for r in runs]
    keys = sorted(set.intersection(*(set(p) for p in per_run)))
    items = [{"key": k, "median": statistics.median(p[k].value for p in per_run),
              "values": [p[k].value for p in per_run], "cases": list(per_run[0][k].cases)} for k in keys]
    base = Run(path=path, run={**first.run, "baseline": {
        "sources": [{"path": r.path, "datetime": r.datetime, "commit": (r.commit_info or {}).get("id"),
                     "cpu": (r.machine_info or {}).get("cpu")} for r in runs],
        "checks": items}}, machine_info=first.machine_info, commit_info=first.commit_info,
        status=first.status, rows=list(first.rows), verdicts=first.verdicts)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    base.save()
    return base


def _exact(r) -> tuple:
    """What the gate's exact rules compare: FLOPs everywhere, bytes of the persistent state and of one step's
    allocations (a phase's peak RSS is measured, not counted: it moves between runs)."""
    return (r.flops_analytic, r.flops_counted, r.mem_bytes if r.component in ("state", "step.alloc") else None)


def narrow_rows(run: Run, filters: list[str] | None) -> Run:
    """The run limited to the cases whose id contains any filter (``gate -k`` on the candidate)."""
    if not filters:
        return run
    return replace(run, rows=[r for r in run.rows if any(f in r.case.id for f in filters)])


def narrow(run: Run, filters: list[str] | None) -> Run:
    """The baseline limited as ``gate -k`` limits the candidate: its rows, and its stored checks to those
    whose every case is kept."""
    if not filters:
        return run
    stored = (run.run.get("baseline") or {}).get("checks")
    if stored is None:
        return narrow_rows(run, filters)
    kept = [i for i in stored if all(any(f in c for f in filters) for c in i["cases"])]
    return replace(narrow_rows(run, filters), run={**run.run, "baseline": {**run.run["baseline"], "checks": kept}})


# ---- the gate's run: which baseline, what is measured, the rechecks, the verdict ------------

def default_baseline(device: str) -> str:
    """The committed baseline of a device: results/baseline.json (cpu), results/baseline-<device>.json."""
    return os.path.join("results", "baseline.json" if device == "cpu" else f"baseline-{device}.json")


def measure(out: str, device: str, dtype: str, filt: list[str] | None, threads: int | None) -> Run:
    """The run the gate judges: the quick backward-breakdown suite on this machine, written to out."""
    return runner.run([registry.HEADLINE], Options(mode="quick", device=device, dtype=dtype), out,
                      filt=filt, threads=threads)


def recheck_times(requested: int | None, from_run: bool) -> int:
    """--recheck N as given; by default DEFAULT_RECHECKS, or none for an existing run (measured elsewhere)."""
    if requested is not None:
        return requested
    return 0 if from_run else DEFAULT_RECHECKS


def same_checkout(run: Run) -> None:
    """Rechecking a run re-measures this checkout: refuse (GateError) when the run was measured at another
    commit."""
    here, there = env.commit_info().get("id"), (run.commit_info or {}).get("id")
    if here and there and here != there:
        raise GateError(f"--recheck: {run.path!r} was measured at commit {there[:10]}, this checkout is "
                        f"{here[:10]}; rechecks would measure other code (check out {there[:10]} or use --recheck 0)")


def recheck_as_run(base: Run, cand: Run, findings: list[Finding], rules: list[Rule], times: int,
                   threads: int | None, log: Callable[[str], None] | None = None) -> list[Finding]:
    """recheck() measuring with the candidate run's own options, thread count (unless threads is given),
    malloc mode and budget, so that the rechecks are measured as the run and the baseline were. Each recheck
    is a new run (no resume) beside the candidate: <stem>-recheck<i>.json, an older file replaced. log(line)
    says what is measured again."""
    stem = os.path.splitext(cand.path)[0]
    suites = cand.run.get("suites") or [registry.HEADLINE]
    opts = Options(**{k: v for k, v in cand.run.get("options", {}).items() if k in Options.__dataclass_fields__})
    threads = threads or cand.machine_info.get("threads")
    tuned = cand.machine_info.get("malloc", "default") != "default"
    budget = budget_for(opts.mode)

    def remeasure(ids, i):
        return runner.run(suites, opts, f"{stem}-recheck{i}.json", filt=ids, threads=threads,
                          tune_malloc=tuned, budget=budget)

    n = sum(f.regression and is_timed(f) for f in findings)
    if n and log:
        log(f"{n} time regression(s) in the first pass: measuring them again (up to {times}x, "
            f"interleaved, {opts.mode} budget, {threads} threads, malloc "
            f"{'tuned' if tuned else 'default'}, as the run was; judged on the median of "
            f"the rechecks; runs in {stem}-recheck*.json)")
    return recheck(base, cand, findings, rules, remeasure, times)


@dataclass
class Judgement:
    """What a comparison found: every finding (rechecked where the gate rechecked) and the case sets."""
    findings: list[Finding]
    common: int
    missing: list[str]             # case ids of the baseline that the candidate lacks
    new: list[str]                 # case ids of the candidate that the baseline lacks
    strict_cases: bool             # the gate: a differing case set fails as a regression does

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.regression]

    @property
    def cleared(self) -> list[Finding]:
        """Over the threshold in the first pass, not when measured again."""
        return [f for f in self.findings if f.rechecks and not f.regression]

    @property
    def cases_differ(self) -> bool:
        return self.strict_cases and bool(self.missing or self.new)

    @property
    def failed(self) -> bool:
        return bool(self.regressions) or self.cases_differ


def judge(base: Run, cand: Run, rules: list[Rule], strict_cases: bool, times: int = 0,
          threads: int | None = None, log: Callable[[str], None] | None = None) -> Judgement:
    """Compares cand with base under rules; with times > 0 each time regression is measured again
    (recheck_as_run) and judged on the median of its rechecks. GateError when no case is in common."""
    findings, cases = compare(base, cand, rules)
    if cases["common"] == 0:
        raise GateError(f"no case in common between {base.path!r} and {cand.path!r}")
    if times:
        findings = recheck_as_run(base, cand, findings, rules, times, threads, log)
    return Judgement(findings, cases["common"], cases["missing"], cases["new"], strict_cases)
