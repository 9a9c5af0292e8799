"""The A/B gate's power and false alarms, measured with real commits.

    python results/readme/gate/power.py --out results/readme/gate/power.json

For each planned slowdown, a commit on a scratch branch `scratch/gate-power-SHAPE-PCT` (in a git worktree under
--work) edits core/layer.py so that CELoRALinear.grad_x_frozen, on one layer shape only, busy-waits for a
fraction of its own elapsed time after computing (time only: FLOPs and bytes unchanged). Each trial is one
`celora-bench gate --against BASE -k ...` run from that worktree, exactly the gate CI runs but narrowed to
the slowed shape's CE-LoRA lean p = 0.5 case (with its second look when the first does not clear it).
A/A trials run the unmodified
commit against itself. Trials of every kind are interleaved in a random order, so each kind sees the
same stretch of the machine. Writes every trial (exit status, the slowed quantity's interval) and the
counts; prints the table the README quotes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SHAPES = {"gate_proj+up_proj": (8192, 2048), "k_proj+v_proj": (512, 2048)}     # (m, n) of Llama-3.2-1B
# (shape, slowdown of the component, trials): the plan the issue asks for
PLAN = [("gate_proj+up_proj", 0.25, 10), ("gate_proj+up_proj", 0.15, 10), ("gate_proj+up_proj", 0.10, 5),
        ("k_proj+v_proj", 0.25, 10), ("k_proj+v_proj", 0.15, 5), ("k_proj+v_proj", 0.10, 5),
        ("gate_proj+up_proj", 0.0, 5), ("k_proj+v_proj", 0.0, 5)]
SLOW = '''    def grad_x_frozen(self, gy: Tensor, t: Tensor | None = None) -> Tensor:
        """Scratch (results/readme/gate/power.py): the real product, then a busy wait of FRAC of its own time
        on layers of shape SHAPE only."""
        t0 = time.perf_counter()
        out = self._grad_x_frozen_real(gy, t)
        if not self.dense and tuple(self.weight.shape) == SHAPE:
            end = time.perf_counter() + FRAC * (time.perf_counter() - t0)
            while time.perf_counter() < end:
                pass
        return out

    def _grad_x_frozen_real(self, gy: Tensor, t: Tensor | None = None) -> Tensor:'''
HEAD = "    def grad_x_frozen(self, gy: Tensor, t: Tensor | None = None) -> Tensor:"


def git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def slowed_commit(wt: str, base: str, shape: str, frac: float) -> str:
    """A commit on the branch scratch/gate-power-SHAPE-PCT: base with the slowdown; base itself for frac == 0."""
    git("checkout", "-q", "-B", f"scratch/gate-power-{shape.split('_')[0]}-{round(frac * 100)}", base, cwd=wt)
    if frac == 0:
        return base
    path = os.path.join(wt, "core", "layer.py")
    src = open(path).read()
    assert HEAD in src, "core/layer.py changed: update power.py's patch"
    src = src.replace(HEAD, SLOW.replace("FRAC", repr(frac)).replace("SHAPE", repr(SHAPES[shape])), 1)
    src = src.replace("from __future__ import annotations\n", "from __future__ import annotations\n\nimport time\n", 1)
    open(path, "w").write(src)
    git("commit", "-q", "-am", f"scratch: CE-LoRA G_y·W0 {frac:+.0%} slower on {shape} (gate power study)", cwd=wt)
    return git("rev-parse", "HEAD", cwd=wt)


def trial(wt: str, base: str, shape: str, out: str) -> dict:
    """One gate run from the worktree against base, narrowed to the shape's CE-LoRA lean p = 0.5 case."""
    lean = f"{shape}/celora/N1024/r16/p0.5/r0=0/product/lean"
    cmd = [sys.executable, "-m", "celora_bench.cli", "gate", "--against", base, "-k", lean, "--out", out]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=wt, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    sys.path.insert(0, wt)
    from celora_bench import abgate, results
    found = abgate.judge(results.load(out.replace(".json", "-base.json")).rows, results.load(out).rows) \
        if p.returncode in (0, 1) else []
    gx = next((f for f in found if f.kind == "time" and f.component == "bwd.grad_x_frozen"
               and "/celora/" in f.case_id), None)
    second = results.load(out).run["against"].get("second_look", {}).get("cases") if p.returncode in (0, 1) else None
    return {"exit": p.returncode, "seconds": round(time.perf_counter() - t0, 1), "second_look": bool(second),
            "regressions": [[f.case_id, f.component, f.value, f.lo, f.hi] for f in found if f.regression],
            "grad_x_frozen": None if gx is None else [gx.value, gx.lo, gx.hi],
            "error": p.stderr.strip().splitlines()[-1] if p.returncode == 2 and p.stderr.strip() else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/readme/gate/power.json")
    ap.add_argument("--work", default="/tmp/celora-gate-power", help="worktrees and the trials' runs")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every planned trial count (e.g. 0.2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--summary", action="store_true", help="print the table of --out's trials and stop")
    args = ap.parse_args(argv)
    if args.summary:
        d = json.load(open(args.out))
        summary(d["base"], d["trials"])
        return 0
    base = git("rev-parse", "HEAD")
    os.makedirs(args.work, exist_ok=True)
    jobs = []
    for shape, frac, n in PLAN:
        wt = os.path.join(args.work, f"wt-{shape.split('_')[0]}-{int(frac * 100)}")
        if not os.path.exists(wt):
            git("worktree", "add", "-q", "--detach", wt, base)
        sha = slowed_commit(wt, base, shape, frac)
        git("checkout", "-q", "--detach", sha, cwd=wt)        # each worktree holds its own commit
        jobs += [(shape, frac, wt, sha)] * max(1, round(n * args.scale))
    random.Random(args.seed).shuffle(jobs)
    trials = []
    for i, (shape, frac, wt, sha) in enumerate(jobs):
        t = trial(wt, base, shape, os.path.join(args.work, f"trial-{i}.json"))
        trials.append({"shape": shape, "slowdown": frac, "commit": sha, **t})
        print(f"[{i + 1}/{len(jobs)}] {shape} {frac:+.0%}: exit {t['exit']} in {t['seconds']} s; "
              f"G_y·W0 cand/base {t['grad_x_frozen']}", flush=True)
        json.dump({"base": base, "plan": PLAN, "trials": trials}, open(args.out, "w"), indent=1)
    summary(base, trials)
    return 0


def summary(base: str, trials: list[dict]) -> None:
    """The table: per shape and slowdown, trials caught (the gate exited 1) of those run, and the G_y·W0
    candidate/base interval's median value."""
    print(f"base commit {base[:10]}; threshold +10% (a regression: a 90% interval wholly above 1.10)")
    print("shape              slowdown  caught  2nd look  median G_y·W0 cand/base  median half-width  mean s/trial")
    for shape, frac, _ in PLAN:
        ts = [t for t in trials if t["shape"] == shape and t["slowdown"] == frac]
        if not ts:
            continue
        caught = sum(t["exit"] == 1 for t in ts)
        errors = sum(t["exit"] == 2 for t in ts)
        vals = sorted(t["grad_x_frozen"][0] for t in ts if t["grad_x_frozen"])
        med = vals[len(vals) // 2] if vals else float("nan")
        halves = sorted((t["grad_x_frozen"][2] - t["grad_x_frozen"][1]) / 2 for t in ts if t["grad_x_frozen"])
        half = halves[len(halves) // 2] if halves else float("nan")
        looked = sum(bool(t.get("second_look")) for t in ts)
        label = "A/A" if frac == 0 else f"{frac:+.0%}"
        print(f"{shape:18} {label:>8}  {caught:>2}/{len(ts):<2}  {looked:>3}/{len(ts):<3}  {med:23.3f}  {half:17.3f}"
              f"  {sum(t['seconds'] for t in ts) / len(ts):12.0f}"
              + (f"  ({errors} errors)" if errors else ""))


if __name__ == "__main__":
    sys.exit(main())
