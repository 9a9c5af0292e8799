"""The headline cases as pytest-benchmark benchmarks.

    pytest benchmarks --benchmark-only --benchmark-autosave
    pytest benchmarks --benchmark-only --benchmark-compare --benchmark-compare-fail=median:10%

Each benchmark is one (case, component) of the quick backward-breakdown suite:
the same setup(case) as the suite, FLOPs (2·m·n·k), memory, provider and
component in extra_info. CELORA_BENCH_MODEL picks the model shapes
(default llama-3.2-1b); -k narrows the set.
"""
import os

import pytest

from celora_bench.suite import Options
from suites import backward_breakdown

COMPONENTS = ("fwd+bwd", "bwd.grad_x_frozen")
MODEL = os.environ.get("CELORA_BENCH_MODEL", "llama-3.2-1b")
CASES = [c for c in backward_breakdown.cases(Options(mode="quick", model=MODEL))
         if c.provider != "celora" or (c.svd_rank == 0 and not c.cache_rows)]
PARAMS = [pytest.param(c, comp, id=f"{c.layer}-{c.provider}-p{c.keep_ratio:g}-{comp}")
          for c in CASES for comp in COMPONENTS if comp == "fwd+bwd" or c.provider != "peft"]


@pytest.mark.parametrize("case,component", PARAMS)
def test_headline(benchmark, case, component):
    target = backward_breakdown.setup(case)
    fn = {**target.parts, **target.whole}[component]
    benchmark.extra_info.update({
        "case_id": case.id, "provider": case.provider, "component": component, "layer": case.layer,
        "keep_ratio": case.keep_ratio, "tokens": case.tokens, "rank": case.rank,
        "flops": target.analytic.get(component), "flops_convention": "2·m·n·k per matmul",
        "state_bytes": target.state_bytes,
    })
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1, iterations=1)
