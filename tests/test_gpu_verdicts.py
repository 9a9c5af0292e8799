"""gpu-targets' verdicts on rows written by hand (real targets): the step must beat dense besides reaching 0.8 of
its bound, attribution is judged both ways, and the step section times by events without profiling rounds."""
import pytest

from celora_bench import timing
from celora_bench.cases import Case, Row
from celora_bench.suite import Options
from suites import gpu_targets
from suites.gpu_targets import attribution, common, steps

ROUNDS = 7


def _case(section: str) -> Case:
    return next(c for c in gpu_targets.cases(Options(device="cuda", dtype="bfloat16")) if c.provider == section)


def _row(case, name, ms, jitter=0.002, **extra):
    samples = tuple(ms * 1e-3 * (1 + jitter * ((i % 3) - 1)) for i in range(ROUNDS))
    return Row(case, name, samples, rounds=tuple(range(ROUNDS)), extra=extra)


def _step_rows(dense_ms, celora_ms, share=0.2):
    case = _case("step-1b")
    prov = case.param("versus")
    profile = Row(case, steps.PROFILE, extra={"seconds_by_scope": {"bwd.grad_x_frozen": share},
                                              "profiled_wall_s": 1.0, "profiled_device_s": 1.0})
    return case, [profile, _row(case, f"step {steps.DENSE}", dense_ms),
                  _row(case, f"step {prov}", celora_ms, p=0.5, layers=112)]


def test_a_step_slower_than_dense_fails_though_it_reaches_08_of_its_bound():
    # s = 0.2, p = 0.5: bound 1/(1 - 0.2 + 0.1) = 1.111; 100 / 110 ms = 0.909x = 0.82 of the bound
    case, rows = _step_rows(100.0, 110.0)
    by = {c.check: c for c in steps.verdict(case, rows) if c.kind == "measured"}
    assert by[steps.STEP_CHECK].status == "PASS" and by[steps.STEP_CHECK].value == pytest.approx(0.818, abs=0.01)
    assert by[steps.SPEEDUP_CHECK].status == "FAIL" and by[steps.SPEEDUP_CHECK].value == pytest.approx(0.909, abs=0.01)
    case, rows = _step_rows(100.0, 92.0)                       # 1.087x: 0.98 of the bound and faster than dense
    assert {c.status for c in steps.verdict(case, rows) if c.kind == "measured"} == {"PASS"}


def _attribution_rows(kernel_over_events):
    case = _case("attribution")
    rows = []
    for name in ("fwd+bwd dense", "fwd+bwd p=0.5 r0=0 cached"):
        r = _row(case, name, 10.0, forward_kernel_s=3e-3)
        rows.append(Row(case, name, r.samples, rounds=r.rounds, extra={
            **r.extra, "kernel_samples": [s * kernel_over_events for s in r.samples],
            "kernel_rounds": list(r.rounds)}))
    return case, rows


@pytest.mark.parametrize("ratio,want", [(0.9, {"PASS"}), (0.5, {"FAIL", "PASS"}), (1.2, {"PASS", "FAIL"})])
def test_attribution_is_two_sided(ratio, want):
    case, rows = _attribution_rows(ratio)
    checks = attribution.verdict(case, rows)
    assert len(checks) == 4 and {c.status for c in checks} == want            # >= 0.70 and <= 1.05, per row
    if ratio > 1:                                                               # a count that double-counts
        assert all(c.status == "FAIL" for c in checks if c.target.startswith("<="))


def test_the_step_section_times_by_events_only(monkeypatch):
    """On CUDA (mocked): warm-up, then per round one event block per step; no per-round profile."""
    case = _case("step-1b")
    calls, blocks = [], []

    class Blocks:
        def __init__(self, reps):
            self.reps, self.n = reps, 0
            blocks.append(self)

        def time(self, fn):
            for _ in range(self.reps):
                fn()
            self.n += 1

        def read(self):
            return [0.1] * self.n
    monkeypatch.setattr(common, "CudaBlocks", Blocks)
    monkeypatch.setattr(common, "sync", lambda case: None)
    monkeypatch.setattr(timing, "kernel_times", lambda *a: pytest.fail("a step round must not be profiled"))
    b = common.budget(case, "steps")
    rows = common.events_only(case, {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, "steps", 1,
                              {"a": {"p": 1.0}})
    assert len(blocks) == b.rounds and all(x.reps == b.cuda_reps and x.n == 2 for x in blocks)
    assert calls.count("a") == b.cuda_warmup + b.rounds * b.cuda_reps
    assert [r.component for r in rows] == ["a", "b"] and rows[0].extra == {"p": 1.0}
    assert all(r.samples == (0.1,) * b.rounds and r.rounds == tuple(range(b.rounds)) for r in rows)
