"""Every results file committed under results/ carries the verdict the current rules compute from its rows
(reports always recompute it; the stored copy must not disagree). Fix: celora-bench reverdict FILE."""
import glob
import json
import os

import pytest

from celora_bench import results, runner
from celora_bench.render import view

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _committed() -> list[str]:
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "results", "**", "*.json"), recursive=True)):
        if os.sep + "runs" + os.sep in path:
            continue                                  # local runs, not committed
        with open(path) as f:
            head = f.read(200)
        if '"schema": "celora-bench/results"' in head:
            out.append(path)
    return out


@pytest.mark.parametrize("path", _committed(), ids=lambda p: os.path.relpath(p, ROOT))
def test_stored_verdicts_are_the_current_rules(path):
    run = results.load(path)
    assert runner.verdicts_of(run, view.suites_of(run)) == run.verdicts, f"stale verdict: celora-bench reverdict {path}"


def test_reverdict_finds_a_stale_verdict_and_rewrites_it(tmp_path, capsys):
    """`reverdict --check` exits 1 on a file whose stored verdict the rules would not give, `reverdict`
    rewrites it (rows untouched), and then --check exits 0."""
    from celora_bench import cli
    run = results.load(_committed()[0])
    name = next(iter(run.verdicts))
    run.verdicts[name] = run.verdicts[name][:-1] + [{**run.verdicts[name][-1], "status": "PASS?"}]
    run.path = str(tmp_path / "stale.json")
    run.save()
    rows = json.load(open(run.path))["rows"]
    assert cli.main(["reverdict", "--check", run.path]) == 1
    assert cli.main(["reverdict", run.path]) == 0
    assert cli.main(["reverdict", "--check", run.path]) == 0
    fresh = results.load(run.path)
    assert fresh.verdicts == runner.verdicts_of(fresh, view.suites_of(fresh))
    assert json.load(open(run.path))["rows"] == rows
