"""Intervals between rounds and processes: Student's t, the trimmed mean with Yuen's interval, the
process-nested interval, pairing by round, and the whole sampling-and-looking procedure simulated with
process effects and a drift over the run (celora_bench.sequential)."""
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
    levels, decided checks thinned), each process with its own effect (sd 2%), rounds with noise (sd 5%)
    and 2% disturbed rounds (x2), the machine drifting 8% over the run, 600 runs per case, fixed seed:
    a check on its line is decided at most 5% of the time (+ Monte Carlo error), the final interval
    covers the truth in >= 93% of runs, and a check 5% from its line is decided in most runs (the power
    README states)."""
    from celora_bench.sequential import Model, rates

    m = Model()
    on = rates(m, 0.0, 600, seed=11)
    mc = 2 * math.sqrt(0.05 * 0.95 / 600)
    assert on["decided"] <= 0.05 + mc and on["covered"] >= 0.93
    near = rates(m, 0.05, 600, seed=12)
    assert near["covered"] >= 0.93 and 0.55 <= near["pass"] and near["fail"] == 0
    far = rates(m, 0.10, 400, seed=13)
    assert far["pass"] >= 0.85 and far["rounds"] < 24            # decided early, with fewer rounds


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
