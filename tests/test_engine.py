"""The measurement engine: timing stats, FLOP counting, memory, results files, the runner."""
import json
import os
import statistics

import pytest
import torch
from torch import nn

import core
from celora_bench import flops, memory, results, runner
from celora_bench.cases import Case, Row
from celora_bench.measure import measure_group
from celora_bench.rounds import time_rounds
from celora_bench.suite import CheckId, Options, Suite
from celora_bench.timing import TimeStats, TimingBudget
from core.flops import COMPONENTS, layer_flops
from suites import layer_bench

FAST = TimingBudget(all_rounds=2, rounds=4, stages=(), block_s=0.002)


def small_case(provider="dense", **kw):
    return Case("backward-breakdown", provider, "tiny", "q_proj", 48, 32, 24, 4, **kw)


def test_time_stats_derive_from_raw_samples():
    s = TimeStats((1.0, 2.0, 3.0, 4.0, 100.0))
    assert s.median == 3.0 and s.min == 1.0 and s.count == 5
    q = statistics.quantiles(s.samples, n=4, method="inclusive")
    assert s.iqr == q[2] - q[0] and s.spread
    assert not TimeStats((1.0, 1.01, 0.99, 1.0)).spread


def test_time_rounds_keeps_one_sample_per_round():
    stats = time_rounds([lambda: torch.mm(torch.ones(8, 8), torch.ones(8, 8))] * 2, "cpu", FAST, 1, rounds=5)
    assert [s.count for s in stats] == [5, 5] and all(t > 0 for s in stats for t in s.samples)


@pytest.mark.parametrize("m,n,N,r", [(48, 32, 24, 4), (64, 96, 17, 8), (512, 128, 64, 16)])
@pytest.mark.parametrize("p,r0,cache", [(1.0, 0, False), (0.5, 0, False), (0.25, 3, False), (0.5, 5, True)])
def test_counted_flops_equal_analytic_per_component(m, n, N, r, p, r0, cache):
    layer = core.CELoRALinear.from_linear(nn.Linear(n, m), core.CELoRAConfig(
        r=r, keep_ratio=p, svd_rank=r0, cache_rows=cache))
    x = torch.randn(N, n, requires_grad=True)
    gy = torch.randn(N, m)

    def step():
        layer.refresh_index()
        layer(x).backward(gy)

    counted = flops.profile_scopes(step, COMPONENTS + ("selection",)).flops
    k = None if p == 1.0 else layer.k
    analytic = layer_flops(N, m, n, r, k, layer.r0, cache)
    for comp in COMPONENTS + ("selection",):
        assert counted.get(comp, 0) == analytic[comp], comp
    assert "other" not in counted
    assert flops.torch_total(step) == sum(analytic.values())


def test_flop_formulas_by_hand():
    # 2·m·n·k per matmul, written out: q_proj of Llama-3.2-1B at N=2048, r=16
    f = layer_flops(2048, 2048, 2048, 16)
    assert f["bwd.grad_x_frozen"] == 2 * 2048 * 2048 * 2048
    assert f["fwd.lora"] == 2 * 2048 * 16 * (2048 + 2048)
    amm = layer_flops(2048, 2048, 2048, 16, k=1024, r0=14, cache_rows=True)
    assert amm["bwd.grad_x_frozen"] == 2 * 2048 * 1024 * 2048 + 2 * 2048 * 14 * 2048
    assert amm["bwd.grad_h"] == 2 * 2048 * 2048 * 32          # G_y [s·B | C | 0]: 16 + 14 padded to 32
    assert amm["selection"] == 2 * 1024 * 14 * 2048
    lean = layer_flops(2048, 2048, 2048, 16, k=1024, r0=14)   # C = B0 with rows I zeroed: no extra product
    assert lean["bwd.grad_x_frozen"] == amm["bwd.grad_x_frozen"]
    assert round(core.flops.frozen_share(1, 2048, 2048, 16), 2) == 0.49


def test_fvcore_sees_peft_forward_but_not_our_function():
    """The note is a callable until prepare makes it (a timing-only worker never traces)."""
    from celora_bench.measure import prepare

    target = layer_bench.setup(small_case("peft"))
    assert callable(target.notes["fwd"])
    prepare([(small_case("peft"), target)], 0)
    assert target.notes["fwd"].startswith("fvcore: ")
    ours = layer_bench.setup(small_case("dense"))
    assert "cannot trace" in ours.notes["fwd"]()


@pytest.mark.skipif(not memory.rss_supported(), reason="needs /proc/self/clear_refs (Linux)")
def test_rss_phase_sees_a_large_allocation():
    got = memory.rss_phase(lambda: torch.ones(64 * 2**20 // 4 * 4))   # 256 MiB
    assert got > 200 * 2**20


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_phase_counts_allocated_bytes():
    got = memory.cuda_phase(lambda: torch.ones(2**20, device="cuda"), "cuda")
    assert got >= 4 * 2**20


def test_measure_one_case_end_to_end():
    case = small_case("celora", keep_ratio=0.5, svd_rank=2)
    rows = measure_group([(case, layer_bench.setup(case))], FAST, 1)
    by = {r.component: r for r in rows}
    assert set(COMPONENTS) <= set(by) and {"selection", "selection.amortized", "fwd", "bwd", "fwd+bwd",
                                           "state"} <= set(by)
    for comp in COMPONENTS:
        assert by[comp].flops_counted == by[comp].flops_analytic
        assert by[comp].time.count == FAST.rounds and by[comp].rounds == tuple(range(FAST.rounds))
    assert by["fwd+bwd"].flops_counted == by["fwd+bwd"].flops_analytic
    amort = by["selection.amortized"].time.median
    assert amort == pytest.approx(by["selection"].time.median / case.tau)
    assert by["state"].mem_bytes > 0


def test_results_round_trip_and_atomic_file(tmp_path):
    path = str(tmp_path / "run.json")
    run = results.Run(path=path, run={"suites": ["x"]})
    row = Row(small_case(), "fwd", (0.1, 0.2, 0.3), 10, 10, 5, "bytes")
    run.add([row])
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []
    back = results.load(path)
    assert back.rows == [row] and back.rows[0].case.id == row.case.id
    d = json.load(open(path))
    assert d["rows"][0]["samples"] == [0.1, 0.2, 0.3] and d["rows"][0]["median"] == 0.2


@pytest.mark.parametrize("content,message", [
    ('{"schema": "celora-bench/results", "version": 1, "rows": [', "truncated JSON"),
    ('{"benchmarks": []}', "not a celora-bench results file"),
    ('{"schema": "celora-bench/results", "version": 99, "rows": []}', "version 99"),
    ('{"schema": "celora-bench/results", "version": 1, "rows": [{"case": 1}]}', "malformed row"),
])
def test_load_refuses_bad_files_in_one_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(results.ResultsError, match=message) as e:
        results.load(str(path))
    assert "\n" not in str(e.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(results.ResultsError, match="cannot read"):
        results.load(str(tmp_path / "nope.json"))


def fake_suite(cls) -> Suite:
    """A stand-in class declared as the Suite it stands for."""
    return Suite(NAME=cls.NAME, DESCRIPTION=cls.DESCRIPTION, cases=cls.cases, verdict=cls.verdict,
                 run_case=cls.run_case, CHECKS=getattr(cls, "CHECKS", ()))


class _Suite:
    """A stand-in suite whose third case is interrupted."""

    NAME, DESCRIPTION = "fake", "a stand-in"
    calls = []

    @staticmethod
    def cases(opts):
        return [Case("fake", "dense", "tiny", "q", 4, 4, t, 2) for t in (1, 2, 3, 4)]

    @staticmethod
    def run_case(case, ctx):
        _Suite.calls.append(case.tokens)
        if case.tokens == 3 and _Suite.interrupt:
            raise KeyboardInterrupt
        if case.tokens == 4 and _Suite.crash:
            raise RuntimeError("out of memory")
        return [Row(case, "fwd", (0.1,))]

    @staticmethod
    def verdict(rows, machine=None):
        return []


def test_interrupt_keeps_rows_and_resume_skips_them(tmp_path, monkeypatch):
    from celora_bench import registry
    monkeypatch.setattr(registry, "get", lambda name: fake_suite(_Suite))
    monkeypatch.setattr(runner, "warm_up", lambda device: None)
    monkeypatch.setattr(runner, "calibrate", lambda ctx: {})
    path = str(tmp_path / "r.json")
    _Suite.calls, _Suite.interrupt, _Suite.crash = [], True, True
    with pytest.raises(KeyboardInterrupt):
        runner.run(["fake"], Options(), path)
    kept = results.load(path)
    assert kept.status == "interrupted" and len(kept.rows) == 2
    _Suite.calls, _Suite.interrupt = [], False
    done = runner.run(["fake"], Options(), path, resume=True)
    assert _Suite.calls == [3, 4]                       # cases 1 and 2 were not measured again
    assert len(done.rows) == 3 and done.errors[0]["error"] == "RuntimeError: out of memory"
    assert done.status == "complete-with-errors"


def test_a_case_that_raises_any_error_is_recorded_and_the_next_case_runs(tmp_path, monkeypatch):
    """An ImportError (a kernel that cannot compile), a TypeError (a bug in one section): recorded, not fatal."""
    from celora_bench import registry

    class Raising(_Suite):
        @staticmethod
        def run_case(case, ctx):
            if case.tokens == 1:
                raise ImportError("triton: cannot compile the gather")
            if case.tokens == 2:
                raise TypeError("a bug in one section")
            return [Row(case, "fwd", (0.1,))]
    monkeypatch.setattr(registry, "get", lambda name: fake_suite(Raising))
    monkeypatch.setattr(runner, "warm_up", lambda device: None)
    monkeypatch.setattr(runner, "calibrate", lambda ctx: {})
    done = runner.run(["fake"], Options(), str(tmp_path / "r.json"))
    assert [e["error"] for e in done.errors] == ["ImportError: triton: cannot compile the gather",
                                                 "TypeError: a bug in one section"]
    assert len(done.rows) == 2 and done.status == "complete-with-errors"


def test_every_suite_declares_a_suite_and_the_declaration_fills_its_defaults():
    from celora_bench import registry

    for name in registry.names():                      # every registered suite declares SUITE = Suite(...)
        s = registry.get(name)
        assert isinstance(s, Suite) and s.NAME == name and s.QUESTION and callable(s.tables) and callable(s.plots)
        assert s.JUDGED or not s.timed                  # a timed suite names the components its verdict reads
    s = fake_suite(_Suite)
    assert not s.timed and s.group_key(_Suite.cases(None)[0]) == _Suite.cases(None)[0].id and s.plots([], ".") == []
    assert s.QUESTION == "a stand-in" and not s.gated_case(_Suite.cases(None)[0])
    with pytest.raises(registry.BadSuite, match="exactly one of setup and run_case"):
        Suite(NAME="x", DESCRIPTION="y", cases=lambda o: [], verdict=lambda r, m=None: [], CHECKS=())
    twice = (CheckId("a", "A"), CheckId("a", "B"))
    with pytest.raises(registry.BadSuite, match="declares a check id twice"):
        Suite(NAME="x", DESCRIPTION="y", cases=lambda o: [], verdict=lambda r, m=None: [], CHECKS=twice,
              run_case=lambda c, ctx: [])


def test_the_registry_refuses_a_package_without_its_declaration(monkeypatch):
    import types

    from celora_bench import registry
    monkeypatch.setitem(registry.SUITES, "no-decl", "fake_pkg_no_decl")
    monkeypatch.setitem(__import__("sys").modules, "fake_pkg_no_decl", types.ModuleType("fake_pkg_no_decl"))
    registry.get.cache_clear()
    try:
        with pytest.raises(registry.BadSuite, match="declares no SUITE"):
            registry.get("no-decl")
    finally:
        registry.get.cache_clear()
