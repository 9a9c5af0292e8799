"""Worker processes (celora_bench.workers), the runner dealing rounds to them, and the A/B gate's two sides
(celora_bench.abgate), on tiny layers of the real backward-breakdown suite."""
import os
import subprocess

import pytest

from celora_bench import abgate, registry, runner
from celora_bench.cases import Case
from celora_bench.suite import Options
from celora_bench.timing import TimingBudget
from celora_bench.workers import Pool, WorkerError, deal

SUITE = "backward-breakdown"
BUDGET = TimingBudget(all_rounds=1, rounds=4, stages=(6,), block_s=0.001, workers=3)


def tiny(layer="q_proj", m=64, n=48):
    common = dict(suite=SUITE, model="llama-3.2-1b", layer=layer, m=m, n=n, tokens=32, rank=4)
    return [Case(provider="dense", **common), Case(provider="peft", **common),
            Case(provider="celora", keep_ratio=0.5, svd_rank=3, **common)]


def test_deal_visits_every_worker_once_per_block():
    import random
    order = deal(12, 4, random.Random(0))
    assert [sorted(order[i:i + 4]) for i in range(0, 12, 4)] == [[0, 1, 2, 3]] * 3


def test_a_pool_gathers_samples_with_their_round_and_worker():
    pool = Pool(2)
    try:
        pool.start(SUITE, tiny(), device="cpu", threads=1, tune_malloc=False,
                   budget={**BUDGET.__dict__, "stages": list(BUDGET.stages)}, seed=0)
        for number, w in ((10, 0), (11, 1), (12, 1), (13, 0)):
            pool.round(w, number, None)
    finally:
        pool.close()
    rows = {(r.case.provider, r.component): r for r in pool.rows()}
    gx = rows[("celora", "bwd.grad_x_frozen")]
    assert gx.rounds == (10, 11, 12, 13) and gx.procs == (0, 1, 1, 0) and all(t > 0 for t in gx.samples)
    assert gx.flops_counted == gx.flops_analytic > 0             # worker 0's one-off measurements
    sel, am = rows[("celora", "selection")], rows[("celora", "selection.amortized")]
    assert am.samples == pytest.approx(tuple(t / 200 for t in sel.samples)) and am.procs == sel.procs
    assert rows[("peft", "state")].mem_bytes > 0 and os.path.isdir(pool.core)


def test_a_worker_that_dies_is_one_line_naming_it():
    pool = Pool(1)
    try:
        pool.start(SUITE, tiny(), device="cpu", threads=1, tune_malloc=False,
                   budget={**BUDGET.__dict__, "stages": list(BUDGET.stages)}, seed=0)
        pool.workers[0].proc.kill()
        pool.workers[0].proc.wait()
        with pytest.raises(WorkerError, match="worker 0 exited"):
            pool.round(0, 0, None)
    finally:
        pool.close()


@pytest.fixture
def tiny_suite(monkeypatch):
    """backward-breakdown as the parent sees it, with two tiny groups as its cases; the workers load the real
    suite by name and set those cases up."""
    real = registry.get(SUITE)
    from dataclasses import replace
    two = tiny() + tiny("down_proj", 48, 64)
    monkeypatch.setattr(registry, "get", lambda name: replace(real, cases=lambda opts: two))
    monkeypatch.setattr(runner, "warm_up", lambda device: None)
    monkeypatch.setattr(runner, "calibrate", lambda ctx: {})


def test_the_runner_deals_rounds_to_fresh_workers_and_numbers_them_once(tiny_suite, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "WORKER_FRACTION", 1e-12)               # one chunk per group
    run = runner.run([SUITE], Options(), str(tmp_path / "r.json"), budget=BUDGET, seed=3, threads=1)
    assert run.status == "complete", run.errors
    gx = [r for r in run.rows if r.component == "bwd.grad_x_frozen" and r.case.provider == "celora"]
    assert len(gx) == 2 and all(set(r.procs) == {0, 1, 2} for r in gx)   # every worker measured every group
    a, b = (set(r.rounds) for r in gx)
    assert not a & b                                                    # one numbering across chunks
    assert run.verdicts[SUITE]


def test_the_ab_gate_measures_each_side_with_its_own_core(tmp_path):
    """Against HEAD, base workers import HEAD's core/ from an exported copy, candidate workers the working
    tree's (abgate checks both paths); every timed quantity gets an interval; counts are equal. With a
    threshold every interval reaches (-0.5: 0.5), every case gets the second look: fresh workers whose
    samples join the first look's, numbered on."""
    base, cand = abgate.measure("HEAD", str(tmp_path / "g"), workers=2, rounds=3, cases=tiny(), threads=1,
                                extra_workers=2, extra_rounds=2, threshold=-0.5)
    assert {r.case.id for r in base.rows} == {r.case.id for r in cand.rows}
    assert sorted(cand.run["against"]["second_look"]["cases"]) == sorted({c.id for c in tiny() if c.provider != "peft"})
    found = abgate.judge(base.rows, cand.rows)
    timed = [f for f in found if f.kind == "time"]
    assert {f.component for f in timed} >= {"bwd.grad_x_frozen", "fwd+bwd", "selection"}
    assert sorted(map(tuple, cand.run["against"]["second_look"]["series"])) == sorted((f.case_id, f.component)
                                                                                     for f in timed)
    assert all(f.lo is not None and f.lo <= f.value <= f.hi for f in timed)
    assert {f.rounds for f in timed} == {6}          # 3 rounds asked, in whole blocks of 2 workers: 4; then 2
    assert all(f.value == 1 for f in found if f.kind != "time")
    gx = [r for r in base.rows + cand.rows if r.component == "bwd.grad_x_frozen"]
    for r in gx:
        assert len(set(r.rounds)) == len(r.rounds) == 6                         # one numbering over both looks
    assert {p for r in gx if r in base.rows for p in r.procs} == {0, 1, 4, 5}   # base: 2 + 2 fresh workers
    assert {p for r in gx if r in cand.rows for p in r.procs} == {2, 3, 6, 7}
    assert os.path.exists(str(tmp_path / "g-base.json")) and os.path.exists(str(tmp_path / "g.json"))


def test_only_cases_with_an_interval_reaching_the_line_get_a_second_look():
    f = lambda cid, kind, v, hi: abgate.ABFinding(cid, "fwd+bwd", kind, v, 0.9, hi, False)   # noqa: E731
    found = [f("a", "time", 1.06, 1.09), f("b", "time", 1.05, 1.10), f("b", "time", 1.0, 1.02),
             f("c", "flops", 1.5, 1.5), f("d", "time", 1.2, None), f("e", "time", 1.04, 1.3)]
    assert abgate.reaching(found) == {("b", "fwd+bwd")}      # e: value under 1.05, a noisy series near 1
    assert {c for c, _ in abgate.reaching(found, threshold=0.05)} == {"a", "b", "e"}


def test_the_ab_judge_flags_only_an_interval_wholly_above_the_threshold():
    from celora_bench.cases import Row

    def rows(scale, jitter):
        out = []
        for c in tiny():
            for comp in ("fwd+bwd", "bwd.grad_x_frozen"):
                t = [1.0 if c.provider == "peft" else scale * (1 + jitter * ((i * 7 % 5) - 2)) for i in range(12)]
                out.append(Row(c, comp, tuple(t), rounds=tuple(range(12)), procs=tuple(i % 4 for i in range(12))))
        return out
    base = rows(1.0, 0.01)
    assert not any(f.regression for f in abgate.judge(base, rows(1.05, 0.01)))       # +5%: under 10%
    assert all(f.regression for f in abgate.judge(base, rows(1.3, 0.01)) if f.kind == "time")   # +30%
    assert not any(f.regression for f in abgate.judge(base, rows(1.12, 0.2)))        # +12% but noisy


def test_a_bad_revision_is_one_line():
    with pytest.raises(abgate.ABError, match="not a commit"):
        abgate.resolve("no-such-revision-xyz")


def test_export_core_writes_that_commits_core(tmp_path):
    sha = abgate.resolve("HEAD")
    abgate.export_core(sha, str(tmp_path))
    want = subprocess.run(["git", "show", f"{sha}:core/config.py"], cwd=abgate.ROOT, capture_output=True,
                          text=True).stdout
    assert open(tmp_path / "core" / "config.py").read() == want


def test_export_core_adds_only_the_modules_rev_lacks(tmp_path):
    """A module the candidate's core/ added since REV is copied in (the suites import it); REV's own modules
    stay REV's, whatever the candidate has."""
    cand = tmp_path / "cand"
    cand.mkdir()
    (cand / "config.py").write_text("# the candidate's config\n")
    (cand / "added_since.py").write_text("X = 1\n")
    dest = tmp_path / "base"
    added = abgate.export_core(abgate.resolve("HEAD"), str(dest), candidate=str(cand))
    assert added == ["core/added_since.py"]
    assert (dest / "core" / "added_since.py").read_text() == "X = 1\n"
    assert "the candidate's config" not in (dest / "core" / "config.py").read_text()


def test_the_ab_gate_never_splits_a_layer_shape_across_chunks(monkeypatch):
    """A shape's cases are timed together, as the suite times them: one chunk, always."""
    from celora_bench import memory
    monkeypatch.setattr(memory, "rss_and_total", lambda: (0, 1))          # every group alone is over the limit
    cases = tiny() + tiny("down_proj", 48, 64)
    parts = abgate.chunks(cases, 4)
    assert [sorted(c.layer for c in p) for p in parts] == [["q_proj"] * 3, ["down_proj"] * 3]
