"""convergence --medium: its plan, the equivalence verdict fixed before the run, and a run that stops, resumes,
keeps its verdict under `reverdict` and draws its report (on a random tiny model, a few steps)."""
import math
import os

import pytest
import torch

from celora_bench import intervals as I
from celora_bench import models, results, runner
from celora_bench.cases import Case, Row
from celora_bench.suite import Options
from suites import arith_task, convergence, corpora, text_task
from suites.convergence import medium

REAL = "smollm2-135m"


def test_medium_plan_arms_seeds_steps_and_data():
    cases = convergence.cases(Options(mode="medium", model=REAL))
    assert {c.provider for c in cases} == {"lora", "paper", "all", "svd0"}
    assert {c.param("seed") for c in cases} == {0, 1, 2, 3}
    assert len(cases) == 4 * 4 and len({c.id for c in cases}) == 16
    assert {c.param("task") for c in cases} == {"arith"} and {c.param("layers") for c in cases} == {"all"}
    assert {c.param("steps") for c in cases} == {45} and {c.param("test_n") for c in cases} == {300}
    assert {c.param("size") for c in cases} == {"medium"} and {c.param("arith_batch") for c in cases} == {16}
    # every arm of a seed sees the same problems in the same order: the data stream depends on the seed only
    by_seed = {}
    for c in cases:
        by_seed.setdefault(c.param("seed"), set()).add(tuple(kv for kv in c.params if kv[0] != "seed"))
    assert all(len(v) == 1 for v in by_seed.values())
    assert [c.param("seed") for c in cases] == sorted(c.param("seed") for c in cases)    # a seed's arms together
    with pytest.raises(ValueError, match="--data is not used"):
        convergence.cases(Options(mode="medium", model=REAL, data="x.txt"))


def test_the_rule_is_the_one_fixed_before_the_run():
    """Changing any of these after the committed run changes its verdict: do not (medium.py's docstring)."""
    assert (medium.ACC_TOL, medium.LOSS_TOL, medium.ALPHA, medium.MAX_SEEDS) == (1.0, 0.01, 0.05, 200)


def _final(arm, seed, acc, loss):
    case = Case("convergence", arm, REAL, "all", 0, 0, 16, 16,
                params=(("seed", seed), ("size", "medium"), ("steps", 48), ("task", "arith")))
    return Row(case, "final", extra={"task": "arith", "metric": "accuracy", "accuracy": acc, "eval_loss": loss,
                                     "train_loss": 1.0, "refreshes": 1})


def _checks(deltas_acc):
    lora = {0: 40.0, 1: 50.0, 2: 60.0, 3: 45.0}
    rows = [_final("lora", s, v, 1.0) for s, v in lora.items()]
    for arm, d in deltas_acc.items():
        rows += [_final(arm, s, lora[s] + x, 1.0) for s, x in zip(lora, d)]
    return {c.scope.split(",")[0]: c for c in convergence.checks.verdict(rows)
            if ("metric", "accuracy") in c.labels}


def test_equivalence_verdict_equivalent_worse_undecided():
    d_eq, d_worse, d_und = (0.1, -0.2, 0.1, 0.0), (-5.0, -5.5, -4.5, -5.2), (2.0, -3.0, 0.5, 1.5)
    c = _checks({"paper": d_eq, "all": d_worse, "svd0": d_und})
    mean = sum(d_eq) / 4
    sd = (sum((x - mean) ** 2 for x in d_eq) / 3) ** 0.5
    h = 2.3533634 * sd / 2                  # t(0.95, 3) by hand: TOST at 5% each side is the 90% interval
    assert c["paper"].value == pytest.approx(mean) and c["paper"].lo == pytest.approx(mean - h, rel=1e-6)
    assert c["paper"].hi == pytest.approx(mean + h, rel=1e-6)
    verdicts = {a: dict(x.labels)["verdict"] for a, x in c.items()}
    assert verdicts == {"paper": "equivalent", "all": "worse", "svd0": "undecided"}
    assert (c["paper"].status, c["all"].status, c["svd0"].status) == ("PASS", "FAIL", "NOISE")
    assert c["paper"].check is medium.EQUIV_PAPER_CHECK and c["all"].check is medium.EQUIV_ABLATION_CHECK
    # the undecided arm: the seeds that would decide it are more than it had, and that many would
    need = int(dict(c["svd0"].labels)["seeds_to_decide"])
    m, s = sum(d_und) / 4, (sum((x - sum(d_und) / 4) ** 2 for x in d_und) / 3) ** 0.5
    assert need > 4 and I.t_quantile(0.95, need - 1) * s / math.sqrt(need) < 1.0 - abs(m)
    assert I.t_quantile(0.95, need - 2) * s / math.sqrt(need - 1) >= 1.0 - abs(m)
    assert int(dict(c["paper"].labels)["seeds_to_decide"]) <= 4


def test_better_and_one_seed_and_never():
    assert medium.decide([3.0, 3.2, 2.9], 1.0, higher_is_better=True).word == "better"
    assert medium.decide([0.02, 0.021, 0.019], 0.01, higher_is_better=False).word == "worse"     # loss up
    one = medium.decide([0.3], 1.0, True)
    assert one.word == "one seed" and one.lo is None and one.status == "INFO"
    assert medium.seeds_to_decide(1.0, 0.5, 1.0) is None            # the mean sits on the margin
    assert medium.seeds_to_decide(0.0, 0.0, 1.0) == 2


def test_heldout_loss_matches_the_models_own_loss():
    """Left padding and logits for the last columns only give the loss transformers computes on the
    right-padded batch (one batch: both are the mean over every answer token)."""
    model = models.build_model("tiny-byte", seed=0).eval()
    tok = arith_task.ByteTokenizer()
    probs = arith_task.problems("test", 6, seed=0)
    ids, mask, labels = arith_task.batch(tok, probs)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
    assert arith_task.heldout_loss(model, tok, probs, batch_size=6) == pytest.approx(ref, rel=1e-4)
    assert arith_task.heldout_loss(model, tok, probs, batch_size=4) == pytest.approx(ref, rel=1e-4)
    per = arith_task.heldout_losses(model, tok, probs, batch_size=4)
    assert len(per) == 6 and arith_task.pooled(per[:2]) == pytest.approx(arith_task.heldout_loss(model, tok, probs[:2]))
    assert tok.decode(tok(" 42")["input_ids"] + [0]) == " 42"


@pytest.fixture
def small_medium(monkeypatch):
    """The medium plan at toy size on a random tiny-byte model (bytes for the arithmetic problems)."""
    for name, v in (("MEDIUM_STEPS", 2), ("MEDIUM_EVAL_EVERY", 1), ("MEDIUM_BATCH", 2), ("MEDIUM_TEST_N", 6),
                    ("MEDIUM_SEEDS", (0, 1))):
        monkeypatch.setattr(convergence, name, v)
    ids = corpora.Tokens()(b"x" * 5000)
    task = text_task.Task("unused", corpora.Tokens(), ids, ids, "test")
    monkeypatch.setattr(text_task.Task, "model",
                        lambda self, dtype=torch.float32: models.build_model("tiny-byte", seed=0))
    monkeypatch.setattr(convergence, "_task", lambda case: task)
    monkeypatch.setattr(runner, "warm_up", lambda device: None)
    monkeypatch.setattr(runner, "calibrate", lambda ctx: {})
    convergence._STEP0.clear()


def test_a_stopped_medium_run_keeps_finished_cases_resumes_and_reverdicts(small_medium, tmp_path, capsys):
    from celora_bench.render import page
    opts = Options(mode="medium")
    path = str(tmp_path / "medium.json")
    seen = []

    two = ["/lora/", "/paper/"]                 # two arms of the four, two seeds: 4 (arm, seed) cases

    def stop_after_two(case, seconds):
        seen.append(case.id)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run(["convergence"], opts, path, filt=two, on_case=stop_after_two)
    kept = results.load(path)
    assert len(kept.done_case_ids()) == 2 and kept.status == "interrupted"
    out = capsys.readouterr().out
    assert "convergence medium: case 1/8" in out and "min left" in out     # progress and time left, printed
    again = []
    done = runner.run(["convergence"], opts, path, filt=two, resume=True, on_case=lambda c, s: again.append(c.id))
    assert len(again) == 2 and not set(again) & set(seen) and len(done.done_case_ids()) == 4
    final = [r for r in done.rows if r.component == "final"]
    assert all({"accuracy", "eval_loss"} <= set(r.extra) for r in final)
    curve = next(r for r in done.rows if r.component == "eval_loss_curve")
    assert curve.extra["steps"] == [0, 1, 2]
    assert next(r for r in done.rows if r.component == "eval_loss").extra["steps"] == [0, 2]
    assert final[0].extra["eval_loss_curve"] == pytest.approx(final[0].extra["eval_loss"])   # 6 problems < 100
    # the stored verdict is what the current rules compute from the rows (what `reverdict --check` tests)
    assert done.verdicts == runner.verdicts_of(results.load(path), ["convergence"])
    names = {(c["check"], dict(c["labels"]).get("metric")) for c in done.verdicts["convergence"]}
    assert {("equivalent-paper", "accuracy"), ("equivalent-paper", "eval_loss"), ("step-time", None),
            ("moved", None)} <= names
    html = open(page.write([done], str(tmp_path / "medium.html"))).read()
    assert "convergence-tradeoff-tiny-byte.png" in html and "convergence-medium-tiny-byte.png" in html
    assert "speed-up vs LoRA" in html
    assert os.path.getsize(path) > 0
