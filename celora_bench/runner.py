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

from celora_bench import device_memory, distributed, malloc, memory, registry, results, roofline
from celora_bench import intervals as I
from celora_bench.cases import Case
from celora_bench.chunk import ChunkFailed, InProcess, Workers, case_bytes
from celora_bench.measure import Prepared, prepare
from celora_bench.suite import Context, Options, budget_for
from celora_bench.timing import TimingBudget
from celora_bench.workers import WorkerError

CHUNK_RSS_FRACTION = 0.4      # set up groups until the process holds this share of the machine's memory
WORKER_FRACTION = 0.7         # worker processes: every worker holds the chunk; all of them together this share
THIN = 3                      # a decided check's series still get every THIN-th extension round (see _measure)


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
    budget = budget or budget_for(opts.mode, opts.device)
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
        run_.machine_info["run_sd"] = I.default_run_sd()      # the between-run sd its intervals carry
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
    """The chunk being built and measured: groups set up here (_InProcess) or cases handed to worker
    processes (_Workers, the CPU default for suites that allow it)."""

    def __init__(self, run_: results.Run, ctx: Context, seed: int, t_start: float, on_case, log):
        self.run_, self.ctx, self.seed, self.t_start = run_, ctx, seed, t_start
        self.on_case, self.log = on_case, log
        self.suite = None
        self.chunk: list[Prepared] = []
        self.cases: list[Case] = []                 # a worker chunk: cases not yet set up anywhere
        self.next_round = 1 + max((r for row in run_.rows for r in row.rounds), default=-1)

    def _workers(self, suite) -> int:
        b, opts = self.ctx.budget, self.ctx.options
        ok = suite.WORKERS and b.fixed is None and not distributed.active() and not opts.device.startswith("cuda")
        return b.workers if ok else 1

    def add(self, suite, cases: list[Case]) -> None:
        """Sets up one group (or queues it for the workers); measures the chunk first when this group
        belongs to another suite or the machine's memory is taken."""
        if (self.chunk or self.cases) and (suite is not self.suite or self._full(suite, cases)):
            self.flush()
        self.suite = suite
        if not suite.timed:
            self._run_cases(suite, cases)
            return
        if self._workers(suite) > 1:
            self.cases += cases
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

    def _full(self, suite, more: list[Case]) -> bool:
        if self.cases:                      # workers: each holds the chunk; estimate before setting up
            n = self._workers(suite)
            total = memory.rss_and_total()[1] or float("inf")
            return n * sum(map(case_bytes, self.cases + more)) > WORKER_FRACTION * total
        return device_memory.over_chunk_limit(self.ctx.options.device, CHUNK_RSS_FRACTION)

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
        if not (self.chunk or self.cases):
            return
        t0 = time.perf_counter()
        seed = self.seed + len(self.run_.rows)          # another random order for every chunk
        ctx = self.ctx
        if self.cases:
            ex = Workers(self.cases, self._workers(self.suite), self.suite.NAME, ctx.options.device, ctx.threads,
                         self.run_.machine_info.get("malloc", "default") != "default", ctx.budget, seed,
                         self._say, self.run_.errors)
        else:
            ex = InProcess(self.chunk, ctx.options.device, ctx.budget, ctx.threads, seed, self.next_round)
        partial = stopping
        try:
            if not stopping:
                ex.start()
                self._measure(ex)
        except ChunkFailed:
            pass
        except WorkerError as e:                     # a worker died mid-run: keep what the rounds measured
            partial = True
            for case in ex.cases:
                _record_error(self.run_, case, e)
        except KeyboardInterrupt:
            partial = True
            raise
        finally:
            got = ex.rows()
            if partial:
                ids = {r.case.id for r in got}
                self.run_.run["partial_cases"] = sorted(set(self.run_.run.get("partial_cases", [])) | ids)
            self.run_.add(_with_ranks(got))
            cases = ex.cases
            ex.close()
            self.chunk, self.cases = [], []
            gc.collect()                 # free this chunk's models before the next is built,
            malloc.trim()                # and hand their pages back: the next starts from a clean heap
            if self.ctx.options.device.startswith("cuda"):
                torch.cuda.empty_cache()  # free memory, as the next chunk's limit reads it, counts the reserve
        if self.on_case:
            for case in cases:
                self.on_case(case, (time.perf_counter() - t0) / max(1, len(cases)))

    def _round(self, ex, keys) -> None:
        ex.round(self.next_round, keys)
        self.next_round += 1

    def _measure(self, ex) -> None:
        """Rounds: budget.all_rounds of every timed callable, then budget.rounds of those the verdict reads;
        then a look at each stage (intervals at the interim level, celora_bench.intervals): series of
        checks still within noise get every round of the next stage, series of decided checks every
        THIN-th one, so every check's rounds span the whole run and a drift over it cannot bias an early
        decision."""
        b, suite = self.ctx.budget, self.suite
        judged = {k for k in ex.keys if k[1] in suite.JUDGED}
        base = b.fixed or b.rounds
        for r in range(base):
            self._round(ex, None if b.fixed or r < b.all_rounds else judged)
        self._say(f"{ex.label}: {base} rounds ({b.all_rounds} of every component)")
        done = base
        for total in () if b.fixed else b.stages:
            keys = self._undecided(ex)
            if not keys:
                break
            if b.max_run_s is not None and time.perf_counter() - self.t_start > b.max_run_s:
                self._say(f"run time budget {b.max_run_s:g} s spent: {len(keys)} series stay undecided")
                break
            self._say(f"{len(keys)} series read by undecided checks: rounds {done + 1}-{total}")
            for r in range(done, total):
                if b.max_run_s is not None and time.perf_counter() - self.t_start > b.max_run_s:
                    break
                self._round(ex, keys | judged if r % THIN == 0 else keys)
            done = total

    def _undecided(self, ex) -> set[tuple[str, str]]:
        """(case id, component) of every series a timed check still within noise reads, at the interim level;
        each look is recorded in the run (run["looks"]: its round count and the checks it left undecided)."""
        with I.interim():
            verdict = self.suite.verdict(ex.rows(), self.run_.machine_info)
        keys, open_ = set(), []
        for c in verdict:
            if c.status == "NOISE" and c.kind == "measured":
                keys |= {k for k in c.reads if k in ex.keys}
                open_.append([c.check.id, c.scope, c.metric])
        self.run_.run.setdefault("looks", []).append({"round": self.next_round, "undecided": open_})
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
