"""The gpu-targets suite on the CPU (tiny sizes: every section's logic, through the runner) and its verdict."""
import os
import signal
import time

import pytest

from celora_bench import models, registry, runner
from celora_bench.suite import Options
from suites import gpu_targets
from suites.gpu_targets import attribution, common, steps

SECTIONS = ["smoke", "convert", "step-1b", "step-8b", "attribution", "kernels"]
# every timed target met by any measurement (tiny CPU rounds can even give a negative bound): the exact checks
# alone decide PASS/FAIL
LOW, HIGH = float("-inf"), float("inf")
PASSING = {"step_amdahl": LOW, "step_speedup": LOW, "attribution": LOW, "attribution_max": HIGH}


def _run(path, filt=None, sections=None):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "warm_up", lambda device: None)
        mp.setattr(runner, "calibrate", lambda ctx: {})
        for name, fn in (sections or {}).items():
            mp.setitem(gpu_targets.SECTIONS, name, (fn, gpu_targets.SECTIONS[name][1]))
        return runner.run(["gpu-targets"], Options(device="cpu"), str(path), filt=filt, tune_malloc=False)


def _verdict(rows, targets=None):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(common, "TARGETS", {**PASSING, **(targets or {})})
        return registry.get("gpu-targets").verdict(rows)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("gpu") / "r.json")


def test_passing_targets_cover_every_target():
    assert set(PASSING) == set(common.TARGETS)


def test_cases_take_gpu_sizes_on_cuda_and_tiny_ones_on_the_cpu():
    gpu = gpu_targets.cases(Options(device="cuda", dtype="bfloat16"))
    cpu = gpu_targets.cases(Options(device="cpu"))
    assert [c.provider for c in gpu] == [c.provider for c in cpu]
    assert list(dict.fromkeys(c.provider for c in cpu)) == SECTIONS == list(gpu_targets.SECTIONS)
    assert {c.param("sizes") for c in gpu} == {"gpu"} and {c.param("sizes") for c in cpu} == {"tiny"}
    kernels = [c for c in gpu if c.provider == "kernels"]
    # largest first, so a cut keeps gate/up and down
    assert [c.layer for c in kernels] == ["gate_proj+up_proj", "down_proj", "q_proj+o_proj", "k_proj+v_proj"]
    assert (kernels[1].model, kernels[1].m, kernels[1].n, kernels[1].tokens) == ("llama-3.1-8b", 4096, 14336, 8192)
    steps = [c for c in gpu if c.provider == "step-1b"]       # one case per CE-LoRA provider, the headline first
    assert [c.param("versus") for c in steps] == ["all r0=0 cached", "all r0=14 lean"]
    for section in SECTIONS:                                   # gpu_check.sh's -k /NAME/ picks one section
        assert {c.provider for c in gpu if f"/{section}/" in c.id} == {section}


def test_every_section_runs_on_the_cpu_and_its_checks_pass_when_every_target_is_met(full):
    assert full.status == "complete" and full.errors == []
    assert [c.provider for c in dict.fromkeys(r.case for r in full.rows)] == [
        c.provider for c in gpu_targets.cases(Options(device="cpu"))]
    checks = _verdict(full.rows)
    judged = {c.scope.split()[0] if c.check == common.EXACT_CHECK else c.check.id for c in checks
              if c.status != "INFO"}
    assert {"smoke", "tiny", "tiny-byte"} <= judged                    # smoke's facts, the steps', convert's
    assert {c.status for c in checks} <= {"PASS", "INFO"}, [c for c in checks if c.status not in ("PASS", "INFO")]
    # smoke 2, steps 1 per case (4 cases), convert 2, attribution's cross-check 1 per row (2)
    assert sum(c.kind == "exact" for c in checks) == 2 + 4 + 2 + 2


def test_the_layer_figures_are_backward_breakdowns_cuda_cases():
    """The GPU targets of one layer (speed-up against its Amdahl bound, the kept-column product against its
    line) are judged once, by backward-breakdown on CUDA: its quick cases hold what this suite's layers
    section measured (the 8B shapes largest first, N = 8192, p = 0.5 and the paper's ratio at r0 = 0 and 14,
    cached rows at p = 0.5), and this suite no longer times a layer."""
    from suites import backward_breakdown
    bb = backward_breakdown.cases(Options(device="cuda", dtype="bfloat16"))
    assert list(dict.fromkeys(c.layer for c in bb)) == ["gate_proj+up_proj", "down_proj", "q_proj+o_proj",
                                                        "k_proj+v_proj"]
    assert {(c.model, c.tokens, c.rank) for c in bb} == {("llama-3.1-8b", 8192, 16)}
    for layer in ("gate_proj+up_proj", "down_proj", "q_proj+o_proj", "k_proj+v_proj"):
        got = {(c.provider, c.keep_ratio, c.svd_rank, c.cache_rows) for c in bb if c.layer == layer}
        ps = {0.5} | {backward_breakdown.PAPER_RATIOS[p] for p in models.projections_of(layer)
                      if p in backward_breakdown.PAPER_RATIOS}
        assert len(ps) == 2           # each shape's projections share one paper ratio
        assert {("dense", 1.0, 0, False), ("peft", 1.0, 0, False), ("celora", 0.5, 0, True)} <= got
        assert {("celora", p, r0, False) for p in ps for r0 in (0, 14)} <= got
    assert "layers" not in gpu_targets.SECTIONS and not any(c.id in ("kept", "layer-amdahl")
                                                            for c in registry.get("gpu-targets").CHECKS)


def test_steps_bound_from_the_profiled_share(full):
    checks = _verdict(full.rows)
    for which in ("step-1b", "step-8b"):
        share = [c for c in checks if which in c.scope and c.metric.startswith("G_y·W0 share")]
        assert len(share) == 2 and all(0 < c.value < 1 for c in share)       # one profile per case
        bounds = [c for c in checks if which in c.scope and c.metric.startswith("speed-up / bound")]
        assert len(bounds) == 2 and all(c.target == ">= -inf" for c in bounds)
        speed = [c for c in checks if which in c.scope and c.check == steps.SPEEDUP_CHECK]
        assert len(speed) == 2 and all(c.target == ">= -inf" and c.lo is not None for c in speed)


def test_convert_reuses_its_svd_cache(full):
    row = next(r for r in full.rows if r.component == "convert")
    assert row.extra["ran"] and row.extra["svds"] == row.extra["layers"] == 4 * 7 and row.extra["svds_cached"] == 0


def test_a_target_missed_fails_and_only_its_checks(full):
    failed = [c for c in _verdict(full.rows, {"attribution": 1e9}) if c.status == "FAIL"]
    assert len(failed) == 2 and all(c.check is attribution.ATTRIBUTION_CHECK for c in failed)
    # two-sided: a count above the events fails too (kernels on one stream cannot outlast them)
    failed = [c for c in _verdict(full.rows, {"attribution_max": 1e-9}) if c.status == "FAIL"]
    assert len(failed) == 2 and all(c.check is attribution.ATTRIBUTION_CHECK and c.target.startswith("<=")
                                    for c in failed)
    # the step must beat dense besides reaching its fraction of the bound
    failed = [c for c in _verdict(full.rows, {"step_speedup": 1e9}) if c.status == "FAIL"]
    assert len(failed) == 4 and all(c.check == steps.SPEEDUP_CHECK for c in failed)


def test_a_fact_that_is_false_fails(full):
    from dataclasses import replace
    rows = [replace(r, extra={**r.extra, "ok": False}) if "ok" in r.extra else r for r in full.rows]
    failed = [c for c in _verdict(rows) if c.status == "FAIL"]
    assert len(failed) == 4 and {c.scope.split()[0] for c in failed} == {"smoke", "attribution"}


def test_a_section_that_raises_is_recorded_and_the_next_runs(tmp_path):
    def boom(case, ctx):
        raise RuntimeError("injected")
    run = _run(tmp_path / "r.json", ["/smoke/", "/attribution/", "/q_proj+o_proj/kernels/"], {"attribution": boom})
    assert run.status == "complete-with-errors"
    assert [e["error"] for e in run.errors] == ["RuntimeError: injected"] and "attribution" in run.errors[0]["case_id"]
    assert {r.case.provider for r in run.rows} == {"smoke", "kernels"}


def test_sigterm_stops_the_run_and_keeps_what_finished(tmp_path):
    def killed(case, ctx):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(runner.Stopped):
        _run(tmp_path / "r.json", ["/smoke/", "/attribution/", "/convert/"], {"attribution": killed})
    from celora_bench import results
    kept = results.load(str(tmp_path / "r.json"))
    # the cases before the cut (convert runs early, before attribution) keep their rows, timed ones too
    assert kept.status == "partial" and {r.case.provider for r in kept.rows} == {"smoke", "convert"}
    assert {c["status"] for c in kept.verdicts["gpu-targets"]} == {"PASS", "INFO"}
    assert {r.case.provider for r in kept.rows if r.samples} == {"smoke", "convert"}
    assert signal.getsignal(signal.SIGTERM) is before
