"""core-forms: both G_x forms of one configuration timed together by the runner, fused/split reported from
rows paired by round, and a layer that ran another form than its case asked for fails."""
from dataclasses import replace

import pytest

from celora_bench import registry, runner
from celora_bench.suite import Options
from celora_bench.timing import TimingBudget
from suites import core_forms


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "warm_up", lambda device: None)
        mp.setattr(runner, "calibrate", lambda ctx: {})
        return runner.run(["core-forms"], Options(device="cpu", model="tiny"),
                          str(tmp_path_factory.mktemp("forms") / "r.json"), filt="/q_proj/", tune_malloc=False,
                          budget=TimingBudget(all_rounds=1, rounds=3, stages=(), block_s=0.002))


def test_the_sweep_is_every_shape_mode_r0_and_form():
    cs = core_forms.cases(Options(device="cpu"))
    assert len(cs) == 3 * 2 * 2 * 2 and {c.tokens for c in cs} == {1024}
    assert {c.tokens for c in core_forms.cases(Options(mode="full", device="cpu"))} == {2048}
    assert {(c.layer, c.m, c.n) for c in cs} == {("q_proj", 2048, 2048), ("gate_proj", 8192, 2048),
                                                  ("down_proj", 2048, 8192)}
    groups = {}
    for c in cs:
        groups.setdefault(core_forms.group_key(c), []).append(c.param("grad_x_form"))
    assert len(groups) == 12 and all(sorted(g) == ["fused", "split"] for g in groups.values())


def test_each_group_reports_fused_over_split_paired_by_round_and_every_form_as_asked(run):
    assert run.status == "complete" and not run.errors
    checks = registry.get("core-forms").verdict(run.rows)
    exact = [c for c in checks if c.kind == "exact"]
    assert len(exact) == 8 and all(c.status == "PASS" for c in exact)
    ratios = [c for c in checks if c.check == core_forms.RATIO_CHECK and c.rounds]
    assert sorted(c.metric for c in ratios) == ["G_x part"] * 4 + ["whole backward"] * 4
    assert all(c.status == "INFO" and c.value > 0 and c.rounds == 3 and c.lo is not None for c in ratios)
    summary = [c for c in checks if c.check == core_forms.RATIO_CHECK][-1]      # the ratios come first
    assert summary.metric == "whole backward, median" and "the default form here: split" in summary.detail
    fused = {r.case.param("grad_x_form") for r in run.rows if r.component == "bwd.grad_x_lora"}
    assert fused == {"split"}                    # the fused form has G_h·A inside its one GEMM


def test_a_layer_that_ran_another_form_fails(run):
    def as_split(r):        # the profiled step of a fused case shows G_h·A in its own scope: split ran
        return replace(r, extra={**r.extra, "flops_by_scope": {**r.extra["flops_by_scope"], "bwd.grad_x_lora": 1}})
    rows = [as_split(r) if r.component == "step.alloc" and r.case.param("grad_x_form") == "fused" else r
            for r in run.rows]
    failed = [c for c in registry.get("core-forms").verdict(rows) if c.status == "FAIL"]
    assert len(failed) == 4 and all(c.metric == "fused form" for c in failed)
