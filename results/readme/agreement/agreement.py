"""Do the verdict's intervals cover the drift between runs? Out of sample, on runs nothing was tuned on.

    python results/readme/agreement/agreement.py results/readme/agreement/quick-*.json
    python results/readme/agreement/agreement.py --fit-run-sd results/readme/agreement/tuning/quick-*.json

--fit-run-sd: the between-run sd (intervals.RUN_SD) is chosen on other runs than those it is checked on:
the runs given are re-judged with each sd of a grid (as if each file had recorded it) and the smallest
sd whose coverage reaches TARGET (an honest 95.5% interval's, below) is printed; the default in
celora_bench/intervals.py is that figure, and runs made afterwards are its test.

For every timed check present in every run: does run i's interval contain the mean of the other runs'
values? With honest 95.5% intervals and four other runs (whose mean has noise of its own) that happens
in about 93% of (check, run) pairs. Reported overall and per stopping stage: the look at which the run
decided the check (run["looks"]: the checks each look left undecided), "final" for checks decided (or
not) only by the final verdict. Also: checks that are PASS in one run and FAIL in another (none allowed),
the share of timed checks each run decided, the share of checks with the same status in every run, and
each run's wall time and commit. Verdicts are recomputed from the rows with the current rules.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict

from celora_bench import results
from celora_bench.render.view import checks_of

SUITE = "backward-breakdown"
TARGET = 0.93          # an honest 95.5% interval vs the mean of four other runs: P(|Z| < 2.005 / sqrt(1 + 1/4))
GRID = [i / 200 for i in range(0, 21)]          # 0 ... 0.10 on the log scale


def key(c) -> tuple[str, str, str]:
    return c.check, c.scope, c.metric


def stage_of(run, k) -> str:
    """The look (1-based, with its round count) at which the run stopped extending check k, or "final"."""
    for i, look in enumerate(run.run.get("looks") or [], 1):
        if list(k) not in look["undecided"]:
            return f"look {i} (round {look['round']})" if i > 1 or look["undecided"] else f"look {i}"
    return "final"


def coverage(loaded, runs) -> tuple[int, int, list, dict]:
    """(covered, pairs, misses, per stage [hits, pairs]) of run i's interval against the others' mean."""
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    per_stage: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    covered, pairs, misses = 0, 0, []
    for k in keys:
        for i, r in enumerate(runs):
            others = statistics.fmean(o[k].value for j, o in enumerate(runs) if j != i)
            c = r[k]
            hit = c.lo is not None and c.hi is not None and c.lo <= others <= c.hi
            stage = stage_of(loaded[i], k).split(" (")[0]
            per_stage[stage][0] += hit
            per_stage[stage][1] += 1
            covered += hit
            pairs += 1
            if not hit:
                misses.append((k, i, c, others, stage))
    return covered, pairs, misses, per_stage


def judged(loaded) -> list[dict]:
    return [{key(c): c for c in checks_of(r, SUITE) if c.kind == "measured"} for r in loaded]


def fit_run_sd(loaded) -> int:
    """Re-judges the runs with each between-run sd of GRID; prints coverage and the smallest sd reaching TARGET."""
    best = None
    print(f"between-run sd (log scale) -> coverage of {len(loaded)} runs re-judged with it (target {TARGET:.0%})")
    for sd in GRID:
        for r in loaded:
            r.machine_info["run_sd"] = sd
        covered, pairs, _, per_stage = coverage(loaded, judged(loaded))
        decided = sum(c.status in ("PASS", "FAIL") for r in judged(loaded) for c in r.values())
        print(f"  {sd:.3f}: {covered}/{pairs} = {covered / pairs:.1%}; decided {decided}; "
              + ", ".join(f"{s} {h}/{n}" for s, (h, n) in sorted(per_stage.items())))
        if best is None and covered / pairs >= TARGET:
            best = sd
    print(f"smallest sd reaching {TARGET:.0%}: {best}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="results files of one commit, measured one after the other")
    ap.add_argument("--fit-run-sd", action="store_true", help="choose the between-run sd on these runs")
    args = ap.parse_args(argv)
    if len(args.runs) < 3:
        print("agreement: give at least 3 runs", file=sys.stderr)
        return 2
    loaded = [results.load(p) for p in args.runs]
    if args.fit_run_sd:
        return fit_run_sd(loaded)
    runs = judged(loaded)
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    covered, pairs, misses, per_stage = coverage(loaded, runs)
    flips = [k for k in keys if {r[k].status for r in runs} >= {"PASS", "FAIL"}]
    same = [k for k in keys if len({r[k].status for r in runs}) == 1]
    same_decided = [k for k in same if runs[0][k].status != "NOISE"]
    commits = {(r.commit_info or {}).get("id", "?")[:10] + ("+dirty" if (r.commit_info or {}).get("dirty") else "")
               for r in loaded}
    print(f"{len(args.runs)} runs at commit {', '.join(sorted(commits))}, {len(keys)} timed checks in all of them")
    for path, run, r in zip(args.runs, loaded, runs):
        n = len(r)
        decided = sum(c.status in ("PASS", "FAIL") for c in r.values())
        wall = run.run.get("wall_s")
        print(f"  {path}: {decided}/{n} decided ({decided / n:.0%}); "
              + ", ".join(f"{s} {sum(c.status == s for c in r.values())}" for s in ("PASS", "FAIL", "NOISE"))
              + (f"; measured in {wall:.0f} s" if wall else "") + f"; {run.machine_info.get('cpu')}"
              + f"; between-run sd {run.machine_info.get('run_sd', 0)}")
    print(f"coverage: run i's interval holds the mean of the other runs' values in {covered}/{pairs} "
          f"(check, run) pairs = {covered / pairs:.1%}")
    for stage in sorted(per_stage):
        h, n = per_stage[stage]
        print(f"  stopped at {stage}: {h}/{n} = {h / n:.1%}")
    print(f"PASS in one run and FAIL in another: {len(flips)}")
    print(f"same status in all {len(runs)} runs: {len(same)}/{len(keys)} ({len(same_decided)} of them decided)")
    for k in flips:
        print("  flip: " + " | ".join(k) + ": " + ", ".join(f"{r[k].value:.4g} {r[k].status}" for r in runs))
    for k, i, c, others, stage in misses:
        lo = "—" if c.lo is None else f"{c.lo:.4g}"
        hi = "—" if c.hi is None else f"{c.hi:.4g}"
        print(f"  not covered: run {i + 1} {k[0][:2]} {k[1]}: {c.value:.4g} [{lo}, {hi}], others' mean "
              f"{others:.4g} ({stage})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
