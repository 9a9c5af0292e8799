"""gpu_check.sh's read-back: per step, its results file's timed rows, FAILs, errors and undecided checks.

    python3 scripts/gpu_readback.py DRY STEP=FILE ...      (DRY: 1 for a dry run, whose timed FAILs at tiny
                                                             CPU sizes are listed, not judged)
Prints one line per step and one per FAIL, undecided check and error; exit 1 when a step has no results file,
no timed row (a row with samples), a FAIL or an error. Reads the JSON alone (no celora_bench import)."""
import json
import os
import sys


def main(dry: bool, pairs: list[str]) -> int:
    bad = []
    for arg in pairs:
        step, path = arg.split("=", 1)
        if not os.path.exists(path):
            print(f"{step}: no results file ({path})")
            bad.append(f"{step} (no results file)")
            continue
        with open(path) as f:
            run = json.load(f)
        timed = sum(1 for r in run.get("rows", []) if r.get("samples"))
        checks = [c for cs in run.get("verdicts", {}).values() for c in cs]
        fails = [c for c in checks if c["status"] == "FAIL" and not (dry and c.get("kind") == "measured")]
        unjudged = [c for c in checks if c["status"] == "FAIL" and c not in fails]
        noise = [c for c in checks if c["status"] == "NOISE"]
        print(f"{step}: status {run.get('status')}, {timed} timed rows, {len(fails)} FAIL, {len(noise)} undecided, "
              f"{len(run.get('errors', []))} errors ({path})")
        for word, cs in (("FAIL", fails), ("FAIL (dry run: timed at tiny CPU sizes, not judged)", unjudged),
                         ("undecided", noise)):
            for c in cs:
                print(f"  {word} {c['check']} | {c['scope']} | {c['metric']}")
        for e in run.get("errors", []):
            print(f"  error in {e['case_id']}: {e['error']}")
        if timed == 0:
            bad.append(f"{step} (no timed rows)")
        if fails or run.get("errors"):
            bad.append(f"{step} (a FAIL or an error)")
    for b in bad:
        print(f"FAILED: {b}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] == "1", sys.argv[2:]))
