"""Prints the README's verdict tables (markdown) from a backward-breakdown results file, with intervals.

    python scripts/readme_verdict.py results/readme/agreement/quick-1.json

Reads only the file (celora_bench.report.checks_of recomputes each verdict from the rows). The agreement
across runs is results/readme/agreement/agreement.py.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

from celora_bench import results
from celora_bench.report import STATUS_WORDS, checks_of, value_text, verdict_counts

SUITE = "backward-breakdown"


def _config(scope: str) -> str:
    """'q_proj+o_proj N=1024 r=16 p=0.5 (k/m=0.5) r0=0 lean' -> 'p=0.5 r0=0 lean'."""
    parts = scope.split()
    return " ".join(p for p in parts if p.startswith(("p=", "r0=")) or p in ("lean", "cached"))


def tables(path: str) -> str:
    checks = checks_of(results.load(path), SUITE)
    out = [f"`{path}`: {verdict_counts(checks)}", "", "| scope | time share [95% interval] | verdict (0.40–0.55) "
           "| FLOP share (counted, context) |", "|---|---|---|---|"]
    for c in checks:
        if c.check.startswith("1."):
            flop = c.detail.split("FLOP share ")[1].split(" ")[0] if "FLOP share " in c.detail else "—"
            out.append(f"| {c.scope} | {value_text(c)} | {STATUS_WORDS[c.status]} | {flop} |")
    for prefix, metric, title in (("2.", "time ratio", "time ratio incl. selection [interval] (ratio/p), "
                                                       "line 1.15·p"),
                                  ("3.", "speed-up / bound", "speed-up / Amdahl bound [interval], line 0.95")):
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args()
    print("\n\n".join(tables(p) for p in args.runs))


if __name__ == "__main__":
    main()
