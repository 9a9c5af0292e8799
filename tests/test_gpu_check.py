"""scripts/gpu_check.sh: its plan, its steps in order, its read-back and exit status (python3 and nvidia-smi
stubbed), and its dry run: every step on the CPU at tiny sizes under the same plan, each leaving timed rows."""
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
STEPS = ["env", "cuda-tests", "smoke", "convert", "step-1b", "step-8b", "core-forms", "attribution", "kernels",
         "backward-breakdown", "model-step"]
SECTION_STEPS = ["smoke", "convert", "step-1b", "step-8b"]      # the loop over gpu-targets sections
FILES = {"smoke": "gpu-targets-smoke.json", "convert": "gpu-targets-convert.json",
         "step-1b": "gpu-targets-step-1b.json",
         "step-8b": "gpu-targets-step-8b.json", "core-forms": "core-forms.json",
         "attribution": "gpu-targets-attribution.json", "kernels": "gpu-targets-kernels.json",
         "backward-breakdown": "backward-breakdown-quick.json",
         "model-step": "model-step-quick.json"}


def test_gpu_check_is_valid_bash():
    res = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def _limits(stdout: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^  (\S+)\s+(\d+)s ", stdout, re.M)}


@pytest.mark.parametrize("how", ["--plan", "PLAN_ONLY=1"])
def test_gpu_check_plan_fits_six_minutes_says_so_first_and_runs_nothing(tmp_path, how):
    out = tmp_path / "gpu"
    args, env = (["--plan", str(out)], {}) if how == "--plan" else ([str(out)], {"PLAN_ONLY": "1"})
    res = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30,
                         env={**os.environ, **env})
    assert res.returncode == 0, res.stderr
    first = res.stdout.splitlines()[0]
    assert re.search(r"11 steps in \d+ s at most \(6 minutes: 360 s\)", first), first
    limits = _limits(res.stdout)
    assert list(limits) == STEPS
    total = int(re.search(r"= (\d+) s \(must be <= 360 s", res.stdout).group(1))
    assert total == sum(limits.values()) + 15 and total <= 360
    assert not out.exists()                                    # the plan writes nothing


def test_gpu_check_runs_sections_that_exist_with_the_suites_convert_budget():
    text = SCRIPT.read_text()
    named = re.search(r"for section in ([\w -]+); do", text).group(1).split()
    assert named == SECTION_STEPS and set(named) | {"attribution", "kernels"} <= set(gpu_targets.SECTIONS)
    assert float(re.search(r"^CONVERT_BUDGET_S=(\d+)", text, re.M).group(1)) == convert.BUDGET_S
    # the claims it exists for: the filtered CUDA tests name tests that exist
    cuda_tests = (ROOT / "tests" / "test_cuda.py").read_text()
    for name in re.search(r'-k "([^"]+)" \\\n', text).group(1).split(" or "):
        assert re.search(rf"^def test_\w*{name}\w*\(", cuda_tests, re.M), name


def _stub_bin(tmp_path, fail_on: str = "", rows: bool = True):
    """nvidia-smi and python3 stubs. python3 echoes its arguments, writes a results file with one timed row
    (none when rows is False) where it is given --out, and exits 1 when its arguments contain fail_on; the
    read-back (`python3 scripts/gpu_readback.py ...`) runs in the real one."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "nvidia-smi").write_text("#!/bin/sh\necho 'stub GPU'\n")
    row = '{"case": {}, "component": "x", "samples": [0.1]}' if rows else ""
    body = f'{{"status": "complete", "rows": [{row}], "verdicts": {{}}, "errors": []}}'
    cond = f'case "$*" in *"{fail_on}"*) exit 1;; esac\n' if fail_on else ""
    (bin_ / "python3").write_text(
        f'#!/bin/sh\ncase "$1" in scripts/gpu_readback.py) exec {sys.executable} "$@";; esac\n'
        f'echo "stub python3 $*"\n{cond}'
        'prev=""; for a in "$@"; do [ "$prev" = "--out" ] && echo \'' + body + '\' > "$a"; prev=$a; done\nexit 0\n')
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
    assert "run gpu-targets --device cuda -k /step-1b/ --out" in log
    assert "-m pytest -q -p no:cacheprovider tests/test_cuda.py -k autocast_with_fp32 or" in log
    assert "core-forms --quick --device cuda -k /gate_proj/celora/N8192/r16/p0.5/r0=14/product/lean/" in log
    assert "stub GPU" in (out / "env.txt").read_text() and "every step passed and left timed rows" in log
    for step, name in FILES.items():
        assert re.search(rf"^{step}: status complete, 1 timed rows, 0 FAIL, 0 undecided", log, re.M), step


def test_gpu_check_goes_on_after_a_failed_step_and_exits_1(tmp_path):
    out = tmp_path / "gpu"
    res = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=60,
                         env=_stub_bin(tmp_path, fail_on="-k /step-1b/"))
    assert res.returncode == 1
    log = (out / "gpu_check.log").read_text()
    assert "=== step-1b: exit 1" in log and "=== model-step: exit 0" in log
    assert "steps that failed" in log and "step-1b (exit 1)" in log
    assert "step-1b: no results file" in log                   # the stub wrote none before failing


def test_gpu_check_exits_1_when_a_step_leaves_no_timed_rows(tmp_path):
    out = tmp_path / "gpu"
    res = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=60,
                         env=_stub_bin(tmp_path, rows=False))
    assert res.returncode == 1, res.stdout
    log = (out / "gpu_check.log").read_text()
    for step in FILES:
        assert f"FAILED: {step} (no timed rows)" in log


@pytest.mark.parametrize("bad", ["FAIL", "error", "NOISE"])
def test_gpu_check_lists_undecided_checks_and_fails_on_a_failed_check_or_an_error(tmp_path, bad):
    out = tmp_path / "gpu"
    env = _stub_bin(tmp_path)
    check = {"check": "kept", "scope": "down_proj", "metric": "m", "status": bad}
    stub = tmp_path / "bin" / "python3"                       # the backward-breakdown step writes this file instead
    bb = {"status": "complete", "rows": [{"samples": [0.1]}], "errors": [],
              "verdicts": {"backward-breakdown": [{**check, "status": "PASS"}] + ([check] if bad != "error" else [])}}
    if bad == "error":
        bb["errors"] = [{"case_id": "backward-breakdown/x/down_proj", "error": "RuntimeError: boom"}]
    (tmp_path / "bb.json").write_text(json.dumps(bb))
    stub.write_text(stub.read_text().replace(
        "exit 0\n", f'case "$*" in *"run backward-breakdown"*) cp {tmp_path / "bb.json"} '
                    f'{out}/backward-breakdown-quick.json;; esac\nexit 0\n'))
    res = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=60, env=env)
    log = (out / "gpu_check.log").read_text()
    if bad == "NOISE":                                         # listed beside the failed ones, not a failure
        assert res.returncode == 0, log
        assert "backward-breakdown: status complete, 1 timed rows, 0 FAIL, 1 undecided" in log
        assert "  undecided kept | down_proj | m" in log
        return
    assert res.returncode == 1, res.stdout + res.stderr
    assert ("FAIL kept | down_proj" if bad == "FAIL" else "RuntimeError: boom") in log
    assert "FAILED: backward-breakdown (a FAIL or an error)" in log


def test_gpu_check_dry_run_runs_every_step_on_the_cpu_and_each_leaves_timed_rows(tmp_path):
    """The whole plan on the CPU at tiny sizes: the same steps, limits and files; every step with a results
    file writes timed rows (a row with samples) before its limit."""
    out = tmp_path / "dry"
    plan = subprocess.run(["bash", str(SCRIPT), "--plan"], capture_output=True, text=True, timeout=30)
    res = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(out)], capture_output=True, text=True, timeout=400)
    log = (out / "gpu_check.log").read_text()
    assert res.returncode == 0, log[-6000:]
    assert res.stdout.splitlines()[0].startswith("gpu_check plan (DRY RUN: on the CPU at tiny sizes): 11 steps")
    assert _limits(res.stdout) == _limits(plan.stdout)         # the same plan
    assert re.findall(r"^=== (\S+) \(", log, re.M) == STEPS
    assert "--device cuda" not in log and "--device cpu" in log
    for step, name in FILES.items():
        run = json.loads((out / name).read_text())
        assert any(r.get("samples") for r in run["rows"]), step
        assert (out / name.replace(".json", ".html")).exists(), step
    assert (out / "cuda-tests.xml").exists() and "dry run: no GPU" in (out / "env.txt").read_text()
    assert "every step passed and left timed rows" in log


@pytest.mark.parametrize("writes_first", [True, False])
def test_under_a_scaled_clock_every_step_is_cut_and_kept_only_if_it_wrote_timed_rows(tmp_path, writes_first):
    """Every step outlasts its (scaled) limit: a step that wrote its timed rows before the cut passes the
    read-back, one cut before writing fails it."""
    out = tmp_path / "gpu"
    env = _stub_bin(tmp_path)
    stub = tmp_path / "bin" / "python3"
    text = stub.read_text()
    write = text[text.index("prev="):text.index("exit 0\n")]
    slow = "sleep 30 >/dev/null 2>&1\n"                          # holds no pipe open once cut
    stub.write_text(text.replace(write, write + slow) if writes_first else text.replace(write, slow + write))
    res = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=120,
                         env={**env, "GPU_CHECK_CLOCK_PCT": "5"})
    log = (out / "gpu_check.log").read_text()
    assert "scaled clock: every limit, the grace and the deadline at 5%" in log
    assert re.findall(r"^=== (\S+): cut at its limit", log, re.M) == STEPS      # none skipped by the deadline
    # env and cuda-tests write no results file: a cut there is a failure
    assert "env (cut at its limit (exit 124): partial)" in log and "cuda-tests (cut at its limit" in log
    if writes_first:
        assert res.returncode == 1
        assert all(f"{s}: status complete, 1 timed rows" in log for s in FILES)
        assert "cut at their limit, partial (their rows kept): " + " ".join(FILES) in log
    else:
        assert res.returncode == 1
        assert all(f"{s}: no results file" in log for s in FILES)
