"""A chunk of cases measured in rounds: set up in this process (InProcess) or in fresh worker processes
(Workers, celora_bench.workers). The runner (celora_bench.runner) decides the rounds; both answer the same
calls: start, round(number, keys), rows, close, and keys (the timed (case id, component) slots)."""
from __future__ import annotations

import random
from dataclasses import asdict
from typing import Callable

from celora_bench.cases import Case
from celora_bench.measure import Prepared, rows
from celora_bench.rounds import Sampler
from celora_bench.timing import TimingBudget
from celora_bench.workers import Pool, WorkerError


class ChunkFailed(Exception):
    """The chunk could not be set up (recorded as errors of its cases); the run goes on."""


class InProcess:
    """The chunk's groups, set up in this process, timed by one Sampler."""

    def __init__(self, chunk: list[Prepared], device: str, budget: TimingBudget, threads: int, seed: int,
                 first_round: int):
        self.chunk = chunk
        self.slots = [s for p in chunk for s in p.slots]
        self.keys = {s.key for s in self.slots}
        self.cases = [c for p in chunk for c, _ in p.items]
        self.label = f"{len(chunk)} groups"
        self.sampler = Sampler(self.slots, device, budget, threads, seed, first_round)

    def start(self) -> None:
        self.sampler.warm_up()

    def round(self, number: int, keys) -> None:
        self.sampler.round(keys, number)

    def rows(self) -> list:
        return [r for p in self.chunk for r in rows(p)]

    def close(self) -> None:
        self.sampler = None


class Workers:
    """The chunk's cases set up in n fresh processes; rounds dealt to them, every block of n rounds visiting
    each worker once in random order (celora_bench.workers)."""

    def __init__(self, cases: list[Case], n: int, suite: str, device: str, threads: int, tune_malloc: bool,
                 budget: TimingBudget, seed: int, say: Callable[[str], None], errors: list):
        self.cases, self.suite, self.say, self.errors = list(cases), suite, say, errors
        self.pool = Pool(n)
        self.setup = dict(device=device, threads=threads, tune_malloc=tune_malloc,
                          budget={**asdict(budget), "stages": list(budget.stages)}, seed=seed)
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.label = f"{len(cases)} cases in {n} worker processes"

    @property
    def keys(self) -> set:
        return self.pool.keys

    def start(self) -> None:
        self.say(f"setting up {len(self.cases)} cases in {self.pool.n} worker processes")
        try:
            self.pool.start(self.suite, self.cases, **self.setup)
        except WorkerError as e:
            for case in self.cases:
                self.errors.append({"case_id": case.id, "error": str(e)[:500], "where": "worker setup"})
            raise ChunkFailed() from None
        for err in self.pool.errors:
            self.errors.append({**err, "where": "setup in worker 0"})

    def round(self, number: int, keys) -> None:
        if not self.order:                          # the next block: each worker once, in random order
            self.order = list(range(self.pool.n))
            self.rng.shuffle(self.order)
        self.pool.round(self.order.pop(), number, keys)

    def rows(self) -> list:
        return self.pool.rows()

    def close(self) -> None:
        self.pool.close()


def case_bytes(case: Case) -> int:
    """What one case holds in a worker, set up and warmed up: W0 and what CE-LoRA keeps of it, the inputs,
    outputs and buffers of its callables (measured here: 3.6-3.9 GB of RSS for the 24 quick cases, which
    this estimates at 3.8 GB)."""
    item = {"float64": 8, "float32": 4}.get(case.dtype, 2)
    return item * (3 * case.m * case.n // 2 + 4 * case.tokens * (case.m + case.n))
