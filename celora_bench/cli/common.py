"""What every command group of the CLI shares: the help epilog, the one-line error, the parser that raises
it, argparse types that name their flag, the console, loading a results file, device and dtype."""
from __future__ import annotations

import argparse
import os

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


def _workers(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--workers {v!r} is invalid; allowed: an integer >= 1")
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
    from celora_bench.gate import MIN_BASELINE_RUNS
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < MIN_BASELINE_RUNS:
        raise argparse.ArgumentTypeError(f"--runs {v!r} is invalid; allowed: an integer >= {MIN_BASELINE_RUNS}")
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
