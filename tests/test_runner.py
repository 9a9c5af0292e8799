"""The runner: rounds over a chunk, extension of what the verdict could not decide, stop and resume."""
import os
import signal

import pytest

from celora_bench import intervals as I
from celora_bench import registry, results, runner
from celora_bench.cases import Case
from celora_bench.measure import Target
from celora_bench.suite import Check, CheckId, Options, Suite
from celora_bench.timing import TimingBudget

BUDGET = TimingBudget(all_rounds=2, rounds=3, stages=(5, 8), block_s=0.0005)


class _Suite:
    """Two groups of two providers; the verdict is undecided on group 0's "judged" series until they have
    `need` rounds; `stop_at` sends this process SIGTERM in that call of group 1's part."""

    NAME, DESCRIPTION = "fake", "a stand-in"
    JUDGED = ("judged",)
    need = 6
    stop_at = None
    calls = 0

    @staticmethod
    def cases(opts):
        return [Case("fake", p, "m", f"L{g}", 4, 4, 8, 2) for g in (0, 1) for p in ("dense", "celora")]

    @staticmethod
    def group_key(case):
        return case.layer

    @staticmethod
    def setup(case):
        def part():
            _Suite.calls += 1
            if case.layer == "L1" and _Suite.stop_at is not None and _Suite.calls >= _Suite.stop_at:
                _Suite.stop_at = None
                os.kill(os.getpid(), signal.SIGTERM)
        return Target(parts={"judged": part, "other": part})

    @staticmethod
    def verdict(rows, machine=None):
        by = {(r.case.id, r.component): r for r in rows}
        keys = tuple(k for k in by if k[1] == "judged" and "/L0/" in k[0])
        n = min(len(by[k].samples) for k in keys) if keys else 0
        return [Check(C, "L0", "m", 1.0, "", "PASS" if n >= _Suite.need else "NOISE", reads=keys, rounds=n)]


C = CheckId("c", "c")
SUITE = Suite(NAME="fake", DESCRIPTION="a stand-in", cases=_Suite.cases, setup=_Suite.setup, verdict=_Suite.verdict,
              CHECKS=(C,),
              group_key=_Suite.group_key, JUDGED=_Suite.JUDGED)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(registry, "get", lambda name: SUITE)
    monkeypatch.setattr(runner, "warm_up", lambda device: None)
    monkeypatch.setattr(runner, "calibrate", lambda ctx: {})
    _Suite.need, _Suite.stop_at, _Suite.calls = 6, None, 0
    return _Suite


def _samples(run):
    return {(r.case.layer, r.case.provider, r.component): len(r.samples) for r in run.rows}


def test_only_what_an_undecided_check_reads_gets_more_rounds(fake, tmp_path):
    run = runner.run(["fake"], Options(), str(tmp_path / "r.json"), budget=BUDGET, seed=1)
    n = _samples(run)
    assert n[("L0", "dense", "judged")] == n[("L0", "celora", "judged")] == 8   # 3, then stages 5 and 8 (>= 6)
    assert n[("L1", "dense", "judged")] == 5      # read by no undecided check: base rounds, then rounds 3 and 6
    assert n[("L0", "dense", "other")] == n[("L1", "celora", "other")] == 2     # all_rounds only
    assert run.verdicts["fake"][0]["status"] == "PASS" and run.verdicts["fake"][0]["rounds"] == 8
    assert run.run["seeds"] == [1] and list(run.run["budget"]["stages"]) == [5, 8]
    assert run.machine_info["run_sd"] == I.RUN_SD          # the between-run sd its verdict was judged with


def test_a_decided_check_stops_the_extension(fake, tmp_path):
    fake.need = 3
    n = _samples(runner.run(["fake"], Options(), str(tmp_path / "r.json"), budget=BUDGET, seed=1))
    assert n[("L0", "dense", "judged")] == 3


def test_the_run_time_budget_stops_the_extension(fake, tmp_path):
    from dataclasses import replace
    n = _samples(runner.run(["fake"], Options(), str(tmp_path / "r.json"), budget=replace(BUDGET, max_run_s=0.0)))
    assert n[("L0", "dense", "judged")] == 3


def test_sigterm_keeps_a_partial_file_with_a_verdict_and_resume_measures_it_again(fake, tmp_path):
    path = str(tmp_path / "r.json")
    fake.stop_at = 30                         # after the warm-up round, within the base rounds
    with pytest.raises(runner.Stopped) as e:
        runner.run(["fake"], Options(), path, budget=BUDGET, seed=1)
    assert e.value.status == "partial"
    kept = results.load(path)
    assert kept.status == "partial" and kept.rows and "fake" in kept.verdicts
    assert sorted(kept.run["partial_cases"]) == sorted(c.id for c in fake.cases(None))
    done = runner.run(["fake"], Options(), path, resume=True, budget=BUDGET, seed=2)
    assert done.status == "complete" and "partial_cases" not in done.run
    assert {len(r.samples) for r in done.rows if r.component == "judged" and r.case.layer == "L1"} == {5}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_one_round_numbering_across_memory_chunks(fake, tmp_path, monkeypatch):
    """Each group its own chunk (memory 'full' after every group): no round number is used twice, so a
    pairing by round never pairs two moments of the run."""
    monkeypatch.setattr(runner, "CHUNK_RSS_FRACTION", 1e-9)
    run = runner.run(["fake"], Options(), str(tmp_path / "r.json"), budget=BUDGET, seed=1)
    per_layer = {}
    for r in run.rows:
        per_layer.setdefault(r.case.layer, set()).update(r.rounds)
    assert per_layer["L0"] and per_layer["L1"] and not per_layer["L0"] & per_layer["L1"]


def test_decided_checks_are_thinned_not_dropped(fake, tmp_path):
    """A series no undecided check reads still gets every THIN-th extension round, so its rounds span the
    run instead of ending with the base rounds."""
    run = runner.run(["fake"], Options(), str(tmp_path / "r.json"), budget=BUDGET, seed=1)
    l0 = next(r for r in run.rows if r.case.layer == "L0" and r.component == "judged")
    l1 = next(r for r in run.rows if r.case.layer == "L1" and r.component == "judged")
    assert max(l1.rounds) > max(r for r in l0.rounds[:BUDGET.rounds])
    assert all((r - min(l1.rounds)) < BUDGET.rounds or (r - min(l1.rounds)) % runner.THIN == 0 for r in l1.rounds)
