"""Do the verdict's 95% intervals cover the drift between runs? Out of sample, on runs nothing was tuned on.

    python results/readme/agreement/agreement.py results/readme/agreement/quick-*.json

For every timed check present in every run: does run i's interval contain the mean of the other runs'
values? An honest 95% interval does so in about 92% of (check, run) pairs when the others are four
runs (the others' mean has noise of its own, so slightly under 95%). Also: checks that are PASS in one
run and FAIL in another (none allowed), the share of timed checks each run decided (PASS or FAIL), and
each run's wall time. Verdicts are recomputed from the rows with the current rules (registry.checks_of).
"""
from __future__ import annotations

import argparse
import statistics
import sys

from celora_bench import results
from celora_bench.render.view import checks_of

SUITE = "backward-breakdown"


def key(c) -> tuple[str, str, str]:
    return c.check, c.scope, c.metric


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="results files of one commit, measured one after the other")
    args = ap.parse_args(argv)
    if len(args.runs) < 3:
        print("agreement: give at least 3 runs", file=sys.stderr)
        return 2
    loaded = [results.load(p) for p in args.runs]
    runs = [{key(c): c for c in checks_of(r, SUITE) if c.kind == "measured"} for r in loaded]
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    covered, pairs, misses = 0, 0, []
    for k in keys:
        for i, r in enumerate(runs):
            others = statistics.fmean(o[k].value for j, o in enumerate(runs) if j != i)
            c = r[k]
            hit = c.lo is not None and c.hi is not None and c.lo <= others <= c.hi
            covered += hit
            pairs += 1
            if not hit:
                misses.append((k, i, c, others))
    flips = [k for k in keys if {r[k].status for r in runs} >= {"PASS", "FAIL"}]
    print(f"{len(args.runs)} runs, {len(keys)} timed checks in all of them")
    for path, run, r in zip(args.runs, loaded, runs):
        n = len(r)
        decided = sum(c.status in ("PASS", "FAIL") for c in r.values())
        wall = run.run.get("wall_s")
        print(f"  {path}: {decided}/{n} decided ({decided / n:.0%}); "
              + ", ".join(f"{s} {sum(c.status == s for c in r.values())}" for s in ("PASS", "FAIL", "NOISE"))
              + (f"; measured in {wall:.0f} s" if wall else ""))
    print(f"coverage: run i's interval holds the mean of the other runs' values in {covered}/{pairs} "
          f"(check, run) pairs = {covered / pairs:.1%}")
    print(f"PASS in one run and FAIL in another: {len(flips)}")
    for k in flips:
        print("  flip: " + " | ".join(k) + ": " + ", ".join(f"{r[k].value:.4g} {r[k].status}" for r in runs))
    for k, i, c, others in misses:
        lo = "—" if c.lo is None else f"{c.lo:.4g}"
        hi = "—" if c.hi is None else f"{c.hi:.4g}"
        print(f"  not covered: run {i + 1} {k[0][:2]} {k[1]}: {c.value:.4g} [{lo}, {hi}], others' mean {others:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
