"""celora-bench: run suites, show, export and plot their results, compare and gate runs."""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("KINETO_LOG_LEVEL", "5")   # the profiler's start/stop chatter
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

# ---- the commands: one module per group, each holding its parsers and thin cmd_* functions ----

from celora_bench.cli import gate, results, run  # noqa: E402
from celora_bench.cli.common import EPILOG, CLIError, Parser  # noqa: E402
from celora_bench.cli.common import _device_dtype as _device_dtype  # noqa: E402

COMMANDS = {"list": run.cmd_list, "run": run.cmd_run, "show": results.cmd_show, "export": results.cmd_export,
            "plot": results.cmd_plot, "compare": gate.cmd_compare, "gate": gate.cmd_gate,
            "merge": results.cmd_merge, "reverdict": results.cmd_reverdict, "calibrate": run.cmd_calibrate,
            "fetch-model": run.cmd_fetch_model, "report": results.cmd_report}


def build_parser() -> Parser:
    ap = Parser(prog="celora-bench", description=__doc__, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", parser_class=Parser, metavar="COMMAND")
    # in the order 'celora-bench -h' lists them
    run.add_list(sub)
    run.add_run(sub)
    results.add_show(sub)
    results.add_export(sub)
    gate.add_compare(sub)
    gate.add_gate(sub)
    run.add_calibrate(sub)
    results.add_reverdict(sub)
    results.add_merge(sub)
    results.add_plot(sub)
    run.add_fetch_model(sub)
    results.add_report(sub)
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
