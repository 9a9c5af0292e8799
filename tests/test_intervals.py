"""Intervals between rounds: Student's t, the trimmed mean with Yuen's interval, pairing by round, and
the coverage of the method on simulated runs with a between-round random effect."""
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
    mean, half = I.trimmed(x)
    assert half == pytest.approx(I.t_quantile(0.975, 2) * se)


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


def _simulated_run(rng, rounds, true_ratio, between, within, outlier_p):
    """One run: a ratio's numerator and denominator timed once per round. Each round carries a random
    effect on the ratio (lognormal, sd `between`: the machine in that moment treats the two sides
    differently), each sample its own noise (sd `within`) and now and then a disturbed sample (x2)."""
    num, den = [], []
    for _ in range(rounds):
        u = rng.gauss(0, between)
        speed = math.exp(rng.gauss(0, 0.2))                        # hits both sides: cancels
        n = true_ratio * speed * math.exp(u + rng.gauss(0, within))
        d = speed * math.exp(rng.gauss(0, within))
        if rng.random() < outlier_p:
            n *= 2
        num.append(n)
        den.append(d)
    return I.Series(tuple(num), tuple(range(rounds))), I.Series(tuple(den), tuple(range(rounds)))


@pytest.mark.parametrize("rounds", [6, 8, 16, 24])     # 6: what quick mode judges from
def test_coverage_over_200_simulated_runs(rounds):
    """A 95% interval must contain the true ratio in about 95% of runs; at least 0.9 here (fixed seed)."""
    rng = random.Random(1234)
    true = 0.55
    hits = 0
    for _ in range(200):
        num, den = _simulated_run(rng, rounds, true, between=0.05, within=0.02, outlier_p=0.03)
        iv = I.paired_ratio(num, den)
        hits += iv.lo <= true <= iv.hi
    assert hits / 200 >= 0.9


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
