"""Every results file committed under results/ carries the verdict the current rules compute from its rows
(reports always recompute it; the stored copy must not disagree). Fix: celora-bench reverdict FILE."""
import glob
import json
import os

import pytest

from celora_bench import results, runner

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
    suites = run.run.get("suites") or sorted({r.case.suite for r in run.rows})
    assert runner.verdicts_of(run, suites) == run.verdicts, f"stale verdict: celora-bench reverdict {path}"


def test_a_stale_verdict_is_caught(tmp_path):
    src = _committed()[0]
    run = results.load(src)
    name = next(iter(run.verdicts))
    run.verdicts[name] = run.verdicts[name][:-1] + [{**run.verdicts[name][-1], "status": "PASS?"}] \
        if run.verdicts[name] else [{"check": "x"}]
    run.path = str(tmp_path / "stale.json")
    run.save()
    suites = run.run.get("suites") or sorted({r.case.suite for r in run.rows})
    assert runner.verdicts_of(results.load(run.path), suites) != json.load(open(run.path))["verdicts"]
