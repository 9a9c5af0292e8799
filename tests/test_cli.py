"""The CLI: list, run, show, export, plot; one-line errors with exit 2; Ctrl-C keeps results."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from celora_bench import cli, registry, results

SMALL = ["--model", "tiny", "-k", "tiny/q_proj+"]       # the tiny model's 256x256 shape


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "bb.json")
    assert cli.main(["run", "backward-breakdown", "--quick", *SMALL, "--out", out]) == 0
    return out


def test_help_and_list(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "backward-breakdown" in out and "llama-3.2-1b" in out


def test_run_writes_every_component_and_a_verdict(run_file):
    run = results.load(run_file)
    assert run.status == "complete" and not run.errors
    comps = {(r.case.provider, r.component) for r in run.rows}
    for c in ("fwd.frozen", "fwd.lora", "bwd.grad_h", "bwd.grad_B", "bwd.grad_A", "bwd.grad_x_lora",
              "bwd.grad_x_frozen"):
        assert ("dense", c) in comps and ("celora", c) in comps
    assert ("celora", "selection.amortized") in comps and ("peft", "fwd+bwd") in comps
    checks = run.verdicts["backward-breakdown"]
    order = [c.id for c in registry.get("backward-breakdown").CHECKS]
    assert [c["check"] for c in checks] == sorted((c["check"] for c in checks), key=order.index)   # as declared
    assert {c["check"] for c in checks} == {"share", "cost", "amdahl", "kept", "refresh", "vs-peft", "sol", "exact"}
    assert all(c["status"] == "INFO" for c in checks if c["kind"] == "info")
    assert all(c["status"] in ("PASS", "FAIL", "NOISE") for c in checks if c["kind"] == "measured")
    timed = [c for c in checks if "time" in c["metric"] or "speed-up" in c["metric"]]
    assert timed and all(c["lo"] <= c["value"] <= c["hi"] for c in timed)       # every timed value has its interval


def test_show_renders_tables_and_verdict(run_file, capsys):
    assert cli.main(["show", run_file, "--detail"]) == 0
    out = capsys.readouterr().out
    assert "verdict" in out and "G_y·W0 share" in out and "bwd.grad_x_frozen" in out


def test_export_csv_and_json_keep_full_precision(run_file, tmp_path, capsys):
    run = results.load(run_file)
    exact = {(r.case.id, r.component): r.time.median for r in run.rows if r.time}
    out = str(tmp_path / "t.csv")
    assert cli.main(["export", run_file, "--format", "csv", "--out", out]) == 0
    got = {(d["case_id"], d["component"]): float(d["median_s"]) for d in csv.DictReader(open(out))
           if d["median_s"]}
    assert got == exact
    assert cli.main(["export", run_file, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {(d["case_id"], d["component"]): d["median_s"] for d in rows if d["median_s"]} == exact


@pytest.mark.parametrize("fmt,marker", [("md", "|"), ("latex", "\\begin{tabular}"), ("html", "<table")])
def test_export_rendered_formats(run_file, fmt, marker, capsys):
    assert cli.main(["export", run_file, "--format", fmt]) == 0
    assert marker in capsys.readouterr().out


def test_plot_writes_pngs(run_file, tmp_path, capsys):
    assert cli.main(["plot", run_file, "--out", str(tmp_path)]) == 0
    pngs = sorted(p for p in os.listdir(tmp_path) if p.endswith(".png"))
    assert any(p.startswith("breakdown-") for p in pngs) and any(p.startswith("speedup-") for p in pngs)
    assert pngs, 'nothing to check: the loop below would pass vacuously'
    for p in pngs:
        assert open(tmp_path / p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,needle", [
    (["run", "no-such-suite"], "unknown suite 'no-such-suite'"),
    (["run", "backward-breakdown", "--dtype", "int8"], "invalid choice: 'int8'"),
    (["run", "backward-breakdown", "--threads", "0"], "--threads 0 is invalid"),
    (["run", "backward-breakdown", "--model", "gpt-9"], "--model 'gpt-9' is unknown"),
    (["run", "backward-breakdown", "-k", "nothing-matches-this", "--out", "/tmp/x-none.json"], "no case matches"),
    (["show", "/no/such/file.json"], "cannot read results file"),
    (["export", "/no/such/file.json", "--format", "csv"], "cannot read results file"),
    (["export", "x.json", "--format", "xlsx"], "invalid choice: 'xlsx'"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["gate", "--recheck", "-1"], "--recheck '-1' is invalid; allowed: an integer >= 0"),
    (["gate", "--recheck", "two"], "--recheck 'two' is invalid"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["-0.1", "abc", "1.5"])
def test_a_bad_between_run_sd_is_one_line_and_exit_2(value, monkeypatch, capsys):
    monkeypatch.setenv("CELORA_BENCH_RUN_SD", value)
    assert cli.main(["run", "backward-breakdown", "--out", "/tmp/x-run-sd.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"CELORA_BENCH_RUN_SD={value!r}" in err and "allowed" in err and "\n" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_requested_without_cuda(capsys):
    assert cli.main(["run", "backward-breakdown", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_truncated_run_file_is_refused(run_file, tmp_path, capsys):
    bad = tmp_path / "cut.json"
    bad.write_text(open(run_file).read()[:500])
    assert cli.main(["show", str(bad)]) == 2
    assert "truncated JSON" in capsys.readouterr().err


BAD_FILES = {
    "empty": (b"", "it is empty"),
    "binary": (bytes(range(256)) * 4, "not UTF-8"),
    "truncated": (b'{"schema": "celora-bench/results", "version": 1, "rows": [', "truncated JSON"),
    "foreign": (b'{"benchmarks": [], "machine_info": {}}', "not a celora-bench results file"),
    "list": (b"[1, 2, 3]", "not a celora-bench results file"),
    "version": (b'{"schema": "celora-bench/results", "version": 99, "rows": []}', "schema version 99"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("command", ["show", "export", "plot", "compare-a", "compare-b", "gate-from",
                                     "gate-baseline", "merge", "resume", "report"])
def test_every_command_that_reads_a_file_refuses_a_bad_one(run_file, tmp_path, capsys, command, kind):
    data, needle = BAD_FILES[kind]
    bad = tmp_path / f"{kind}.json"
    bad.write_bytes(data)
    b = str(bad)
    argv = {"show": ["show", b], "export": ["export", b, "--format", "csv"], "plot": ["plot", b],
            "compare-a": ["compare", b, run_file], "compare-b": ["compare", run_file, b],
            "gate-from": ["gate", "--from", b, "--baseline", run_file],
            "gate-baseline": ["gate", "--from", run_file, "--baseline", b],
            "merge": ["merge", run_file, b, "--out", str(tmp_path / "m.json")],
            "resume": ["run", "backward-breakdown", *SMALL, "--resume", "--out", b],
            "report": ["report", b, "--out", str(tmp_path / "r.html")]}[command]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("sig,code,status", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "partial")])
def test_a_stopped_run_keeps_its_rounds_a_verdict_and_a_report_and_resume_finishes(tmp_path, sig, code, status):
    """Ctrl-C or a time limit's SIGTERM in the middle of the rounds: what the rounds measured is saved with
    the verdict over it and its HTML report, the cases are marked partial, and --resume measures them anew."""
    out = str(tmp_path / "int.json")
    two_groups = ["--model", "tiny", "-k", "tiny/q_proj+", "-k", "tiny/down_proj/"]
    cmd = [sys.executable, "-m", "celora_bench.cli", "run", "backward-breakdown", "--quick", *two_groups,
           "--out", out]
    # a job started in the background inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: give the child the default disposition, as a terminal's Ctrl-C would find it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in proc.stdout:                 # the runner logs each phase; stop it once the rounds have begun
        seen.append(line)
        if "rounds" in line:
            time.sleep(0.5)
            break
    proc.send_signal(sig)
    text, _ = proc.communicate(timeout=120)
    text = "".join(seen) + text
    assert proc.returncode == code, text
    assert "Traceback" not in text and "--resume" in text and "report:" in text
    kept = results.load(out)
    assert kept.status == status and kept.rows and kept.verdicts["backward-breakdown"]
    assert os.path.exists(out[:-5] + ".html")
    partial = set(kept.run["partial_cases"])
    assert partial == {r.case.id for r in kept.rows}
    assert cli.main(["run", "backward-breakdown", "--quick", *two_groups, "--out", out, "--resume"]) == 0
    done = results.load(out)
    assert done.status == "complete" and len({r.case.id for r in done.rows}) == 12
    assert "partial_cases" not in done.run
