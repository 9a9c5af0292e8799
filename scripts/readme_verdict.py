"""Prints the README's verdict tables (markdown) from backward-breakdown results files, with intervals.

    python scripts/readme_verdict.py results/readme/backward-breakdown-quick.json
    python scripts/readme_verdict.py RUN1 RUN2 RUN3 --agreement     # the spread of each check across runs

Reads only the files (celora_bench.report.checks_of recomputes each verdict from the rows).
"""
from __future__ import annotations

import argparse
from collections import defaultdict

from celora_bench import results
from celora_bench.report import STATUS_WORDS, checks_of, value_text, verdict_counts

SUITE = "backward-breakdown"


def _config(scope: str) -> str:
    """'q_proj N=1024 r=16 p=0.5 (k/m=0.5) r0=0 lean' -> 'p=0.5 r0=0 lean'."""
    parts = scope.split()
    return " ".join(p for p in parts if p.startswith(("p=", "r0=")) or p in ("lean", "cached"))


def tables(path: str) -> str:
    checks = checks_of(results.load(path), SUITE)
    out = [f"`{path}`: {verdict_counts(checks)}", "", "| scope | FLOP share (counted) | time share [95% interval] "
           "| verdict (0.40–0.55) |", "|---|---|---|---|"]
    share = defaultdict(dict)
    for c in checks:
        if c.check.startswith("1."):
            share[c.scope][c.metric.split(" (")[0]] = c
    for scope, m in share.items():
        f, t = m.get("FLOP share"), m.get("time share")
        out.append(f"| {scope} | {f.value:.3f} | {value_text(t)} | FLOPs {STATUS_WORDS[f.status]}, "
                   f"time {STATUS_WORDS[t.status]} |")
    for prefix, metric, title in (("2.", "time ratio", "time ratio incl. selection [interval] (ratio/p)"),
                                  ("3.", "speed-up / bound", "speed-up / Amdahl bound [interval]")):
        cells = defaultdict(dict)
        for c in checks:
            if c.check.startswith(prefix) and c.metric.startswith(metric):
                cells[c.scope.split()[0]][_config(c.scope)] = c
        configs = list(dict.fromkeys(k for row in cells.values() for k in row))
        out += ["", f"{title}:", "", "| layer | " + " | ".join(configs) + " |", "|---" * (len(configs) + 1) + "|"]
        for layer, row in cells.items():
            def cell(c):
                if c is None:
                    return "—"
                extra = f" ({c.detail.split(';')[0].split('= ')[-1]}/p)" if prefix == "2." else ""
                return f"{value_text(c)}{extra} {STATUS_WORDS[c.status]}"
            out.append(f"| {layer} | " + " | ".join(cell(row.get(k)) for k in configs) + " |")
    return "\n".join(out)


def agreement(paths: list[str]) -> str:
    """No check may be PASS in one run and FAIL in another; the largest spread of each share."""
    runs = [{(c.check, c.scope, c.metric): c for c in checks_of(results.load(p), SUITE)} for p in paths]
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    flips = [k for k in keys if {r[k].status for r in runs} >= {"PASS", "FAIL"}]
    lines = [f"{p}: {verdict_counts(list(r.values()))}" for p, r in zip(paths, runs)]
    spread = max(((max(r[k].value for r in runs) - min(r[k].value for r in runs), k) for k in keys
                  if k[2].startswith("time share")), default=(0.0, None))
    lines.append(f"checks compared: {len(keys)}; PASS in one run and FAIL in another: {len(flips)}")
    for k in flips:
        lines.append(f"  flip: {k}: " + ", ".join(f"{r[k].value:.4g} {r[k].status}" for r in runs))
    if spread[1]:
        lines.append(f"largest spread of a time share across the runs: {spread[0]:.4f} ({spread[1][1]})")
    for k in keys:
        if k[2].startswith("time share"):
            vals = [r[k].value for r in runs]
            lines.append(f"  {k[1]}: " + ", ".join(f"{v:.3f}" for v in vals) + f" (spread {max(vals) - min(vals):.3f})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--agreement", action="store_true")
    args = ap.parse_args()
    print(agreement(args.runs) if args.agreement else "\n\n".join(tables(p) for p in args.runs))


if __name__ == "__main__":
    main()
