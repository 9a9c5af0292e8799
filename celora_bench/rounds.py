"""The sampling design: every timed callable of a run measured in rounds spread over the run.

On this shared 2-core machine the variance between runs dominates the variance within one: the
same product took 190 ms in one run and 270 ms in the next, while four samples taken back to back
agreed within 2%. Samples taken back to back therefore say little about the next run. Following
randomized multiple interleaved trials (Abedi & Brecht, ICPE 2017) and Google Benchmark's random
interleaving, and repeating at the level that carries the variance (Kalibera & Jones, ISMM 2013):

- a round gives every selected callable one block (celora_bench.timing), visiting the groups in a
  random order, each group's components in a random order and each component's providers in a
  random order; the providers of one component run next to each other, as a duet (Bulej et al.
  2020), so their ratio is paired tightly;
- rounds repeat over everything alive at once (every group of a quick run), so each group's
  samples are spread over the whole run instead of one stretch of it;
- every sample records its round; intervals are taken between rounds (celora_bench.intervals).

A Sampler holds the slots; the runner decides how many rounds and which slots (celora_bench.runner).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch.utils import benchmark

from celora_bench import timing
from celora_bench.timing import TimingBudget


@dataclass
class Slot:
    """One timed callable: (case id, component), its function and what it has measured so far."""

    group: int
    case_id: str
    name: str
    fn: Callable[[], object]
    samples: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    kernel: list[float] = field(default_factory=list)          # device time per round (CUDA)
    kernel_rounds: list[int] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return self.case_id, self.name


class Sampler:
    """Runs rounds over slots; each round appends one sample (and its round number) to every slot it visits."""

    def __init__(self, slots: Iterable[Slot], device: str, budget: TimingBudget, threads: int, seed: int,
                 first_round: int = 0):
        self.slots = list(slots)
        self.device = device
        self.budget = budget
        self.threads = threads
        self.rng = random.Random(seed)
        self.done = first_round             # the next round's number: one numbering over the whole run

    def warm_up(self, keys: set[tuple[str, str]] | None = None) -> None:
        """An unrecorded round over the slots in keys (None: every slot; CUDA: cuda_warmup calls each) right
        before the first: first-call costs (allocations, BLAS thread start-up, caches cold after other groups
        were set up; seen here: a first round 1.6-6x off on CE-LoRA's ratios) are no sample's."""
        with benchmark.utils.common.set_torch_threads(self.threads):
            for duet in self.order(keys):
                for s in duet:
                    for _ in range(max(1, self.budget.cuda_warmup) if self._cuda else 1):
                        s.fn()
            if self._cuda:
                torch.cuda.synchronize()

    @property
    def _cuda(self) -> bool:
        return self.device.startswith("cuda")

    def order(self, keys: set[tuple[str, str]] | None) -> list[list[Slot]]:
        """This round's visits: per group (random order), per component (random order), the providers of
        that component (random order), next to each other."""
        chosen = [s for s in self.slots if keys is None or s.key in keys]
        groups: dict[int, dict[str, list[Slot]]] = {}
        for s in chosen:
            groups.setdefault(s.group, {}).setdefault(s.name, []).append(s)
        out = []
        gids = list(groups)
        self.rng.shuffle(gids)
        for g in gids:
            names = list(groups[g])
            self.rng.shuffle(names)
            for name in names:
                duet = list(groups[g][name])
                self.rng.shuffle(duet)
                out.append(duet)
        return out

    def round(self, keys: set[tuple[str, str]] | None = None, number: int | None = None) -> int:
        """One round over the slots whose (case id, component) is in keys (None: all), numbered `number`
        (default: the next). Returns its number."""
        r = self.done if number is None else number
        fixed = self.budget.fixed is not None
        with benchmark.utils.common.set_torch_threads(self.threads):
            visits = self.order(keys)
            if self._cuda:
                self._cuda_round(visits, r)
            else:
                for duet in visits:
                    for s in duet:
                        s.samples.append(timing.cpu_block(s.fn, self.budget.block_s, one_call=fixed))
                        s.rounds.append(r)
        self.done = r + 1
        return r

    def _cuda_round(self, visits: list[list[Slot]], r: int) -> None:
        """Events around cuda_reps calls of each slot, one synchronization per round; then one profiled
        call of each slot for its device time, counted over every thread (timing.kernel_times)."""
        blocks = timing.CudaBlocks(self.budget.cuda_reps)
        flat = [s for duet in visits for s in duet]
        for s in flat:
            blocks.time(s.fn)
        for s, t in zip(flat, blocks.read()):
            s.samples.append(t)
            s.rounds.append(r)
        for s, k in zip(flat, timing.kernel_times([s.fn for s in flat], self.device)):
            s.kernel.append(k)
            s.kernel_rounds.append(r)


def time_rounds(fns: list[Callable[[], object]], device: str, budget: TimingBudget, threads: int,
                rounds: int | None = None, seed: int = 0) -> list[timing.TimeStats]:
    """The callables measured together in ``rounds`` rounds (default budget.rounds): for scripts that
    time a handful of callables outside a suite. Returns the samples of each, in order."""
    slots = [Slot(0, str(i), "fn", fn) for i, fn in enumerate(fns)]
    sampler = Sampler(slots, device, budget, threads, seed)
    sampler.warm_up()
    for _ in range(rounds or budget.rounds):
        sampler.round()
    return [timing.TimeStats(tuple(s.samples)) for s in slots]
