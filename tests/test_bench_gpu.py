"""scripts/bench_gpu.py's sections on the CPU (--smoke, in-process) and scripts/gpu_check.sh's plan."""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "scripts" / "bench_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = mod                              # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


bench = _load()
# every timed target met by any measurement: the exact checks alone decide PASS/FAIL
PASSING = {"amdahl_r0_0": 0.0, "amdahl_r0_14": 0.0, "kept_over_p": float("inf"), "step_amdahl": 0.0,
           "attribution": 0.0}


def _run(tmp_path, *args, targets=None, sections=None):
    out = tmp_path / f"bench-{len(list(tmp_path.iterdir()))}.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "TARGETS", {**PASSING, **(targets or {})})
        for name, fn in (sections or {}).items():
            mp.setitem(bench.SECTIONS, name, fn)
        code = bench.main(["--smoke", "--out", str(out), *args])
    return code, json.loads(out.read_text())


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("bench"))


def test_passing_targets_cover_every_target():
    assert set(PASSING) == set(bench.TARGETS)


def test_smoke_runs_every_section_and_exits_0_when_all_pass(full):
    code, log = full
    assert list(log["sections"]) == list(bench.SECTIONS)
    for name, sec in log["sections"].items():
        assert sec["status"] == "ok", (name, sec.get("error"))
        assert sec["lines"], name
    judged = {c["section"] for s in log["sections"].values() for c in s["checks"] if c["status"] != "INFO"}
    assert judged == {"smoke", "layers", "step-1b", "step-8b", "attribution", "convert"}   # kernels: reported
    assert log["summary"]["fail"] == 0 and log["summary"]["errors"] == [] and code == 0
    assert log["status"] == "complete"


def test_every_layer_shape_judges_amdahl_and_the_kept_column_product(full):
    _, log = full
    checks = [c["check"] for c in log["sections"]["layers"]["checks"] if c["status"] != "INFO"]
    for label in ("q_proj+o_proj", "k_proj+v_proj", "gate_proj+up_proj", "down_proj"):
        mine = [c for c in checks if c.startswith(label + " ")]
        # p = 0.5 and the paper's ratio, r0 = 0 and 14: four bounds and two kept products per shape
        assert sum("Amdahl" in c for c in mine) == 4 and sum("kept-column" in c for c in mine) == 2, mine


def test_steps_bound_from_the_profiled_share(full):
    _, log = full
    for which in ("step-1b", "step-8b"):
        sec = log["sections"][which]
        assert 0 < sec["data"]["share"] < 1
        bounds = [c for c in sec["checks"] if "Amdahl" in c["check"]]
        assert len(bounds) == 2 and all(c["target"] == ">= 0.0" for c in bounds)


def test_convert_reuses_its_svd_cache(full):
    _, log = full
    data = log["sections"]["convert"]["data"]
    assert data["svds"] == data["layers"] == 4 * 7 and data["svds_cached"] == 0


def test_a_kept_column_fail_is_counted(tmp_path):
    code, log = _run(tmp_path, "--section", "layers", targets={"kept_over_p": 0.0})
    assert code == 1 and list(log["sections"]) == ["layers"]
    assert log["summary"]["fail"] == 8 and all("kept-column" in f for f in log["summary"]["failed"])


def test_a_section_that_raises_is_recorded_and_the_next_runs(tmp_path):
    def boom(ctx, sec):
        sec.say("about to fail")
        raise RuntimeError("injected")
    code, log = _run(tmp_path, "--section", "smoke", "--section", "attribution", "--section", "convert",
                     sections={"attribution": boom})
    assert code == 1
    err = log["sections"]["attribution"]
    assert err["status"] == "error" and err["error"]["type"] == "RuntimeError" and err["error"]["message"] == "injected"
    assert "in boom" in err["error"]["traceback"] and err["lines"] == ["about to fail"]
    assert log["sections"]["smoke"]["status"] == log["sections"]["convert"]["status"] == "ok"
    assert log["summary"]["errors"] == ["attribution"] and log["summary"]["fail"] == 0


def test_sigterm_stops_the_run_and_keeps_what_finished(tmp_path):
    def killed(ctx, sec):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    before = signal.getsignal(signal.SIGTERM)
    code, log = _run(tmp_path, "--section", "smoke", "--section", "attribution", "--section", "convert",
                     sections={"attribution": killed})
    assert code == log["summary"]["exit_status"] == 143 and log["status"] == "partial"
    assert log["sections"]["smoke"]["status"] == "ok" and log["sections"]["attribution"]["status"] == "stopped"
    assert "convert" not in log["sections"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_usage_errors_exit_2(tmp_path, monkeypatch):
    with pytest.raises(SystemExit) as e:
        bench.main(["--smoke", "--out", str(tmp_path / "x.json"), "--section", "nope"])
    assert e.value.code == 2
    assert bench.main(["--smoke", "--out", str(tmp_path / "x.json"), "--rounds", "0"]) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--out", str(tmp_path / "x.json")]) == 2


# ---- scripts/gpu_check.sh ------------------------------------------------------------------

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
    assert list(limits) == ["env", "smoke", "layers", "step-1b", "attribution", "convert", "backward-breakdown",
                            "model-step"]
    total = int(re.search(r"= (\d+) s \(must be <= 360 s", res.stdout).group(1))
    assert total == sum(map(int, limits.values())) + 15 and total <= 360
    assert not out.exists()                                    # the plan writes nothing


def test_gpu_check_runs_sections_that_exist():
    text = SCRIPT.read_text()
    named = re.findall(r"--section ([\w-]+)", text)
    assert named and set(named) <= set(bench.SECTIONS)


def _stub_bin(tmp_path, fail_on: str = ""):
    """python3 and nvidia-smi that only echo their arguments; python3 exits 1 when its arguments contain fail_on."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "nvidia-smi").write_text("#!/bin/sh\necho 'stub GPU'\n")
    cond = f'case "$*" in *"{fail_on}"*) exit 1;; esac\n' if fail_on else ""
    (bin_ / "python3").write_text(f'#!/bin/sh\necho "stub python3 $*"\n{cond}exit 0\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"}


def test_gpu_check_runs_every_step_in_order_and_logs_it(tmp_path):
    out = tmp_path / "gpu"
    res = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=60,
                         env=_stub_bin(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    log = (out / "gpu_check.log").read_text()
    started = re.findall(r"^=== (\S+) \(", log, re.M)
    assert started == ["env", "smoke", "layers", "step-1b", "attribution", "convert", "backward-breakdown",
                       "model-step"]
    assert "stub GPU" in (out / "env.txt").read_text() and "every step passed" in log


def test_gpu_check_goes_on_after_a_failed_step_and_exits_1(tmp_path):
    out = tmp_path / "gpu"
    res = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=60,
                         env=_stub_bin(tmp_path, fail_on="--section layers"))
    assert res.returncode == 1
    log = (out / "gpu_check.log").read_text()
    assert "=== layers: exit 1" in log and "=== model-step: exit 0" in log
    assert "steps that failed, were cut or skipped: layers (exit 1)" in log
