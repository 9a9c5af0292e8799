"""The suites, by name: the harness's only route into suites/. Adding a suite: one module (or package)
in suites/ that provides celora_bench.suite.Suite, and one line here."""
from __future__ import annotations

import importlib
from functools import cache, wraps

from celora_bench import intervals
from celora_bench.suite import Loaded

SUITES = {
    "backward-breakdown": "suites.backward_breakdown",
    "model-step": "suites.model_step",
    "approx-error": "suites.approx_error",
    "convergence": "suites.convergence",
    "gpu-targets": "suites.gpu_targets",
    "core-forms": "suites.core_forms",
}
DEFAULT_JUDGED = ("fwd+bwd", "bwd.grad_x_frozen")


class UnknownSuite(ValueError):
    """A suite name that is not registered."""


class BadSuite(TypeError):
    """A registered module that does not provide the suite interface (celora_bench.suite.Suite)."""


def names() -> list[str]:
    return list(SUITES)


@cache
def get(name: str) -> Loaded:
    if name not in SUITES:
        raise UnknownSuite(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}")
    return load(importlib.import_module(SUITES[name]))


def checks_of(run, suite: str) -> list:
    """The suite's verdict over a run's rows (celora_bench.results.Run), with the current rules: partial and
    merged runs get one too; none for a suite without rows or not registered here."""
    rows = [r for r in run.rows if r.case.suite == suite]
    if not rows:
        return []
    try:
        return get(suite).verdict(rows, run.machine_info)
    except UnknownSuite:
        return []


def load(mod) -> Loaded:
    """The module as a Loaded suite: required members checked, optional ones defaulted (celora_bench.suite)."""
    missing = [m for m in ("NAME", "DESCRIPTION", "cases", "verdict") if not hasattr(mod, m)]
    setup, run_case = getattr(mod, "setup", None), getattr(mod, "run_case", None)
    if missing or (setup is None) == (run_case is None):
        what = ", ".join(missing) if missing else "exactly one of setup and run_case"
        raise BadSuite(f"suite module {mod.__name__} lacks {what} (see celora_bench/suite.py)")
    return Loaded(
        NAME=mod.NAME, DESCRIPTION=mod.DESCRIPTION, QUESTION=getattr(mod, "QUESTION", mod.DESCRIPTION),
        DISTRIBUTED=getattr(mod, "DISTRIBUTED", False), FSDP=getattr(mod, "FSDP", False),
        JUDGED=tuple(getattr(mod, "JUDGED", DEFAULT_JUDGED)),
        PLOT_CAPTIONS=dict(getattr(mod, "PLOT_CAPTIONS", {})), WORKERS=bool(getattr(mod, "WORKERS", False)),
        cases=mod.cases, verdict=_with_run_sd(mod.verdict), setup=setup, run_case=run_case,
        group_key=getattr(mod, "group_key", _own_group), tables=getattr(mod, "tables", _no_tables),
        plots=getattr(mod, "plots", _no_plots), headline=getattr(mod, "headline", _no_headline))


def _with_run_sd(verdict):
    """The suite's verdict judged with the between-run sd its run recorded (machine_info["run_sd"]; none in
    files from before it was recorded), so a stored verdict is reproduced whatever the current default."""
    @wraps(verdict)
    def judged(rows, machine=None):
        with intervals.run_effect((machine or {}).get("run_sd", 0.0)):
            return verdict(rows, machine)
    return judged


def _own_group(case):
    return case.id


def _no_tables(rows) -> list:
    return []


def _no_plots(rows, out_dir: str) -> list[str]:
    return []


def _no_headline(checks) -> list:
    return []
