"""The suites, by name: the harness's only route into suites/. Adding a suite: a package (or module) in
suites/ that declares `SUITE = celora_bench.suite.Suite(...)`, and one line here."""
from __future__ import annotations

import importlib
from dataclasses import replace
from functools import cache, wraps

from celora_bench import intervals
from celora_bench.suite import BadSuite, Suite

SUITES = {
    "backward-breakdown": "suites.backward_breakdown",
    "model-step": "suites.model_step",
    "approx-error": "suites.approx_error",
    "convergence": "suites.convergence",
    "gpu-targets": "suites.gpu_targets",
    "core-forms": "suites.core_forms",
}
HEADLINE = "backward-breakdown"     # the suite the README's first command runs and `gate` measures
__all__ = ["SUITES", "HEADLINE", "BadSuite", "UnknownSuite", "names", "get", "checks_of", "declared"]


class UnknownSuite(ValueError):
    """A suite name that is not registered."""


def names() -> list[str]:
    return list(SUITES)


@cache
def get(name: str) -> Suite:
    if name not in SUITES:
        raise UnknownSuite(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}")
    suite = getattr(importlib.import_module(SUITES[name]), "SUITE", None)
    if not isinstance(suite, Suite) or suite.NAME != name:
        raise BadSuite(f"{SUITES[name]} declares no SUITE = Suite(NAME={name!r}, ...) (see celora_bench/suite.py)")
    return declared(suite)


def declared(suite: Suite) -> Suite:
    """The suite as the harness uses it: its verdict judged with the between-run sd its run recorded
    (machine_info["run_sd"]; none in files from before it was recorded), so a stored verdict is reproduced
    whatever the current default, and its checks in the order the suite declares (Suite.CHECKS)."""
    verdict = suite.verdict

    @wraps(verdict)
    def judged(rows, machine=None):
        with intervals.run_effect((machine or {}).get("run_sd", 0.0)):
            return suite.ordered(verdict(rows, machine))
    return replace(suite, verdict=judged)


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
