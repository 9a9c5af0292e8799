"""The suites, by name. Adding a suite: one module in suites/ and one line here."""
from __future__ import annotations

import importlib

SUITES = {
    "backward-breakdown": "suites.backward_breakdown",
    "model-step": "suites.model_step",
    "approx-error": "suites.approx_error",
    "convergence": "suites.convergence",
}


class UnknownSuite(ValueError):
    """A suite name that is not registered."""


def get(name: str):
    if name not in SUITES:
        raise UnknownSuite(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}")
    return importlib.import_module(SUITES[name])
