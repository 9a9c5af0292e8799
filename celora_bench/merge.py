"""Joins the parts of a sharded run (``run --shard i/n``) into one results file."""
from __future__ import annotations

from celora_bench import runner
from celora_bench.results import Run


class MergeError(ValueError):
    pass


def merge(parts: list[Run], out: str) -> Run:
    """One Run holding every part's rows; refuses overlapping, missing or mismatched parts."""
    if not parts:
        raise MergeError("merge needs at least one run file")
    shards = []
    for p in parts:
        shard = p.run.get("shard")
        if not shard:
            raise MergeError(f"{p.path!r} is not a sharded run (it was not run with --shard i/n)")
        shards.append(tuple(shard))
    ns = {n for _, n in shards}
    if len(ns) != 1:
        raise MergeError(f"the parts come from different shard counts: {sorted(ns)}")
    n = ns.pop()
    seen = [i for i, _ in shards]
    dup = sorted({i for i in seen if seen.count(i) > 1})
    if dup:
        raise MergeError(f"shard {dup[0]}/{n} is given twice")
    missing = sorted(set(range(1, n + 1)) - set(seen))
    if missing:
        raise MergeError(f"shard {missing[0]}/{n} is missing ({len(missing)} of {n} parts missing)")
    keys = ("suites", "options", "filter")
    first = parts[0]
    for p in parts[1:]:
        for k in keys:
            if p.run.get(k) != first.run.get(k):
                raise MergeError(f"{p.path!r} differs from {first.path!r} in {k}: "
                                 f"{p.run.get(k)!r} vs {first.run.get(k)!r}")
    owner: dict[str, str] = {}
    rows = []
    for p in parts:
        for cid in p.done_case_ids():
            if cid in owner and owner[cid] != p.path:
                raise MergeError(f"case {cid!r} is in both {owner[cid]!r} and {p.path!r}")
            owner[cid] = p.path
        rows += p.rows
    merged = Run(path=out, run={**{k: first.run.get(k) for k in keys}, "shard": None,
                                "merged_from": [p.path for p in parts]},
                 machine_info=first.machine_info, commit_info=first.commit_info, rows=rows,
                 errors=[e for p in parts for e in p.errors])
    merged.run["parts"] = [{"path": p.path, "shard": p.run.get("shard"), "machine_info": p.machine_info,
                            "status": p.status} for p in parts]
    incomplete = [p.path for p in parts if not p.status.startswith("complete")]
    merged.status = "complete" if not incomplete and not merged.errors else (
        "complete-with-errors" if not incomplete else "partial")
    runner.finish(merged, first.run.get("suites") or [])
    return merged
