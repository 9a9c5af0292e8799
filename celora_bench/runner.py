"""Runs suites case by case, saving after every case; Ctrl-C keeps what was measured."""
from __future__ import annotations

import gc
import os
import sys
import time
import traceback
from dataclasses import asdict, replace
from typing import Callable

import torch

from celora_bench import distributed, malloc, registry, remeasure, results
from celora_bench.cases import Case
from celora_bench.measure import measure_group, retime
from celora_bench.suite import Context, Options, budget_for
from celora_bench.timing import TimingBudget


def default_out(suites: list[str]) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("results", "runs", f"{stamp}-{'+'.join(suites)}.json")


def plan(suite_names: list[str], opts: Options, filt) -> list[tuple[object, Case]]:
    """The cases to run, in order; filt is a substring, or a list of them (any matches)."""
    filters = [filt] if isinstance(filt, str) else list(filt or [])
    todo = []
    for name in suite_names:
        suite = registry.get(name)
        todo += [(suite, c) for c in suite.cases(opts) if not filters or any(f in c.id for f in filters)]
    ids = [c.id for _, c in todo]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"two cases share the id {dup!r}; a suite's cases must differ in their id")
    return todo


def run(suite_names: list[str], opts: Options, out: str, *, filt=None,
        resume: bool = False, threads: int | None = None, tune_malloc: bool = True,
        on_start: Callable[[int, int], None] | None = None,
        on_case: Callable[[Case, float], None] | None = None,
        shard: tuple[int, int] | None = None, budget: TimingBudget | None = None) -> results.Run:
    """Measures every planned case not yet in the file; returns the saved Run.

    budget overrides the mode's timing budget (the gate's rechecks measure longer).
    on_start(total, already_done) and on_case(case, seconds) report progress.
    """
    if tune_malloc:
        malloc.tune()
    if threads:
        torch.set_num_threads(threads)
    budget = budget or budget_for(opts.mode)
    if distributed.world_size_from_env() > 1:
        for name in suite_names:
            if not getattr(registry.get(name), "DISTRIBUTED", False):
                raise ValueError(f"suite {name!r} does not run under torchrun; run it as one process")
        distributed.init(opts.device)
        budget = replace(budget, fixed=5 if opts.mode == "quick" else 10)
    ctx = Context(budget, torch.get_num_threads(), opts)
    todo = plan(suite_names, opts, filt)
    if shard is not None:
        todo = shard_of(todo, *shard)
    if resume and os.path.exists(out):
        run_ = results.load(out)
        run_.status = "running"
    else:
        run_ = results.Run(path=out, run={"suites": suite_names, "options": asdict(opts), "filter": filt,
                                          "shard": list(shard) if shard else None, "argv": sys.argv[1:],
                                          "world_size": distributed.world()})
    run_.writer = distributed.is_writer()
    done = run_.done_case_ids()
    pending = [(s, c) for s, c in todo if c.id not in done]
    if on_start:
        on_start(len(todo), len(todo) - len(pending))
    run_.save()
    if pending:
        warm_up(ctx.options.device)
    try:
        for suite, cases in groups(pending):
            t0 = time.perf_counter()
            run_group(run_, suite, cases, ctx)
            if on_case:
                for case in cases:
                    on_case(case, (time.perf_counter() - t0) / len(cases))
    except KeyboardInterrupt:
        run_.status = "interrupted"
        finish(run_, suite_names)
        raise
    run_.status = "complete" if not run_.errors else "complete-with-errors"
    finish(run_, suite_names)
    return run_


def shard_of(todo: list[tuple[object, Case]], i: int, n: int) -> list[tuple[object, Case]]:
    """The i-th of n parts (1-based), dealt group by group so providers timed together stay together."""
    out = []
    for j, (suite, cases) in enumerate(groups(todo)):
        if j % n == i - 1:
            out += [(suite, c) for c in cases]
    return out


def groups(pending: list[tuple[object, Case]]) -> list[tuple[object, list[Case]]]:
    """Consecutive runs of cases that a suite measures together (its group_key), in plan order."""
    out: dict[tuple, tuple[object, list[Case]]] = {}
    for suite, case in pending:
        key = (suite.NAME, suite.group_key(case) if hasattr(suite, "group_key") else case.id)
        out.setdefault(key, (suite, []))[1].append(case)
    return list(out.values())


def _record_error(run_: results.Run, case: Case, e: BaseException) -> None:
    run_.errors.append({"case_id": case.id, "error": f"{type(e).__name__}: {e}"[:500],
                        "where": traceback.format_exc(limit=3)[-800:]})


def _with_ranks(rows: list) -> list:
    """Under torchrun: every rank's raw samples of each row, kept in the row (rank 0's are its own)."""
    if not distributed.active():
        return rows
    per_rank = distributed.gather([r.samples for r in rows])
    return [replace(r, extra={**r.extra, "per_rank_samples": [p[i] for p in per_rank]}) if r.samples else r
            for i, r in enumerate(rows)]


def run_group(run_: results.Run, suite, cases: list[Case], ctx: Context) -> None:
    """Measures one group and saves; a case that fails is recorded and the others go on."""
    if not hasattr(suite, "setup"):
        for case in cases:
            try:
                run_.add(_with_ranks(suite.run_case(case, ctx)))
            except (RuntimeError, MemoryError, ValueError) as e:
                _record_error(run_, case, e)
                run_.save()
        return
    items = []
    for case in cases:
        try:
            items.append((case, suite.setup(case)))
        except (RuntimeError, MemoryError, ValueError) as e:
            _record_error(run_, case, e)
    try:
        if items:
            run_.add(_with_ranks(measure_settled(suite, items, ctx)))
    except (RuntimeError, MemoryError, ValueError) as e:
        for case, _ in items:
            _record_error(run_, case, e)
    run_.save()
    del items
    gc.collect()                     # free this group's models before the next is built,
    malloc.trim()                    # and hand their pages back: the next starts from a clean heap


def measure_settled(suite, items, ctx: Context) -> list:
    """The group's rows; a component too noisy to judge (celora_bench.remeasure) is timed again across
    the group with twice the budget, up to MAX_ATTEMPTS in all, every attempt's samples kept. Under
    torchrun every rank must make the same calls, so there is no re-measurement."""
    rows = measure_group(items, ctx.budget, ctx.threads)
    judged = getattr(suite, "JUDGED", remeasure.JUDGED)
    for attempt in range(2, remeasure.MAX_ATTEMPTS + 1):
        why = remeasure.reasons(rows, judged)
        if not why or distributed.active():
            break
        names = {name for _, name in why}
        again = retime(items, names, remeasure.longer(ctx.budget, attempt - 1), ctx.threads)
        rows = remeasure.with_attempts(rows, again, why, attempt)
    return rows


def warm_up(device: str, seconds: float = 1.5) -> None:
    """Spins up the BLAS thread pool and grows the heap before the first timed case,
    which otherwise pays for both (seen here: +18% on the first case of a run)."""
    a = torch.randn(1024, 1024, device=device)
    big = torch.ones(64 * 2**20, device=device)     # 256 MiB touched once, then kept by the tuned heap
    del big
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a = torch.mm(a, a).div_(1024.0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def finish(run_: results.Run, suite_names: list[str]) -> None:
    """Computes each suite's verdict from the rows measured so far and saves."""
    for name in suite_names:
        suite = registry.get(name)
        rows = [r for r in run_.rows if r.case.suite == name]
        run_.verdicts[name] = [c.to_json() for c in suite.verdict(rows)] if rows else []
    run_.save()
