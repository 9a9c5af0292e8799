"""Intervals between rounds and processes: Student's t, the trimmed mean with Yuen's interval, the
process-nested interval, the between-run part, pairing by round, and the whole sampling-and-looking
procedure simulated with run and process effects and a drift over the run (celora_bench.sequential)."""
import math
import random

import pytest

from celora_bench import intervals as I


@pytest.mark.parametrize("df,want", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (7, 2.3646),
                                     (11, 2.2010), (30, 2.0423)])
def test_t_quantile_matches_the_table(df, want):
    assert I.t_quantile(0.975, df) == pytest.approx(want, abs=1e-4)
    assert I.t_quantile(0.025, df) == pytest.approx(-want, abs=1e-4)


def test_trimmed_mean_and_yuen_interval_by_hand():
    x = [1.0, 2.0, 3.0, 4.0, 100.0]                 # n = 5, g = 1: the 100 is trimmed, winsorized to 4
    mean, se, df = I.trimmed_se(x)
    assert mean == pytest.approx(3.0) and df == 2
    wins = [2.0, 2.0, 3.0, 4.0, 4.0]
    var_w = sum((v - 3.0) ** 2 for v in wins) / 4
    assert se == pytest.approx(math.sqrt(var_w) / (0.6 * math.sqrt(5)))
    mean, half = I.trimmed(x, level=0.95)
    assert half == pytest.approx(I.t_quantile(0.975, 2) * se)
    assert I.trimmed(x)[1] == pytest.approx(I.t_quantile(1 - (1 - I.FINAL_LEVEL) / 2, 2) * se)


def test_nested_interval_by_hand():
    """Three processes: the value is the mean of the process means, the error their spread over sqrt(3),
    with 2 degrees of freedom, whatever the rounds inside each say."""
    vals = [1.0, 1.2, 2.0, 2.2, 3.0, 3.2]
    procs = [0, 0, 1, 1, 2, 2]
    mean, se, df = I.nested_se(vals, procs)
    assert mean == pytest.approx(2.1) and df == 2
    assert se == pytest.approx(math.sqrt(((1.1 - 2.1) ** 2 + 0 + (3.1 - 2.1) ** 2) / 2 / 3))
    assert I.nested_se(vals, [0] * 6) == I.trimmed_se(vals)          # one process: Yuen's, as before


def test_the_between_run_part_is_added_as_a_known_variance():
    """se² + sd² with Satterthwaite's df (the known part has infinite df): by hand; none outside run_effect."""
    vals = [1.0, 1.02, 1.05, 1.01, 0.98, 1.04, 1.03, 0.99]
    procs = [0, 0, 1, 1, 2, 2, 3, 3]
    mean, se, df = I.nested_se([math.log(v) for v in vals], procs)
    plain = I.of_values(vals, procs=procs)
    assert plain.hi == pytest.approx(math.exp(mean + I.t_quantile(1 - (1 - I.FINAL_LEVEL) / 2, df) * se))
    with I.run_effect(0.04):
        wide = I.of_values(vals, procs=procs)
    total = math.sqrt(se ** 2 + 0.04 ** 2)
    want_df = min(I.MAX_DF, int(total ** 4 / (se ** 4 / df)))
    assert want_df > df
    assert wide.hi == pytest.approx(math.exp(mean + I.t_quantile(1 - (1 - I.FINAL_LEVEL) / 2, want_df) * total))
    assert wide.value == plain.value and I.of_values(vals, procs=procs) == plain
    assert I.with_run_effect(0.0, 3, 0.04) == (0.04, I.MAX_DF) and I.with_run_effect(0.02, 3, 0.0) == (0.02, 3)


def test_a_file_is_judged_with_the_between_run_sd_it_recorded():
    """registry wraps every verdict: machine_info["run_sd"] widens the intervals; a file without it (made
    before) is judged as it was, whatever the default is now."""
    from celora_bench import registry
    from celora_bench.suite import Check, CheckId, Suite

    x = CheckId("x", "x")

    def verdict(rows, machine=None):
        iv = I.of_values([1.0, 1.01, 0.99, 1.0, 1.02, 0.98], procs=[0, 0, 1, 1, 2, 2])
        return [Check(x, "s", "m", iv.value, "", "INFO", lo=iv.lo, hi=iv.hi)]

    judged = registry.declared(Suite(NAME="x", DESCRIPTION="y", cases=lambda o: [], verdict=verdict, CHECKS=(x,),
                                     run_case=lambda c, ctx: [])).verdict
    (old,), (new,) = judged([], {}), judged([], {"run_sd": 0.05})
    assert old == verdict([])[0] and new.lo < old.lo and new.hi > old.hi


def test_the_default_between_run_sd_and_its_override(monkeypatch):
    monkeypatch.delenv("CELORA_BENCH_RUN_SD", raising=False)
    assert I.default_run_sd() == I.RUN_SD > 0
    monkeypatch.setenv("CELORA_BENCH_RUN_SD", "0.02")
    assert I.default_run_sd() == 0.02
    for bad in ("-1", "x", "1"):
        monkeypatch.setenv("CELORA_BENCH_RUN_SD", bad)
        with pytest.raises(ValueError, match="CELORA_BENCH_RUN_SD"):
            I.default_run_sd()


def test_the_interim_level_is_stricter_and_only_inside_interim():
    vals = [1.0 + 0.03 * ((i * 7) % 5 - 2) for i in range(12)]
    final = I.of_values(vals)
    with I.interim():
        strict = I.of_values(vals)
    assert strict.lo < final.lo and strict.hi > final.hi and I.current_level() == I.FINAL_LEVEL
    assert I.INTERIM_ALPHA * (I.MAX_LOOKS - 1) + (1 - I.FINAL_LEVEL) == pytest.approx(0.05)


def test_one_disturbed_round_neither_moves_nor_blows_up_the_interval():
    calm = [1.0 + 0.01 * ((i * 7) % 5 - 2) for i in range(12)]
    iv = I.of_values(calm)
    hit = I.of_values(calm[:-1] + [2.5])            # a neighbour doubled one round
    assert hit.value == pytest.approx(iv.value, rel=0.01)
    assert hit.hi - hit.lo < 3 * (iv.hi - iv.lo)


def test_too_few_rounds_give_no_interval_and_no_decision():
    iv = I.of_values([0.5, 0.6])
    assert iv.lo is None and iv.judge(10.0, above=False) == "NOISE" and "too few" in iv.undecided_why(1.0)


def test_pairing_by_round_cancels_what_hit_both_sides():
    drift = [1.0, 1.4, 0.8, 1.2, 0.9, 1.3, 1.1, 0.7]           # the machine's speed, round by round
    num = I.Series(tuple(0.5 * d for d in drift), tuple(range(8)))
    den = I.Series(tuple(1.0 * d for d in drift), tuple(range(8)))
    paired = I.paired_ratio(num, den)
    assert paired.value == pytest.approx(0.5) and paired.hi - paired.lo == pytest.approx(0, abs=1e-12)
    apart = I.unpaired_ratio(num, den)                        # the same samples taken apart: drift stays
    assert apart.value == pytest.approx(0.5) and apart.hi - apart.lo > 0.1


def test_only_rounds_both_sides_share_are_used():
    a = I.Series((1.0, 2.0, 3.0, 4.0), (0, 1, 2, 3))
    b = I.Series((1.0, 1.0), (1, 3))
    assert I.round_values(lambda x, y: x / y, [a, b]) == [2.0, 4.0]
    assert I.round_values(lambda x, c: x + c, [a, I.Series.constant(10.0)]) == [11.0, 12.0, 13.0, 14.0]


def test_the_whole_procedure_on_simulated_runs():
    """The quick design as the runner runs it (4 worker processes, looks after 4 ... 24 rounds, Haybittle-Peto
    levels, decided checks thinned), with a run-level effect shared by every process (sd RUN_SD, carried
    by the intervals as a results file records it), each process with its own effect (sd 2%), rounds with
    noise (sd 5%) and 2% disturbed rounds (x2), the machine drifting 8% over the run, 600 runs per case,
    fixed seed: a check on its line is decided at most 5% of the time (+ Monte Carlo error), the final
    interval covers the truth in >= 93% of runs and is no wider than needed (median half-width within 15%
    of what an interval knowing every variance would need), and a check 15% from its line is decided in
    most runs, early (the power README states)."""
    from celora_bench.sequential import Model, needed_half, rates

    m = Model()
    assert m.run_sd == m.carried_sd == I.RUN_SD > 0
    on = rates(m, 0.0, 600, seed=11)
    mc = 2 * math.sqrt(0.05 * 0.95 / 600)
    assert on["decided"] <= 0.05 + mc and on["covered"] >= 0.93
    assert on["half"] <= 1.15 * needed_half(m)
    near = rates(m, 0.05, 600, seed=12)
    assert near["covered"] >= 0.93 and near["fail"] <= 0.01
    far = rates(m, 0.15, 400, seed=13)
    assert far["pass"] >= 0.85 and far["covered"] >= 0.93 and far["rounds"] < 24


def test_without_the_between_run_part_the_intervals_would_not_cover():
    """What the between-run part is for: the same runs judged without it (carried 0) cover the truth far
    less than 93% and decide on-the-line checks far more than 5% of the time."""
    from celora_bench.sequential import Model, rates

    blind = rates(Model(carried_sd=0.0), 0.0, 400, seed=14)
    assert blind["covered"] < 0.85 and blind["decided"] > 0.1


def test_one_process_intervals_miss_a_process_effect():
    """What the workers are for, reproduced: the same rounds taken in one process carry that process's
    effect, which rounds cannot see; the interval then misses the truth far more often than 5%."""
    rng = random.Random(5)
    hits = 0
    for _ in range(300):
        u = rng.gauss(0, 0.04)                                 # the process's own effect
        vals = [math.exp(u + rng.gauss(0, 0.02)) for _ in range(24)]
        iv = I.of_values(vals)
        hits += iv.lo <= 1.0 <= iv.hi
    assert hits / 300 < 0.7


def test_an_interval_from_one_stretch_of_samples_would_not_cover():
    """The old design's failure, reproduced: samples taken back to back inside one round see only the
    within-round noise, so their interval misses the between-round effect far more often than 5%."""
    rng = random.Random(99)
    hits = 0
    for _ in range(200):
        u = rng.gauss(0, 0.05)                                 # this stretch's effect
        vals = [0.55 * math.exp(u + rng.gauss(0, 0.01)) for _ in range(8)]
        iv = I.of_values(vals)
        hits += iv.lo <= 0.55 <= iv.hi
    assert hits / 200 < 0.6
