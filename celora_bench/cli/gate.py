"""celora-bench compare, gate: parse, call celora_bench.gate, print the findings, exit 0/1 (2: bad input)."""
from __future__ import annotations

import argparse
import os
import sys

from celora_bench.cli.common import CLIError, _baseline_runs, _console, _device_dtype, _load, _recheck, _threads

COMPARE_HELP = """Compare two results files case by case.

Rules (--fail-on, repeatable) are METRIC:N%[@FIELD=VALUE[|VALUE],...]:
  time.median / time.min   candidate slower than the baseline by more than N%
  flops                    FLOPs changed by more than N% (either way); flops:0% is exact
  memory                   bytes grew by more than N%
  check                    a check its suite marks gated worse than the baseline's by more than N%,
                           its whole interval beyond that line (the verdicts recomputed from each run)
FIELD: suite, provider, component, layer, model, case (on a check: component is its id, the rest its labels).
examples:
  celora-bench compare results/baseline.json new.json
  celora-bench compare a.json b.json --fail-on time.median:10%@provider=celora,component=bwd.grad_x_frozen
exit: 0 no regression, 1 regression, 2 bad input
"""

GATE_HELP = """Gate the working tree's core/ against a git revision's, or against a stored baseline.

--against REV (what CI runs: the previous commit) measures REV's core/ and the working
tree's on this machine, now: the cases the headline suite gates (backward-breakdown: dense
LoRA and CE-LoRA at p = 0.5, lean, cached and double-LoRA, per layer shape) set up
in 4 fresh worker processes per side, 24 rounds per side dealt to all 8 in random order.
Each gated quantity (the time of G_y·W0, G_h, the refresh and fwd+bwd of every case) is
compared as candidate/base with a 90% interval. A quantity with an interval reaching 1.10
and a value of 1.05 or more is measured again in 8 fresh workers per side (48 more rounds
per side); a regression is the final interval, over both looks, wholly above 1.10 (FLOPs and
counted bytes: candidate/base above 1.10). Both sides run the working tree's
harness and suites: a slowdown there is not caught (see celora_bench/abgate.py).

Without --against, the stored-baseline mode (offline):

Times differ between machines, so time is gated through the checks the suite marks
gated, each a ratio of series timed interleaved in the same rounds of one run
(backward-breakdown: CE-LoRA's G_y·W0 cost over dense's and the layer's speed-up
over its Amdahl bound per case, one refresh over dense G_y·W0, dense LoRA over
peft): a check worse than the baseline's by more than 15%, its whole interval
beyond that line, is a regression (check:15%). The baseline's values are the
per-check medians of at least three runs. FLOPs,
persistent and per-step allocated bytes and the case set must equal the
baseline's exactly. A time regression in the first pass is measured again,
its whole interleaved group, --recheck N times (default 3) with the run's own
budget, and judged on the median of those rechecks alone (the first pass,
picked for being over the line, is left out). -k narrows the baseline as it
narrows the run (a stored check is kept when every case it read is). --device cuda
gates a GPU run against results/baseline-cuda.json.
A stored baseline made on another machine (CPU model, threads, BLAS, torch, device)
is refused unless --force-machine is given.
examples:
  celora-bench gate --against HEAD~1
  celora-bench gate --against main -k gate_proj+up_proj
  celora-bench gate
  celora-bench gate -k gate_proj                     # one layer shape, against the same part of the baseline
  celora-bench gate --update-baseline                # measure three runs, write their medians as the baseline
  celora-bench gate --update-baseline --from A.json --from B.json --from C.json
  celora-bench gate --from results/runs/X.json       # gate an existing run
exit: 0 pass, 1 regression, 2 bad input
"""


def add_compare(sub) -> None:
    cmp_ = sub.add_parser("compare", help="diff two runs; exit 1 on a regression",
                          description=COMPARE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmp_.add_argument("baseline", metavar="BASELINE")
    cmp_.add_argument("candidate", metavar="CANDIDATE")
    cmp_.add_argument("--fail-on", action="append", default=None, metavar="SPEC",
                      help="METRIC:N%%[@FIELD=VALUE,...] (repeatable; default: "
                           "time.median:10%% flops:0%% memory:5%%)")
    cmp_.add_argument("--all", action="store_true", help="list every compared row, not only regressions")


def add_gate(sub) -> None:
    gate = sub.add_parser("gate", help="run the quick headline suite and gate it against the baseline",
                          description=GATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    gate.add_argument("--against", default=None, metavar="REV",
                      help="measure git revision REV's core/ against the working tree's, here and now "
                           "(no stored baseline)")
    gate.add_argument("--force-machine", action="store_true",
                      help="compare with a stored baseline made on another machine anyway")
    gate.add_argument("--baseline", default=None,
                      help="default: results/baseline.json (cpu), results/baseline-cuda.json (cuda)")
    gate.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                      help="cpu (default; what CI gates) or cuda, for runs on a GPU machine (bf16 cases)")
    gate.add_argument("--out", default=None, help="where the gate's run is written")
    gate.add_argument("--from", dest="from_runs", action="append", default=None, metavar="RUN",
                      help="gate this existing run instead of measuring (with --update-baseline: repeat for "
                           "each of the runs the baseline is made of)")
    gate.add_argument("--fail-on", action="append", default=[], metavar="SPEC", help="extra rules")
    gate.add_argument("--update-baseline", action="store_true",
                      help="write a new baseline: the per-check medians of --runs measured runs (or of the "
                           "--from runs, at least 3)")
    gate.add_argument("--runs", type=_baseline_runs, default=3,
                      help="runs measured for --update-baseline (default 3, at least 3)")
    gate.add_argument("--threads", type=_threads, default=None)
    gate.add_argument("--recheck", type=_recheck, default=None, metavar="N",
                      help="re-measure each time regression N times and judge the median of those rechecks "
                           "(default 3; 0 with --from, whose run was measured elsewhere)")
    gate.add_argument("-k", dest="filter", action="append", default=None,
                      help="only cases whose id contains FILTER (repeat for any of several)")


def _rules(specs):
    from celora_bench.compare import Rule, RuleError

    try:
        return [Rule.parse(s) for s in specs]
    except RuleError as e:
        raise CLIError(str(e)) from None


def _print(judged, show_all: bool) -> int:
    """The findings table, the counts and the verdict line; the exit code (1: regression)."""
    from celora_bench.render import terminal

    console = _console()
    console.print(terminal.compare_table(judged.findings, show_all))
    cleared = judged.cleared
    console.print(f"{len(judged.findings)} comparisons over {judged.common} common cases: "
                  f"{len(judged.regressions)} regressions"
                  + (f" ({len(cleared)} more were over the threshold once but not when measured again)"
                     if cleared else "")
                  + f"; {len(judged.missing)} cases missing from the candidate, {len(judged.new)} new")
    for cid in judged.missing[:10]:
        console.print(f"  missing: {cid}")
    for cid in judged.new[:10]:
        console.print(f"  new: {cid}")
    if judged.cases_differ:
        console.print("the case set differs from the baseline; if intended, refresh it with "
                      "'celora-bench gate --update-baseline'")
    console.print("[bold red]REGRESSION[/]" if judged.failed else "[bold green]OK[/]")
    return 1 if judged.failed else 0


def cmd_compare(args) -> int:
    from celora_bench import gate
    from celora_bench.compare import DEFAULT_COMPARE

    rules = _rules(args.fail_on or DEFAULT_COMPARE)
    base, cand = _load(args.baseline), _load(args.candidate)
    try:
        judged = gate.judge(base, cand, rules, strict_cases=False)
    except gate.GateError as e:
        raise CLIError(str(e)) from None
    return _print(judged, args.all)


def _print_ab(findings, stem: str) -> int:
    """The A/B table (every timed quantity, and counts that changed), the counts and the verdict line."""
    from rich.table import Table

    shown = [f for f in findings if f.kind == "time" or f.value != 1 or f.regression]
    t = Table(title="A/B gate: candidate / base (time: seconds, process-nested; 90% interval)")
    for col in ("case", "component", "kind", "base", "candidate", "cand/base [90%]", "status"):
        t.add_column(col)
    for f in shown:
        unit = (lambda v: f"{v * 1e3:.3f} ms") if f.kind == "time" else (lambda v: f"{v:,.0f}")
        iv = ("no interval: samples without rounds" if f.value != f.value else
              f"{f.value:.3f}" + (f" [{f.lo:.3f}, {f.hi:.3f}]" if f.kind == "time" and f.lo is not None else ""))
        t.add_row(f.case_id, f.component, f.kind, unit(f.base), unit(f.candidate), iv,
                  f"[red]{f.status}[/]" if f.regression else f.status)
    console = _console()
    console.print(t)
    bad = [f for f in findings if f.regression]
    timed = [f for f in findings if f.kind == "time"]
    console.print(f"{len(timed)} timed and {len(findings) - len(timed)} counted comparisons: {len(bad)} "
                  f"regressions (a 90% interval wholly above 1.10); runs in {stem}.json and {stem}-base.json")
    console.print("[bold red]REGRESSION[/]" if bad else "[bold green]OK[/]")
    return 1 if bad else 0


def cmd_gate_against(args) -> int:
    from celora_bench import abgate, runner

    if args.update_baseline or args.from_runs or args.baseline:
        raise CLIError("--against measures both sides now: it takes no --baseline, --from or --update-baseline")
    if args.device != "cpu":
        raise CLIError(f"--against with --device {args.device}: the A/B gate measures on the CPU only")
    stem = os.path.splitext(args.out or runner.default_out(["gate"]))[0]
    try:
        base, cand = abgate.measure(args.against, stem, args.filter, args.threads, log=_console().print)
    except abgate.ABError as e:
        raise CLIError(str(e)) from None
    except KeyboardInterrupt:
        print(f"interrupted: the gate's partial runs are in {stem}*.json", file=sys.stderr)
        return 130
    missing = sorted({r.case.id for r in cand.rows} - {r.case.id for r in base.rows})
    for cid in missing[:10]:
        _console().print(f"  not measured at {args.against} (its core/ could not set it up): {cid}")
    return _print_ab(abgate.judge(base.rows, cand.rows), stem)


def cmd_gate(args) -> int:
    from celora_bench import gate, runner
    from celora_bench.compare import DEFAULT_GATE

    if args.against:
        return cmd_gate_against(args)

    rules = _rules(list(DEFAULT_GATE) + args.fail_on)
    device, dtype = _device_dtype(args.device, None)
    baseline = args.baseline or gate.default_baseline(device)
    froms = args.from_runs or []
    if len(froms) > 1 and not args.update_baseline:
        raise CLIError(f"--from given {len(froms)} times; gate one run at a time (several only with "
                       f"--update-baseline)")
    stem = os.path.splitext(args.out or runner.default_out(["gate"]))[0]
    try:
        if args.update_baseline:
            runs = [_load(p) for p in froms] or [gate.measure(f"{stem}-{i}.json", device, dtype, args.filter,
                                                              args.threads) for i in range(1, args.runs + 1)]
            try:
                base = gate.make_baseline(runs, baseline)
            except gate.BaselineError as e:
                raise CLIError(str(e)) from None
            print(f"baseline written: {baseline} ({len(base.rows)} rows; gated checks: medians of "
                  f"{len(runs)} runs: {', '.join(r.path for r in runs)})")
            return 0
        cand = _load(froms[0]) if froms else gate.measure(stem + ".json", device, dtype, args.filter, args.threads)
    except KeyboardInterrupt:
        print(f"interrupted: the gate's partial run is in {stem}*.json", file=sys.stderr)
        return 130
    if not os.path.exists(baseline):
        raise CLIError(f"no baseline at {baseline!r}; create it with 'celora-bench gate --update-baseline'")
    base = gate.narrow(_load(baseline), args.filter)
    cand = gate.narrow_rows(cand, args.filter)
    try:
        gate.same_machine(base, cand, args.force_machine)
    except gate.GateError as e:
        raise CLIError(str(e)) from None
    times = gate.recheck_times(args.recheck, from_run=bool(froms))
    try:
        if times and froms:
            gate.same_checkout(cand)
        judged = gate.judge(base, cand, rules, strict_cases=True, times=times, threads=args.threads,
                            log=_console().print)
    except gate.GateError as e:
        raise CLIError(str(e)) from None
    return _print(judged, False)
