"""The A/B gate: git revision REV's core/ against the working tree's, both measured on this machine, now.

No stored baseline: a file made on another machine (another CPU, BLAS, torch build) moves every ratio by
5-10%, more than the regressions worth catching. Instead (asv's `continuous`, Duet benchmarking):

- REV's core/ (the code the gate protects) is exported to a temporary folder; "base" worker processes
  import it from there, "candidate" workers import the working tree's; both run the working tree's
  harness and suites (celora_bench.workers), so the same cases are measured the same way. Modules the
  working tree's core/ added since REV are copied into the export (export_core), so the suites import.
- Both sides' workers set the cases up side by side, then the rounds are dealt to all of them in a
  random balanced order (every block of rounds visits every worker of both sides once): base and
  candidate are measured interleaved, over the same minutes.
- A gated quantity is a component's time. Base and candidate are measured in the same minutes, in random
  balanced order, so a drift of the machine falls on both sides alike; each side's value is
  process-nested (celora_bench.intervals.log_estimate: the mean of its workers' trimmed means) and
  candidate/base gets Welch's interval at LEVEL (90%). A regression is that interval wholly above
  1 + threshold (default 10%): a one-sided 95% test that the slowdown exceeds the threshold. FLOPs and
  persistent/step bytes are counts: candidate/base above 1 + threshold is a regression.
- Two looks. The first (4 workers, 24 rounds per side) only clears; a series it does not clear (reaching)
  is measured again, its case set up in 8 fresh workers per side, 48 more rounds, and judged on all 12
  processes. Single calls vary ~10-12% here (within-process sd of log time, measured on the one-look power
  study's runs, results/readme/gate/power-one-look.json), so 24 rounds in 4 processes gave a half-width of
  ~6% (Welch df ~6) and caught +15% 5 times in 10; with the second look, +-3% and 10 in 10
  (results/readme/gate/power.txt). It costs set-up time only for series near the line.
  (An earlier version divided each time by peft's fwd+bwd of the shape in the same round, as a yardstick
  moving with the machine; measured on an A/A gate here it added peft's own noise: median half-width
  0.064 against 0.039 without, and a 2-4% bias between the sides' peft.)

Not caught: a slowdown in the harness or the suites themselves (both sides run the working tree's), in
peft or torch, or in a case the base cannot set up (its core lacks what the suites call: reported).
"""
from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, replace
from typing import Callable

from celora_bench import intervals as I
from celora_bench import registry, runner
from celora_bench.cases import Case, Row
from celora_bench.results import Run
from celora_bench.suite import Options, budget_for
from celora_bench.workers import Pool, WorkerError

SUITE = registry.HEADLINE       # what is gated: the components (GATED) of the cases (gated_case) it declares
LEVEL = 0.90                                        # the interval a regression must clear wholly
EXACT = (("flops", "flops_counted"), ("memory", "mem_bytes"))
EXACT_COMPONENTS = ("state", "step.alloc")          # bytes that are counted, not measured
THRESHOLD = 0.10
WORKERS = 4                                         # per side
ROUNDS = 24                                         # per side: 6 per worker (a block visits each worker once)
EXTRA_WORKERS = 8                                   # per side, fresh, for the second look
EXTRA_ROUNDS = 48                                   # per side in the second look: 6 per worker
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ABError(ValueError):
    """What the A/B gate cannot measure; one line for the user."""


def _git(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=60)


def resolve(rev: str) -> str:
    """The commit id of rev, or ABError naming it."""
    out = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if out.returncode != 0:
        raise ABError(f"--against {rev!r} is not a commit of this repository ({ROOT}); allowed: a commit id, "
                      f"branch, tag or HEAD~N that `git rev-parse` knows")
    return out.stdout.decode().strip()


def export_core(sha: str, dest: str, candidate: str | None = None) -> list[str]:
    """REV's core/ written under dest (git archive), the folder to put first on the base's import path. The
    modules the candidate's core/ (default: the working tree's) has and REV's lacks are copied in, so the
    working tree's suites can import them (e.g. a constants module added since REV); REV's own modules are
    measured as they were, and REV's code never calls the added ones. Returns the added paths."""
    out = _git("archive", "--format=tar", sha, "core")
    if out.returncode != 0:
        raise ABError(f"--against {sha[:10]}: that commit has no core/ folder to measure")
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        tar.extractall(dest, filter="data")
    candidate = candidate or os.path.join(ROOT, "core")
    added = []
    for name in sorted(os.listdir(candidate)):
        if name.endswith(".py") and not os.path.exists(os.path.join(dest, "core", name)):
            shutil.copyfile(os.path.join(candidate, name), os.path.join(dest, "core", name))
            added.append(f"core/{name}")
    return added


@dataclass(frozen=True)
class ABFinding:
    """candidate/base of one gated quantity, with its interval (lo = hi = value for counts)."""

    case_id: str
    component: str
    kind: str                 # "time" (seconds), "flops" or "memory"
    value: float
    lo: float | None
    hi: float | None
    regression: bool
    base: float | None = None        # the base's median seconds (time) or count
    candidate: float | None = None
    rounds: int = 0

    @property
    def status(self) -> str:
        if self.regression:
            return "REGRESSION"
        if self.lo is None:
            return "no interval"
        return "faster" if self.hi < 1 else "ok"


def judge(base: list[Row], cand: list[Row], threshold: float = THRESHOLD, level: float = LEVEL) -> list[ABFinding]:
    """Every gated quantity both sides measured, candidate over base."""
    b = {(r.case.id, r.component): r for r in base}
    c = {(r.case.id, r.component): r for r in cand}
    out = []
    for key in sorted(set(b) & set(c)):
        rb, rc = b[key], c[key]
        if gated(rc.case, key[1]) and rb.samples and rc.samples:
            try:
                eb = I.log_estimate([rb.series], lambda t: t)
                ec = I.log_estimate([rc.series], lambda t: t)
            except ValueError:            # samples without rounds (a file from before rounds): shown, not dropped
                out.append(ABFinding(*key, "time", float("nan"), None, None, False,
                                     rb.time.median, rc.time.median))
                continue
            iv = I.difference(ec, eb, level, n=min(len(rb.samples), len(rc.samples)))
            out.append(ABFinding(*key, "time", iv.value, iv.lo, iv.hi, iv.lo is not None and iv.lo > 1 + threshold,
                                 rb.time.median, rc.time.median, iv.rounds))
        for kind, attr in EXACT:
            if kind == "memory" and key[1] not in EXACT_COMPONENTS:
                continue
            vb, vc = getattr(rb, attr), getattr(rc, attr)
            if vb and vc is not None:
                ratio = vc / vb
                out.append(ABFinding(*key, kind, ratio, ratio, ratio, ratio > 1 + threshold, vb, vc))
    return out


def chunks(cases: list[Case], workers: int) -> list[list[Case]]:
    """Whole groups (a layer shape's providers, timed together, as the suite times them) split so that both
    sides' workers holding one chunk stay under the runner's memory share."""
    from celora_bench import memory

    total = memory.rss_and_total()[1] or float("inf")
    suite = registry.get(SUITE)
    out: list[list[Case]] = [[]]
    for _, group in runner.groups([(suite, c) for c in cases]):
        if out[-1] and 2 * workers * sum(map(runner.case_bytes, out[-1] + group)) > runner.WORKER_FRACTION * total:
            out.append([])
        out[-1] += group
    return [c for c in out if c]


def measure(rev: str, stem: str, filt: list[str] | None = None, threads: int | None = None,
            workers: int = WORKERS, rounds: int = ROUNDS, seed: int | None = None,
            log: Callable[[str], None] = lambda _: None, cases: list[Case] | None = None,
            extra_workers: int = EXTRA_WORKERS, extra_rounds: int = EXTRA_ROUNDS,
            threshold: float = THRESHOLD) -> tuple[Run, Run]:
    """(base run, candidate run): the quick backward-breakdown cases (filtered by filt), REV's core/ against
    the working tree's, measured interleaved; written to <stem>-base.json and <stem>.json after each chunk.
    Two looks: every case in `workers` processes per side; then the series the first did not clear (reaching)
    again, in `extra_workers` fresh processes per side (their samples join the first look's).
    cases: other cases of the suite than its quick sweep (tests measure tiny layers)."""
    import torch

    sha = resolve(rev)
    threads = threads or torch.get_num_threads()
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    opts = Options(mode="quick", device="cpu", dtype="float32")
    suite = registry.get(SUITE)
    cases = cases if cases is not None else [c for _, c in runner.plan([SUITE], opts, filt) if suite.gated_case(c)]
    if not cases:
        raise ABError(f"-k {filt}: no case of the quick {SUITE} suite matches")
    budget = budget_for("quick")
    meta = {"suites": [SUITE], "options": {"mode": "quick", "device": "cpu", "dtype": "float32"}, "filter": filt,
            "against": {"rev": rev, "commit": sha, "workers_per_side": workers, "rounds_per_side": rounds,
                        "second_look": {"workers_per_side": extra_workers, "rounds_per_side": extra_rounds,
                                        "cases": []},
                        "seed": seed, "threshold": threshold, "level": LEVEL}}
    sides = _Sides(Run(path=f"{stem}-base.json", run={**meta, "side": "base"}),
                   Run(path=f"{stem}.json", run={**meta, "side": "candidate"}),
                   sha, threads, {**budget.__dict__, "stages": list(budget.stages)}, seed, random.Random(seed), log)
    with tempfile.TemporaryDirectory(prefix="celora-ab-") as tmp:
        added = export_core(sha, tmp)
        for r in (sides.base, sides.cand):
            r.run["against"]["added_to_base"] = added
        sides.look(tmp, cases, workers, rounds)
        if not sides.base.rows:
            raise ABError(f"--against {rev}: no case could be set up with that commit's core/ "
                          f"({(sides.base.errors or [{'error': 'no rows'}])[0]['error'][:200]})")
        again = reaching(judge(sides.base.rows, sides.cand.rows, threshold), threshold)
        if again and extra_workers and extra_rounds:
            ids = {cid for cid, _ in again}
            log(f"second look: {len(again)} series of {len(ids)} cases with an interval reaching {1 + threshold:.2f}, "
                f"measured again in {extra_workers} fresh workers per side")
            for r in (sides.base, sides.cand):
                r.run["against"]["second_look"]["cases"] = sorted(ids)
                r.run["against"]["second_look"]["series"] = sorted(map(list, again))
            sides.look(tmp, [c for c in cases if c.id in ids], extra_workers, extra_rounds, again)
    for r in (sides.base, sides.cand):
        r.status = "complete"
        r.save()
    return sides.base, sides.cand


def reaching(found: list["ABFinding"], threshold: float = THRESHOLD) -> set[tuple[str, str]]:
    """The (case, component) series the first look does not clear: a timed interval reaching 1 + threshold
    with its value at 1 + threshold/2 or more (a noisy series near 1 is cleared: measuring it again costs
    time). Only the final interval, over both looks, can call a regression; the first look only clears,
    so the false-alarm rate is at most that of always measuring every series twice."""
    return {(f.case_id, f.component) for f in found if f.kind == "time" and f.hi is not None
            and f.hi >= 1 + threshold and f.value >= 1 + threshold / 2}


@dataclass
class _Sides:
    """Both sides' runs and what every look shares: worker indices and round numbers go on across looks,
    so every process and round of a side is told apart in its samples."""

    base: Run
    cand: Run
    sha: str
    threads: int
    budget: dict
    seed: int
    rng: random.Random
    log: Callable[[str], None]
    number: int = 0           # the next round's number
    index: int = 0            # the next worker's index

    def look(self, tmp: str, cases: list[Case], workers: int, rounds: int, only: set | None = None) -> None:
        """cases set up in `workers` fresh processes per side, chunk by chunk, and `rounds` rounds per side dealt
        to both sides' workers in random balanced blocks (timing the gated series, or those in `only`);
        samples join the rows already measured."""
        for r in (self.base, self.cand):
            r.machine_info["threads"] = self.threads
        for chunk in chunks(cases, workers):
            base = Pool(workers, env={"PYTHONPATH": os.pathsep.join([tmp, ROOT])}, cwd=tmp, first_index=self.index)
            cand = Pool(workers, env={"PYTHONPATH": ROOT}, cwd=ROOT, first_index=self.index + workers)
            self.index += 2 * workers
            kw = dict(device="cpu", threads=self.threads, tune_malloc=True, budget=self.budget,
                      seed=self.seed + self.number)
            self.log(f"setting up {len(chunk)} cases in {workers} base ({self.sha[:10]}) and {workers} "
                     f"candidate workers")
            try:
                base.launch(SUITE, chunk, **kw)
                cand.launch(SUITE, chunk, **kw)
                base.collect()
                cand.collect()
                _check_sources(base, cand, tmp)
                keys = _gated_keys(cand.keys) & base.keys
                if only is not None:
                    keys &= only
                self.log(f"{len(keys)} series, {rounds} rounds per side, interleaved")
                for _ in range(-(-rounds // workers)):   # blocks: each visits every worker of both sides once
                    order = list(range(2 * workers))
                    self.rng.shuffle(order)
                    for w in order:
                        (base if w < workers else cand).round(w % workers, self.number, keys)
                        self.number += 1
            except WorkerError as e:
                raise ABError(str(e)) from None
            finally:
                for run, pool in ((self.base, base), (self.cand, cand)):
                    run.errors += pool.errors
                    run.rows = joined(run.rows, pool.rows())
                    run.save()
                base.close()
                cand.close()


def joined(rows: list[Row], more: list[Row]) -> list[Row]:
    """rows with more's samples appended to the row of the same (case, component); more's other rows added."""
    at = {(r.case.id, r.component): i for i, r in enumerate(rows)}
    out = list(rows)
    for r in more:
        i = at.get((r.case.id, r.component))
        if i is None:
            at[(r.case.id, r.component)] = len(out)
            out.append(r)
        elif r.samples:
            o = out[i]
            out[i] = replace(o, samples=o.samples + r.samples, rounds=o.rounds + r.rounds, procs=o.procs + r.procs)
    return out


def gated(case: Case, component: str) -> bool:
    """Whether the gate compares this series: a component (GATED) of a case its suite gates (gated_case)."""
    suite = registry.get(case.suite)
    return component in suite.GATED and suite.gated_case(case)


def _gated_keys(keys: set) -> set:
    return {k for k in keys if k[1] in registry.get(SUITE).GATED}


def _check_sources(base: Pool, cand: Pool, tmp: str) -> None:
    """Each side imported the core/ it was meant to: a mix-up would compare a commit with itself."""
    want_b, want_c = os.path.realpath(os.path.join(tmp, "core")), os.path.realpath(os.path.join(ROOT, "core"))
    if os.path.realpath(base.core) != want_b or os.path.realpath(cand.core) != want_c:
        raise ABError(f"the workers imported core/ from {base.core} (base) and {cand.core} (candidate); "
                      f"expected {want_b} and {want_c}")
