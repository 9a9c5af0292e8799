"""scripts/gpu_check.sh: its plan, its steps in order, and its exit status (python3 and nvidia-smi stubbed)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from suites import gpu_targets
from suites.gpu_targets import convert

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STEPS = ["env", "smoke", "layers", "step-1b", "attribution", "convert", "backward-breakdown", "model-step"]


def test_gpu_check_is_valid_bash():
    res = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("how", ["--plan", "PLAN_ONLY=1"])
def test_gpu_check_plan_fits_six_minutes_and_runs_nothing(tmp_path, how):
    out = tmp_path / "gpu"
    args, env = (["--plan", str(out)], {}) if how == "--plan" else ([str(out)], {"PLAN_ONLY": "1"})
    res = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30,
                         env={**os.environ, **env})
    assert res.returncode == 0, res.stderr
    limits = dict(re.findall(r"^  (\S+)\s+(\d+)s ", res.stdout, re.M))
    assert list(limits) == STEPS
    total = int(re.search(r"= (\d+) s \(must be <= 360 s", res.stdout).group(1))
    assert total == sum(map(int, limits.values())) + 15 and total <= 360
    assert not out.exists()                                    # the plan writes nothing


def test_gpu_check_runs_sections_that_exist_with_the_suites_convert_budget():
    text = SCRIPT.read_text()
    named = re.search(r"for section in ([\w -]+); do", text).group(1).split()
    assert named == STEPS[1:6] and set(named) <= set(gpu_targets.SECTIONS)
    assert float(re.search(r"^CONVERT_BUDGET_S=(\d+)", text, re.M).group(1)) == convert.BUDGET_S


def _stub_bin(tmp_path, fail_on: str = ""):
    """nvidia-smi and python3 that only echo their arguments (python3 exits 1 when they contain fail_on);
    a python3 script read from standard input (`python3 - ...`) runs in the real one."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "nvidia-smi").write_text("#!/bin/sh\necho 'stub GPU'\n")
    cond = f'case "$*" in *"{fail_on}"*) exit 1;; esac\n' if fail_on else ""
    (bin_ / "python3").write_text(f'#!/bin/sh\n[ "$1" = "-" ] && exec {sys.executable} "$@"\n'
                                  f'echo "stub python3 $*"\n{cond}exit 0\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"}


def test_gpu_check_runs_every_step_in_order_and_logs_it(tmp_path):
    out = tmp_path / "gpu"
    res = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=60,
                         env=_stub_bin(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    log = (out / "gpu_check.log").read_text()
    assert re.findall(r"^=== (\S+) \(", log, re.M) == STEPS
    assert "run gpu-targets --device cuda -k /layers/ --out" in log
    assert "stub GPU" in (out / "env.txt").read_text() and "every step passed" in log


def test_gpu_check_goes_on_after_a_failed_step_and_exits_1(tmp_path):
    out = tmp_path / "gpu"
    res = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=60,
                         env=_stub_bin(tmp_path, fail_on="-k /layers/"))
    assert res.returncode == 1
    log = (out / "gpu_check.log").read_text()
    assert "=== layers: exit 1" in log and "=== model-step: exit 0" in log
    assert "steps that failed, were cut or skipped: layers (exit 1)" in log


@pytest.mark.parametrize("bad", ["FAIL", "error"])
def test_gpu_check_fails_on_a_failed_check_or_an_error_in_a_gpu_targets_file(tmp_path, bad):
    out = tmp_path / "gpu"
    out.mkdir()
    check = {"check": "2. kept-column product", "scope": "down_proj", "metric": "m", "status": "FAIL"}
    (out / "gpu-targets-layers.json").write_text(json.dumps({
        "verdicts": {"gpu-targets": [{**check, "status": "PASS"}] + ([check] if bad == "FAIL" else [])},
        "errors": [{"case_id": "gpu-targets/x/smoke", "error": "RuntimeError: boom"}] if bad == "error" else []}))
    (out / "gpu-targets-smoke.json").write_text(json.dumps({"verdicts": {"gpu-targets": []}, "errors": []}))
    res = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=60,
                         env=_stub_bin(tmp_path))
    assert res.returncode == 1, res.stdout + res.stderr
    log = (out / "gpu_check.log").read_text()
    assert ("FAIL 2. kept-column product | down_proj" if bad == "FAIL" else "RuntimeError: boom") in log
    assert "gpu-targets verdicts (a FAIL or an error)" in log
