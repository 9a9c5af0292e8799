"""celora-bench show, export, plot, report, merge, reverdict: the commands that read results files."""
from __future__ import annotations

import os
import sys

from celora_bench.cli.common import CLIError, _console, _load


def add_show(sub) -> None:
    show = sub.add_parser("show", help="render a saved run's tables and verdict")
    show.add_argument("run", metavar="RUN")
    show.add_argument("--detail", action="store_true",
                      help="every table and the full verdict (default: the short answer `run` ends with)")


def add_export(sub) -> None:
    exp = sub.add_parser("export", help="export a run's rows: csv, md, latex, json, html")
    exp.add_argument("run", metavar="RUN")
    exp.add_argument("--format", required=True, choices=("csv", "md", "latex", "json", "html"))
    exp.add_argument("--out", default=None, help="file (default: standard output)")
    exp.add_argument("--table", choices=("rows", "verdict", "roofline"), default="rows",
                     help="rows (default): every measured row; verdict: every check with its interval; "
                          "roofline: every timed component against the run's calibrated peaks")


def add_reverdict(sub) -> None:
    rev = sub.add_parser("reverdict", help="recompute the verdicts stored in results files with the current "
                                           "rules (rows untouched); --check only reports stale ones")
    rev.add_argument("runs", nargs="+", metavar="RUN")
    rev.add_argument("--check", action="store_true", help="exit 1 if any file's stored verdict is stale")


def add_merge(sub) -> None:
    merge = sub.add_parser("merge", help="join the parts of a sharded run (--shard i/n)")
    merge.add_argument("runs", nargs="+", metavar="RUN")
    merge.add_argument("--out", required=True, help="the merged results file")


def add_plot(sub) -> None:
    plot = sub.add_parser("plot", help="PNG plots of a run")
    plot.add_argument("run", metavar="RUN")
    plot.add_argument("--out", default=None, help="folder (default: next to the run file)")


def add_report(sub) -> None:
    rep = sub.add_parser("report", help="one self-contained HTML page of one or more runs")
    rep.add_argument("runs", nargs="+", metavar="RUN")
    rep.add_argument("--out", default=None, help="the .html file (default: next to a single RUN, same stem)")


def cmd_show(args) -> int:
    from celora_bench.render import answer, terminal

    run = _load(args.run)
    if args.detail:
        terminal.render(run, _console(), detail=True)
    else:
        answer.render(run, _console())
    return 0


def cmd_export(args) -> int:
    from celora_bench.render import export

    text = export.export(_load(args.run), args.format, args.table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_plot(args) -> int:
    from celora_bench.render import figures

    run = _load(args.run)
    out = args.out or os.path.splitext(args.run)[0] + "-plots"
    paths = figures.plot(run, out)
    for path in paths:
        print(path)
    if not paths:
        print(f"no plots: {args.run!r} holds no layer-level or accuracy rows ('celora-bench report' draws "
              f"model-step's step phases)")
    return 0


def cmd_report(args) -> int:
    from celora_bench.render import page

    if args.out is None and len(args.runs) > 1:
        raise CLIError("several runs need --out FILE.html, the page to write")
    runs = [_load(p) for p in args.runs]
    out = args.out or os.path.splitext(args.runs[0])[0] + ".html"
    if os.path.isdir(out):
        raise CLIError(f"--out {out!r} is a folder; allowed: a file path such as report.html")
    try:
        print(f"report: {page.write(runs, out)}")
    except OSError as e:
        raise CLIError(f"cannot write --out {out!r}: {e.strerror}") from None
    return 0


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
