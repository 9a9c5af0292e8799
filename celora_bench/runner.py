"""Runs suites: sets up groups of cases, times them in rounds, looks at the verdict, extends what it
could not decide, and saves after every chunk. Ctrl-C or a SIGTERM (a time limit) keeps every result
already measured.

A chunk is every group that is alive at once: groups are set up until the process holds
CHUNK_RSS_FRACTION of the machine's memory (all four shapes of a quick run fit in one), then the
chunk is measured in rounds spread over all of its groups (celora_bench.rounds):

1. budget.all_rounds rounds of every timed callable, budget.rounds of those the verdict reads
   (the suite's JUDGED components);
2. a look: the suite's verdict over the rows so far; every timed check still "within noise" names
   the (case, component) series it reads, and only those get more rounds, up to each total in
   budget.stages, with a look after each stage, until every check is decided, the stages are spent,
   or the run has lasted budget.max_run_s.
"""
from __future__ import annotations

import gc
import json
import os
import random
import signal
import sys
import time
import traceback
from dataclasses import asdict, replace
from typing import Callable

import torch

from celora_bench import distributed, malloc, memory, registry, results, roofline
from celora_bench.cases import Case
from celora_bench.measure import Prepared, prepare, rows
from celora_bench.rounds import Sampler
from celora_bench.suite import Context, Options, budget_for
from celora_bench.timing import TimingBudget

CHUNK_RSS_FRACTION = 0.4      # set up groups until the process holds this share of the machine's memory


# What one case may raise and still leave the run going: any error (out of memory, a bad shape, a kernel
# that does not compile, a bug in one section) is recorded with its traceback in the results file and the
# next case runs. Ctrl-C and SIGTERM (Stopped) are not errors: they stop the run, keeping what it measured.
CASE_ERRORS = (Exception,)


class Stopped(KeyboardInterrupt):
    """The run was stopped from outside: Ctrl-C (signal SIGINT) or a time limit (SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def status(self) -> str:
        return "partial" if self.signum == signal.SIGTERM else "interrupted"


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
        log: Callable[[str], None] | None = None,
        shard: tuple[int, int] | None = None, budget: TimingBudget | None = None,
        seed: int | None = None) -> results.Run:
    """Measures every planned case not yet in the file; returns the saved Run.

    budget overrides the mode's timing budget. on_start(total, already_done), on_case(case, seconds)
    and log(message) report progress. seed fixes the rounds' random order (default: a fresh one,
    recorded in the file). Raises Stopped after saving, when interrupted.
    """
    t_start = time.perf_counter()
    if tune_malloc:
        malloc.tune()
    if threads:
        torch.set_num_threads(threads)
    budget = budget or budget_for(opts.mode)
    if distributed.world_size_from_env() > 1:
        for name in suite_names:
            if not registry.get(name).DISTRIBUTED:
                raise ValueError(f"suite {name!r} does not run under torchrun; run it as one process")
        distributed.init(opts.device)
        budget = replace(budget, fixed=5 if opts.mode == "quick" else 10)
    if seed is None:
        seed = 0 if distributed.active() else random.SystemRandom().randrange(2**31)
    ctx = Context(budget, torch.get_num_threads(), opts)
    todo = plan(suite_names, opts, filt)
    if shard is not None:
        todo = shard_of(todo, *shard)
    if resume and os.path.exists(out):
        run_ = results.load(out)
        run_.drop_partial()
        run_.status = "running"
    else:
        run_ = results.Run(path=out, run={"suites": suite_names, "options": asdict(opts), "filter": filt,
                                          "shard": list(shard) if shard else None, "argv": sys.argv[1:],
                                          "world_size": distributed.world()})
    run_.run["budget"] = asdict(budget)
    run_.run.setdefault("seeds", []).append(seed)
    run_.writer = distributed.is_writer()
    done = run_.done_case_ids()
    pending = [(s, c) for s, c in todo if c.id not in done]
    if on_start:
        on_start(len(todo), len(todo) - len(pending))
    run_.save()
    if pending:
        warm_up(ctx.options.device)
        run_.machine_info["roofline"] = calibrate(ctx)
        run_.save()
    state = _State(run_, ctx, seed, t_start, on_case, log or (lambda _: None))
    previous = _on_sigterm()
    try:
        for suite, cases in groups(pending):
            state.add(suite, cases)
        state.flush()
    except KeyboardInterrupt as e:
        stop = e if isinstance(e, Stopped) else Stopped(signal.SIGINT)
        state.flush(stopping=True)
        run_.status = stop.status
        finish(run_, suite_names)
        raise stop from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    run_.status = "complete" if not run_.errors else "complete-with-errors"
    run_.run["wall_s"] = round(time.perf_counter() - t_start, 1)
    finish(run_, suite_names)
    return run_


def _on_sigterm():
    """SIGTERM (a time limit) stops the run like Ctrl-C, keeping what was measured; the previous handler."""
    def stop(signum, frame):
        raise Stopped(signum)
    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:                      # not the main thread: no handler
        return None


class _State:
    """The chunk being built and measured."""

    def __init__(self, run_: results.Run, ctx: Context, seed: int, t_start: float, on_case, log):
        self.run_, self.ctx, self.seed, self.t_start = run_, ctx, seed, t_start
        self.on_case, self.log = on_case, log
        self.suite = None
        self.chunk: list[Prepared] = []
        self.sampler: Sampler | None = None

    def add(self, suite, cases: list[Case]) -> None:
        """Sets up one group; measures the chunk first when this group belongs to another suite or the
        machine's memory is taken."""
        if self.chunk and (suite is not self.suite or self._full()):
            self.flush()
        self.suite = suite
        if not suite.timed:
            self._run_cases(suite, cases)
            return
        items = []
        for case in cases:
            try:
                items.append((case, suite.setup(case)))
            except CASE_ERRORS as e:
                _record_error(self.run_, case, e)
        if not items:
            self.run_.save()
            return
        self._say(f"set up {_label(items)} ({len(items)} cases)")
        try:
            self.chunk.append(prepare(items, len(self.chunk)))
        except CASE_ERRORS as e:
            for case, _ in items:
                _record_error(self.run_, case, e)
            self.run_.save()
        if distributed.active():            # every rank must make the same calls: one group at a time
            self.flush()

    def _say(self, msg: str) -> None:
        self.log(f"[{time.perf_counter() - self.t_start:5.1f} s] {msg}")

    def _full(self) -> bool:
        used, total = memory.rss_and_total()
        return used is not None and total is not None and used > CHUNK_RSS_FRACTION * total

    def _run_cases(self, suite, cases: list[Case]) -> None:
        """Suites that measure something else (run_case): one case at a time."""
        for case in cases:
            t0 = time.perf_counter()
            try:
                self.run_.add(_with_ranks(suite.run_case(case, self.ctx)))
            except CASE_ERRORS as e:
                _record_error(self.run_, case, e)
                self.run_.save()
            if self.on_case:
                self.on_case(case, time.perf_counter() - t0)

    def flush(self, stopping: bool = False) -> None:
        """Measures the chunk and frees it; stopped (now, or while measuring), saves what its rounds
        measured so far and marks its cases partial, for a resume to measure again."""
        if not self.chunk:
            return
        t0 = time.perf_counter()
        partial = stopping
        try:
            if not stopping:
                self._measure()
        except KeyboardInterrupt:
            partial = True
            raise
        finally:
            got = [r for p in self.chunk for r in rows(p)]
            if partial:
                ids = {r.case.id for r in got}
                self.run_.run["partial_cases"] = sorted(set(self.run_.run.get("partial_cases", [])) | ids)
            self.run_.add(_with_ranks(got))
            cases = [c for p in self.chunk for c, _ in p.items]
            self.chunk, self.sampler = [], None
            gc.collect()                 # free this chunk's models before the next is built,
            malloc.trim()                # and hand their pages back: the next starts from a clean heap
        if self.on_case:
            for case in cases:
                self.on_case(case, (time.perf_counter() - t0) / len(cases))

    def _measure(self) -> None:
        b, suite = self.ctx.budget, self.suite
        slots = [s for p in self.chunk for s in p.slots]
        seed = self.seed + len(self.run_.rows)          # another random order for every chunk
        self.sampler = sampler = Sampler(slots, self.ctx.options.device, b, self.ctx.threads, seed)
        sampler.warm_up()
        judged_names = suite.JUDGED
        judged = {s.key for s in slots if s.name in judged_names}
        base = b.fixed or b.rounds
        for r in range(base):
            sampler.round(None if b.fixed or r < b.all_rounds else judged)
        self._say(f"{len(self.chunk)} groups: {base} rounds ({b.all_rounds} of every component)")
        done = base
        for total in () if b.fixed else b.stages:
            keys = self._undecided(slots)
            if not keys:
                break
            if b.max_run_s is not None and time.perf_counter() - self.t_start > b.max_run_s:
                self._say(f"run time budget {b.max_run_s:g} s spent: {len(keys)} series stay undecided")
                break
            self._say(f"{len(keys)} series read by undecided checks: rounds {done + 1}-{total}")
            for _ in range(total - done):
                if b.max_run_s is not None and time.perf_counter() - self.t_start > b.max_run_s:
                    break
                sampler.round(keys)
            done = total

    def _undecided(self, slots) -> set[tuple[str, str]]:
        """(case id, component) of every series a timed, undecided check reads."""
        verdict = self.suite.verdict([r for p in self.chunk for r in rows(p)], self.run_.machine_info)
        have = {s.key for s in slots}
        keys = set()
        for c in verdict:
            if c.status == "NOISE" and c.kind == "measured":
                keys |= {k for k in c.reads if k in have}
        return keys


def _label(items) -> str:
    c = items[0][0]
    return f"{c.suite} {c.model} {c.layer} N={c.tokens}"


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
        key = (suite.NAME, suite.group_key(case))
        out.setdefault(key, (suite, []))[1].append(case)
    return list(out.values())


def _record_error(run_: results.Run, case: Case, e: BaseException) -> None:
    run_.errors.append({"case_id": case.id, "error": f"{type(e).__name__}: {e}"[:500],
                        "where": traceback.format_exc(limit=3)[-800:]})


def _with_ranks(rows_: list) -> list:
    """Under torchrun: every rank's raw samples of each row, kept in the row (rank 0's are its own)."""
    if not distributed.active():
        return rows_
    per_rank = distributed.gather([r.samples for r in rows_])
    return [replace(r, extra={**r.extra, "per_rank_samples": [p[i] for p in per_rank]}) if r.samples else r
            for i, r in enumerate(rows_)]


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


def calibrate(ctx: Context) -> dict:
    """The machine's measured roofs in the run's device, dtype and threads (celora_bench.roofline), for the
    results file's machine record; a calibration that fails says why instead."""
    try:
        return roofline.calibrate(ctx.options.device, ctx.options.dtype, ctx.threads).to_json()
    except (RuntimeError, MemoryError, KeyError) as e:
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def verdicts_of(run_: results.Run, suite_names: list[str]) -> dict[str, list[dict]]:
    """Each suite's verdict, computed with the current rules from the rows measured so far, as stored."""
    out = {}
    for name in suite_names:
        checks = registry.checks_of(run_, name)
        out[name] = json.loads(json.dumps([c.to_json() for c in checks]))       # as it reads back from the file
    return out


def finish(run_: results.Run, suite_names: list[str]) -> None:
    """Computes each suite's verdict from the rows measured so far and saves."""
    run_.verdicts = verdicts_of(run_, suite_names)
    run_.save()
