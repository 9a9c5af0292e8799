"""Re-measure before judging: which rows are too noisy to judge, and every attempt kept."""
from celora_bench import remeasure
from celora_bench.cases import Case, Row
from celora_bench.timing import TimingBudget

CASE = Case("backward-breakdown", "dense", "m", "q_proj", 8, 8, 4, 2)


def _rows(whole, parts, spread=False, provider="dense"):
    c = Case("backward-breakdown", provider, "m", "q_proj", 8, 8, 4, 2)
    wobble = (0.7, 1.0, 1.3, 1.0, 0.8, 1.2) if spread else (1.0,) * 6
    return [Row(c, "fwd+bwd", tuple(whole * w for w in wobble)),
            *[Row(c, f"bwd.part{i}", (p,) * 6) for i, p in enumerate(parts)]]


def test_a_phase_far_over_its_parts_or_a_spread_flag_is_timed_again():
    assert remeasure.reasons(_rows(0.060, [0.03, 0.03])) == {}
    why = remeasure.reasons(_rows(0.108, [0.03, 0.03]))               # the q_proj incident: 108 ms vs 60 ms
    assert why == {(CASE.id, "fwd+bwd"): "fwd+bwd +80% over the sum of its parts"}
    assert remeasure.reasons(_rows(0.0011, [0.0003, 0.0002])) == {}   # framework overhead, not a bad moment
    (why,) = remeasure.reasons(_rows(0.060, [0.03, 0.03], spread=True)).values()
    assert why.startswith("fwd+bwd IQR/median")
    assert remeasure.reasons(_rows(0.060, [0.03, 0.03], spread=True, provider="peft")) == {}   # not judged


def test_attempts_are_kept_and_the_last_is_judged():
    first = _rows(0.108, [0.03, 0.03])
    why = remeasure.reasons(first)
    again = {(CASE.id, "fwd+bwd"): (0.061,) * 8}
    kept = remeasure.with_attempts(first, again, why, 2)
    whole = kept[0]
    assert whole.samples == (0.061,) * 8 and whole.extra["judged_attempt"] == 2
    (old,) = whole.extra["attempts"]
    assert old["attempt"] == 1 and old["samples"] == list(first[0].samples) and "+80%" in old["reason"]
    assert kept[1] is first[1]                                         # the parts were not timed again
    longer = remeasure.longer(TimingBudget(0.05, 0.25), 1)
    assert (longer.min_s, longer.max_s) == (0.1, 0.5)
