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


class CLIError(Exception):
    """Bad input: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        head, sep, rest = message.partition(": ")
        if head.startswith("argument ") and rest.startswith(head.split()[-1].split("/")[-1] + " "):
            message = rest                      # "argument --x: --x 0 is invalid" -> "--x 0 is invalid"
        raise CLIError(message)


# ---- argparse types: each rejects bad input with one line naming its flag ---------------------

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


# ---- small helpers every command group shares ------------------------------------------------

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


# ---- the commands: one module per group, each holding its parsers and thin cmd_* functions ----
# (imported here, below the helpers above, which they import)

from celora_bench.cli import gate, results, run  # noqa: E402

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
