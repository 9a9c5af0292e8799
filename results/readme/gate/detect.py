"""Measures the gate's detection rate of a 1.25× slowdown (the ratio 25% up, against its +15% line) and its
false-alarm rate, at CI's budget. Slowdowns nearer the line are not measured here (--factor 1.18 would measure one).

    python results/readme/gate/detect.py --trials 10 --baseline results/baseline.json

Each trial is one `celora-bench gate` run (the quick suite, then three rechecks of anything flagged),
exactly as CI runs it, in this process. Clean and slowed trials alternate, so both see the same stretch
of the machine. A slowed trial makes one layer shape's CE-LoRA G_y·W0 (CELoRALinear.grad_x_frozen, the
part timed alone and the one the backward calls) FACTOR times slower by sleeping after it: time only,
the FLOPs and bytes are the baseline's, so only the timing rules can catch it. Writes a JSON summary
(every trial: exit status, the regressions with their rechecks, the slowed layer's first-pass ratio)
and prints the counts. The runs themselves go under --work (not committed: ~0.5 MB each).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time

import core
from celora_bench import cli, results
from celora_bench.compare import gated


@contextlib.contextmanager
def slowed(m: int, n: int, factor: float):
    """CE-LoRA layers of shape (m, n) take `factor` times as long in grad_x_frozen (by sleeping)."""
    orig = core.CELoRALinear.grad_x_frozen

    def slow(self, *a, **kw):
        t0 = time.perf_counter()
        out = orig(self, *a, **kw)
        if not self.dense and (self.out_features, self.in_features) == (m, n):
            time.sleep((factor - 1) * (time.perf_counter() - t0))
        return out
    core.CELoRALinear.grad_x_frozen = slow
    try:
        yield
    finally:
        core.CELoRALinear.grad_x_frozen = orig


def layer_ratios(path: str, layer: str) -> dict[str, float]:
    """The layer's G_y·W0 cost checks (CE-LoRA over dense) in one run file."""
    return {k: g.value for k, g in gated(results.load(path)).items()
            if g.check == "cost" and dict(g.labels).get("layer") == layer}


def trial(kind: str, i: int, args) -> dict:
    out = os.path.join(args.work, f"{kind}-{i}.json")
    log = io.StringIO()
    t0 = time.time()
    ctx = slowed(args.m, args.n, args.factor) if kind == "slowed" else contextlib.nullcontext()
    with ctx, contextlib.redirect_stdout(log):
        code = cli.main(["gate", "--baseline", args.baseline, "--out", out])
    text = log.getvalue()
    rechecks = sorted(p for p in os.listdir(args.work) if p.startswith(f"{kind}-{i}-recheck"))
    return {"kind": kind, "trial": i, "exit": code, "seconds": round(time.time() - t0, 1),
            "regression_lines": [ln for ln in text.splitlines() if "REGRESSION" in ln and "│" in ln],
            "summary": [ln for ln in text.splitlines() if "comparisons over" in ln],
            "first_pass": layer_ratios(out, args.layer),
            "rechecks": [layer_ratios(os.path.join(args.work, p), args.layer) for p in rechecks]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--factor", type=float, default=1.25)
    ap.add_argument("--layer", default="q_proj+o_proj", help="the layer shape slowed (quick mode's label)")
    ap.add_argument("--m", type=int, default=2048)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--baseline", default="results/baseline.json")
    ap.add_argument("--work", default="results/runs/gate-detect")
    ap.add_argument("--out", default="results/readme/gate/detection.json")
    args = ap.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    baseline = {k: v for k, v in layer_ratios(args.baseline, args.layer).items()}
    done = []
    for i in range(1, args.trials + 1):
        for kind in ("clean", "slowed"):
            done.append(trial(kind, i, args))
            t = done[-1]
            print(f"{kind:6s} {i:2d}: exit {t['exit']} in {t['seconds']:.0f} s; "
                  + "; ".join(t["summary"]), flush=True)
            with open(args.out, "w") as f:
                json.dump({"factor": args.factor, "layer": args.layer, "baseline": args.baseline,
                           "baseline_ratios": baseline, "trials": done}, f, indent=1)
    caught = sum(t["exit"] == 1 for t in done if t["kind"] == "slowed")
    alarms = sum(t["exit"] != 0 for t in done if t["kind"] == "clean")
    n = args.trials
    print(f"slowed {args.layer} G_y·W0 x{args.factor}: caught in {caught}/{n}; clean runs failing: {alarms}/{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
