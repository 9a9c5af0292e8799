"""The verdict's sampling and looking procedure, simulated: how often it decides a check whose true value
sits on its line, how often its final interval covers the truth, and its power at a given distance.

One simulated run of one check, as the runner measures it (celora_bench.runner, celora_bench.workers):
- a run-level effect shared by every process of the run (sd `run_sd`: the machine's state during those
  minutes), which no interval can see from inside; the intervals carry `carried_sd` for it
  (intervals.run_effect, as a results file records machine_info["run_sd"]);
- `procs` worker processes, each with its own effect on the quantity (lognormal, sd `process_sd`: what a
  fresh interpreter draws once and keeps);
- rounds dealt to the processes in a random balanced order (workers.deal), each round's
  value with its own noise (sd `round_sd`) and now and then a disturbed round (x `outlier_factor`);
- the machine drifting over the run: the quantity moves linearly by `drift` (random sign) from the
  first to the last planned round, centred on the truth;
- looks after each total in `stages` (the first is the base rounds): an interim look decides only at
  intervals.INTERIM_LEVEL, the last at intervals.FINAL_LEVEL; a decided check gets no more rounds.

`python -m celora_bench.sequential` prints the table the README quotes.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from celora_bench import intervals as I
from celora_bench.workers import deal

QUICK_STAGES = (4, 8, 12, 16, 20, 24)      # budget_for("quick"): base rounds, then the extension totals
QUICK_PROCS = 4                            # suite.DEFAULT_WORKERS
THIN = 3                                   # a decided check's series get every 3rd round


@dataclass(frozen=True)
class Model:
    """What varies, all on the log scale (0.05: about 5%)."""

    procs: int = QUICK_PROCS
    run_sd: float = I.RUN_SD
    carried_sd: float = I.RUN_SD
    process_sd: float = 0.02
    round_sd: float = 0.05
    drift: float = 0.08
    outlier_p: float = 0.02
    outlier_factor: float = 2.0
    stages: tuple[int, ...] = QUICK_STAGES


@dataclass(frozen=True)
class Outcome:
    status: str                 # PASS / FAIL / NOISE at the final look
    covered: bool               # the final interval holds the true value
    rounds: int                 # the rounds it ended with
    looks: int
    half: float                 # the final interval's half-width on the log scale (inf: no interval)


def one_run(model: Model, true: float, line: float, rng: random.Random) -> Outcome:
    """One check measured and judged as the runner does; the quantity must be <= line to PASS.

    After a look decides it, its series are thinned, not dropped: they get every THIN-th round until the
    last stage, so every check's rounds span the whole run and a drift cannot bias an early decision's
    estimate; the stored verdict is the final look's, on every round."""
    with I.run_effect(model.carried_sd):
        return _one_run(model, true, line, rng)


def _one_run(model: Model, true: float, line: float, rng: random.Random) -> Outcome:
    last = model.stages[-1]
    shared = rng.gauss(0, model.run_sd)
    effect = [shared + rng.gauss(0, model.process_sd) for _ in range(model.procs)]
    slope = model.drift * rng.choice((-1, 1))
    owner = deal(last, model.procs, rng)
    values: list[float] = []
    procs: list[int] = []
    decided, looks, start = False, 0, 0
    for i, total in enumerate(model.stages):
        for r in range(start, total):
            if decided and r % THIN:
                continue
            t = r / (last - 1) - 0.5                   # -0.5 .. 0.5 over the planned run
            v = math.log(true) + effect[owner[r]] + slope * t + rng.gauss(0, model.round_sd)
            if rng.random() < model.outlier_p:
                v += math.log(model.outlier_factor)
            values.append(math.exp(v))
            procs.append(owner[r])
        start = total
        if not decided and i < len(model.stages) - 1:
            looks += 1
            decided = I.of_values(values, I.INTERIM_LEVEL, procs).judge(line, above=False) != "NOISE"
    final = I.of_values(values, I.FINAL_LEVEL, procs)          # what the stored verdict shows
    covered = final.lo is not None and final.lo <= true <= final.hi
    half = math.log(final.hi / final.lo) / 2 if final.lo else math.inf
    return Outcome(final.judge(line, above=False), covered, len(values), looks + 1, half)


def needed_half(model: Model) -> float:
    """The half-width an interval that knew every variance would need at FINAL_LEVEL (log scale): the
    normal quantile times the sd of the mean over procs processes of every planned round (drift and
    outliers left out): the yardstick the simulated widths are compared with."""
    from statistics import NormalDist

    rounds = model.stages[-1]
    var = model.run_sd ** 2 + model.process_sd ** 2 / model.procs + model.round_sd ** 2 / rounds
    return NormalDist().inv_cdf(1 - (1 - I.FINAL_LEVEL) / 2) * math.sqrt(var)


def rates(model: Model, distance: float, runs: int, seed: int = 0) -> dict:
    """Over `runs` simulated runs of a check whose truth is `distance` (relative) below its line:
    the share decided (PASS or FAIL), PASS, FAIL, covered, and the mean rounds used."""
    rng = random.Random(seed)
    line = 1.0
    true = line * (1 - distance)
    out = [one_run(model, true, line, rng) for _ in range(runs)]
    n = len(out)
    return {"decided": sum(o.status != "NOISE" for o in out) / n,
            "pass": sum(o.status == "PASS" for o in out) / n,
            "fail": sum(o.status == "FAIL" for o in out) / n,
            "covered": sum(o.covered for o in out) / n,
            "rounds": sum(o.rounds for o in out) / n,
            "half": sorted(o.half for o in out)[n // 2]}          # median final half-width (log scale)


def main() -> None:
    runs = 2000
    print(f"simulated runs of one check, {runs} each (celora_bench/sequential.py); the quick design: "
          f"{QUICK_PROCS} processes, looks after {', '.join(map(str, QUICK_STAGES))} rounds")
    print("run sd | carried | process sd | round sd | drift | truth vs line | decided | PASS | FAIL | covered | rounds"
          " | half-width / needed")
    for m in (Model(run_sd=0.0, carried_sd=0.0, process_sd=0.0, drift=0.0), Model(carried_sd=0.0), Model(),
              Model(process_sd=0.04)):
        for d in (0.0, 0.05, 0.10, 0.15):
            r = rates(m, d, runs, seed=1)
            print(f"{m.run_sd:6.3f} | {m.carried_sd:7.3f} | {m.process_sd:10.2f} | {m.round_sd:8.2f} | "
                  f"{m.drift:5.2f} | {d:+13.0%} | {r['decided']:7.3f} | "
                  f"{r['pass']:4.3f} | {r['fail']:4.3f} | {r['covered']:7.3f} | {r['rounds']:6.1f} | "
                  f"{r['half'] / needed_half(m):.2f}")


if __name__ == "__main__":
    main()
