"""Worker processes: the rounds of a run dealt to several fresh interpreters, interleaved.

Rounds inside one process cannot see what a process draws once and keeps (address-space layout, the
allocator's state, where its buffers landed); on a shared 2-core machine that made runs disagree more
than one-process intervals allowed. So, as pyperf's worker processes and asv's
--interleave-processes do, a chunk of cases is set up in `n` fresh worker processes, and the parent
deals the run's rounds to them in a random balanced order (every block of n rounds visits each worker
once), one worker running at a time: each worker's rounds are spread over the whole run, and every
sample records its worker, so celora_bench.intervals can nest rounds within processes.

The one-off measurements (FLOPs by scope, memory of each phase: measure.prepare) are dealt out, worker i
making those of cases i, i+n, ...; each sends its rows as a template, and the parent fills the templates'
samples. Set-up runs in every worker at once with one thread each; rounds use the run's thread count.

Protocol: one JSON object per line on the worker's stdin, one reply per line on its stdout; a worker's
stderr goes to a log file whose tail is the error when it dies. `python -m celora_bench.workers` is
the worker. Base and candidate of an A/B gate are two pools whose workers import core/ from different
places (PYTHONPATH).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace

from celora_bench.cases import Case, Row


class WorkerError(RuntimeError):
    """A worker died or answered with an error; the message is one line for the user."""


def deal(rounds: int, n: int, rng: random.Random) -> list[int]:
    """The worker of each of `rounds` rounds: every block of n rounds visits each worker once, in random order."""
    out: list[int] = []
    while len(out) < rounds:
        block = list(range(n))
        rng.shuffle(block)
        out += block
    return out[:rounds]


class Worker:
    """One worker process."""

    def __init__(self, index: int, env: dict | None = None, cwd: str | None = None):
        self.index = index
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"celora-worker{index}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "celora_bench.workers"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1,
                                     env={**os.environ, **(env or {})}, cwd=cwd)

    def send(self, msg: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._died()) from None

    def receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(self._died())
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"worker {self.index}: {reply['error']}")
        return reply

    def _died(self) -> str:
        self.proc.wait(timeout=30)
        self.log.seek(0)
        tail = [ln for ln in self.log.read().strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
        return f"worker {self.index} exited with code {self.proc.returncode}: {tail[0][:300]}"

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send({"op": "exit"})
                self.proc.wait(timeout=30)
        except (WorkerError, subprocess.TimeoutExpired):
            self.proc.kill()
        finally:
            self.log.close()
            os.unlink(self.log.name)


@dataclass
class Pool:
    """n workers holding the same cases; samples are gathered per (case id, component) with round and worker."""

    n: int
    env: dict = field(default_factory=dict)
    cwd: str | None = None
    first_index: int = 0                # worker numbers in the samples: a second pool (the gate's) numbers on
    workers: list[Worker] = field(default_factory=list)
    template: list[Row] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    samples: dict = field(default_factory=dict)        # (case id, component) -> [(seconds, round, worker)]
    keys: set = field(default_factory=set)             # the timed (case id, component) slots
    core: str = ""                                     # where the workers imported core/ from
    case_ids: list = field(default_factory=list)

    def start(self, suite: str, cases: list[Case], **kw) -> None:
        """Starts the workers and sets the cases up in all of them at once (launch, then collect)."""
        self.launch(suite, cases, **kw)
        self.collect()

    def launch(self, suite: str, cases: list[Case], *, device: str, threads: int, tune_malloc: bool,
               budget: dict, seed: int) -> None:
        """Starts the workers and sends each the cases to set up (and its share of the one-off measurements);
        returns at once, so that two pools set up side by side."""
        self.workers = [Worker(self.first_index + i, self.env, self.cwd) for i in range(self.n)]
        self.case_ids = [c.id for c in cases]
        for i, w in enumerate(self.workers):         # the one-off measurements dealt out: worker i makes case i::n's
            w.send({"op": "setup", "suite": suite, "cases": [c.to_json() for c in cases],
                    "full": [c.id for c in cases[i::self.n]],
                    "device": device, "threads": threads, "tune_malloc": tune_malloc, "budget": budget,
                    "seed": seed + i})

    def collect(self) -> None:
        """Waits for every worker's setup. A case that fails in worker 0 is an error of the run (errors);
        workers that set up other cases than worker 0, a WorkerError."""
        replies = [w.receive() for w in self.workers]
        order = {c: i for i, c in enumerate(self.case_ids)}
        self.template = sorted((Row.from_json(d) for rep in replies for d in rep["rows"]),
                               key=lambda r: order.get(r.case.id, len(order)))
        self.errors = replies[0]["errors"]
        self.core = replies[0]["core"]
        self.keys = {tuple(k) for k in replies[0]["slots"]}
        for w, rep in zip(self.workers[1:], replies[1:]):
            if {tuple(k) for k in rep["slots"]} != self.keys:
                raise WorkerError(f"worker {w.index} set up other cases than worker {self.first_index}: "
                                  f"{'; '.join(e['error'] for e in rep['errors'])[:300]}")

    def round(self, worker: int, number: int, keys: set | None) -> None:
        """Round `number` over keys (None: every slot) in worker `worker` (0-based within the pool)."""
        w = self.workers[worker]
        w.send({"op": "round", "number": number, "keys": None if keys is None else sorted(keys & self.keys)})
        for cid, comp, t in w.receive()["samples"]:
            self.samples.setdefault((cid, comp), []).append((t, number, w.index))

    def rows(self) -> list[Row]:
        """The template's rows with every sample gathered so far, in round order."""
        out = []
        for r in self.template:
            src = r.extra.get("amortized_from")
            key = (r.case.id, src[0] if src else r.component)
            got = sorted(self.samples.get(key, []), key=lambda s: s[1])
            if key not in self.keys and not src:
                out.append(r)
                continue
            div = src[1] if src else 1
            out.append(replace(r, samples=tuple(t / div for t, _, _ in got), rounds=tuple(n for _, n, _ in got),
                               procs=tuple(w for _, _, w in got)))
        return out

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.workers = []


# ---- the worker ------------------------------------------------------------------------------

def _setup(msg: dict):
    import torch

    from celora_bench import malloc, registry
    from celora_bench.measure import prepare, rows, slots_of
    from celora_bench.rounds import Sampler
    from celora_bench.timing import TimingBudget

    if msg["tune_malloc"]:
        malloc.tune()
    # set-up and warm-up run in every worker at once: one thread each, or n workers' BLAS threads fight over
    # the cores (with 2 threads each, 4 workers took 139 s to set up here); rounds use msg["threads"]
    torch.set_num_threads(1)
    suite = registry.get(msg["suite"])
    items, errors = [], []
    for d in msg["cases"]:
        case = Case.from_json(d)
        try:
            items.append((case, suite.setup(case)))
        except Exception as e:                       # one bad case is an error of the run, not of the worker
            errors.append({"case_id": case.id, "error": f"{type(e).__name__}: {e}"[:500]})
    mine = set(msg["full"])                          # the cases whose one-off measurements this worker makes
    p = prepare([(c, t) for c, t in items if c.id in mine], 0)
    template = [r.to_json() for r in rows(p)]
    slots = slots_of(items, 0)
    budget = TimingBudget(**{**msg["budget"], "stages": tuple(msg["budget"]["stages"]), "workers": 1})
    sampler = Sampler(slots, msg["device"], budget, 1, msg["seed"])
    # first-call costs (buffers, pages) are no sample's: every callable the verdict reads, called once,
    # while the other workers set up too
    sampler.warm_up({s.key for s in slots if s.name in suite.JUDGED})
    malloc.trim()                 # hand back what set-up freed: n workers hold the chunk at once
    sampler.threads = msg["threads"]
    torch.set_num_threads(msg["threads"])
    import core
    reply = {"rows": template, "errors": errors, "slots": [list(s.key) for s in slots],
             "core": os.path.dirname(os.path.abspath(core.__file__))}
    return sampler, reply


def serve() -> None:
    """The worker's loop: setup, then rounds until exit."""
    sampler = None
    out = sys.stdout
    sys.stdout = sys.stderr                          # anything a library prints goes to the log, not the pipe
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["op"] == "exit":
                break
            if msg["op"] == "setup":
                sampler, reply = _setup(msg)
            elif msg["op"] == "round":
                keys = None if msg["keys"] is None else {tuple(k) for k in msg["keys"]}
                before = {s.key: len(s.samples) for s in sampler.slots}
                sampler.round(keys, number=msg["number"])
                reply = {"samples": [[*s.key, s.samples[-1]] for s in sampler.slots
                                     if len(s.samples) > before[s.key]]}
            else:
                reply = {"error": f"unknown op {msg['op']!r}"}
        except Exception as e:
            reply = {"error": f"{type(e).__name__}: {e}"[:500]}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    serve()
