"""Accuracy suites: offline data, gradient error against float references, a short convergence run."""
import json
import math
import re

import pytest

from celora_bench import intervals as I
from celora_bench.cases import Case, Row
from celora_bench.suite import Context, Options, budget_for
from suites import approx_error, arith_task, convergence, corpora, text_task
from suites.convergence import checks as convergence_checks

CTX = Context(budget_for("quick"), 2, Options())


def test_offline_text_is_deterministic_and_real():
    a, b = corpora.stdlib_source(200_000), corpora.stdlib_source(200_000)
    assert a == b and len(a) == 200_000 and b"def " in a
    prose = corpora.pydoc_prose()
    assert len(prose) > 300_000 and b"The " in prose


def test_user_data_jsonl_and_errors(tmp_path):
    rows = [{"instruction": f"Add {i} and 2", "input": "", "output": str(i + 2) * 40} for i in range(60)]
    p = tmp_path / "math.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    text = corpora.read_user_data(str(p))
    assert b"### Instruction:\nAdd 3 and 2" in text and b"### Response:\n" in text
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "output": "y"}\nnot json\n' * 300)
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        corpora.read_user_data(str(bad))
    with pytest.raises(ValueError, match="at least 4096"):
        small = tmp_path / "small.txt"
        small.write_text("tiny")
        corpora.read_user_data(str(small))


def _gx_case(p, r0, score="product"):
    return next(c for c in approx_error.cases(Options()) if c.keep_ratio == p and c.svd_rank == r0
                and c.score == score and c.param("kind") == "gx")


def test_full_svd_rank_leaves_no_error_on_real_gradients():
    base = _gx_case(0.25, 0)
    exact = Case(**{**base.__dict__, "svd_rank": 10_000})      # r0 = min(m, n): R = 0
    rows = approx_error.run_gx(exact, CTX)
    assert rows and max(r.extra["rel_error"] for r in rows) < 1e-4
    assert min(r.extra["cosine"] for r in rows) > 1 - 1e-6


def test_errors_are_measured_against_the_dense_gradient():
    rows = approx_error.run_gx(_gx_case(0.5, 0), CTX)
    # relative error of G_x lies in (0, 1] for a top-k subset of a dense product, cosine in (0, 1]
    assert all(0 < r.extra["rel_error"] <= 1 and 0 < r.extra["cosine"] <= 1 for r in rows)
    cap = approx_error.captures(_gx_case(0.5, 0))
    name, (x, gy, A, B) = next(iter(cap["steps"][20].items()))
    W0 = cap["weights"][name]
    assert gy.shape[1] == W0.shape[0] and x.shape[1] == W0.shape[1]


def test_convergence_runs_an_arm_with_refreshes_every_step():
    case = Case("convergence", "tau1", "tiny-byte", "all", 0, 0, 1024, 16,
                params=(("eval_batches", 1), ("eval_every", 2), ("seed", 0), ("steps", 4)))
    rows = {r.component: r for r in convergence.run_case(case, CTX)}
    assert rows["train_loss"].extra["steps"] == [1, 2, 3, 4]
    assert all(math.isfinite(v) for v in rows["eval_loss"].extra["values"])
    assert rows["step"].time.count == 4
    sampled = sum(1 for v in convergence.plan("tau1").values() if v.keep_ratio < 1) * 4   # 4 blocks
    # block 0's v_proj reads the embeddings, which need no gradient: no G_x, so no selection there
    assert rows["final"].extra["refreshes"] == 4 * (sampled - 1)


def test_arms_differ_only_where_they_should():
    paper, svd0 = convergence.plan("paper"), convergence.plan("svd0")
    assert paper["*v_proj"].svd_rank == 14 and svd0["*v_proj"].svd_rank == 0
    nk = convergence.plan("no-sample-k")
    assert nk["*k_proj"].keep_ratio == 1.0 and nk["*v_proj"].keep_ratio == 0.5
    assert convergence.plan("tau50")["*o_proj"].tau == 50
    assert convergence.plan("residual_norm")["*up_proj"].score == "residual_norm"
    with pytest.raises(ValueError, match="unknown arm"):
        convergence.plan("fast")


# ---- arithmetic task, verdict intervals, layer plans, spectra ---------------------------------

def _answer_from_words(q: str) -> int:
    """The answer read back from the question's words (an independent reading of the templates)."""
    nums = [int(x) for x in re.findall(r"\d+", q)]
    if "in each box" in q:
        return nums[0] * nums[1]
    if "shared equally" in q:
        return nums[0] // nums[1]
    if "more and then gives" in q:
        return nums[0] + nums[1] - nums[2]
    if "more" in q:
        return nums[0] + nums[1]
    return nums[0] - nums[1]


def test_arith_splits_are_disjoint_by_construction_and_answers_right():
    train = arith_task.problems("train", 3000, seed=0) + arith_task.problems("train", 1000, seed=1)
    test = arith_task.problems("test", 500, seed=0) + arith_task.problems("test", 300, seed=7)
    assert not {p.key for p in train} & {p.key for p in test}
    assert not {p.question for p in train} & {p.question for p in test}
    assert all(arith_task.split_of(p.key) == "train" for p in train)
    assert len({p.key for p in test[:500]}) == 500                       # no repeats within a draw
    assert arith_task.problems("test", 50, seed=0) == test[:50]           # seeded
    for p in train[:1000] + test:
        assert p.answer == _answer_from_words(p.question) and p.answer >= 0
    with pytest.raises(ValueError, match="split 'dev' is unknown"):
        arith_task.problems("dev", 1, 0)


class _CharTok:
    """A character-level stand-in tokenizer: id = code point, eos = 0."""
    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_arith_batch_trains_on_the_answer_only():
    probs = arith_task.problems("train", 3, seed=0)
    ids, mask, labels = arith_task.batch(_CharTok(), probs)
    assert probs, 'nothing to check: the loop below would pass vacuously'
    for i, p in enumerate(probs):
        n = len(p.text()) + 1
        assert mask[i].sum() == n and "".join(map(chr, ids[i, :n - 1].tolist())) == p.text()
        kept = labels[i][labels[i] != -100].tolist()
        assert kept == [ord(c) for c in f" {p.answer}"] + [0]
    assert arith_task.first_int(" 42.\n7") == 42 and arith_task.first_int(" none") is None


def test_t_quantile_and_interval_status():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 10, 11, 20, 60):
        assert I.t_quantile(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=2e-3)
    assert convergence_checks.within(-0.5, 0.8, 1.0) == "PASS"
    assert convergence_checks.within(1.2, 3.0, 1.0) == "FAIL" and convergence_checks.within(-3.0, -1.5, 1.0) == "FAIL"
    assert convergence_checks.within(0.5, 1.5, 1.0) == "NOISE" and convergence_checks.within(None, None, 1.0) == "INFO"


def _final(arm, seed, task, value):
    case = Case("convergence", arm, "smollm2-135m", "all", 0, 0, 4, 16,
                params=(("seed", seed), ("steps", 3), ("task", task)))
    metric = "accuracy" if task == "arith" else "eval_loss"
    return Row(case, "final", extra={"task": task, "metric": metric, metric: value, "train_loss": 1.0,
                                     "refreshes": 0})


def test_verdict_is_a_paired_interval_over_seeds():
    lora = {0: 40.0, 1: 50.0, 2: 60.0}
    rows = [_final("lora", s, "arith", v) for s, v in lora.items()]
    rows += [_final("paper", s, "arith", v + d) for (s, v), d in zip(lora.items(), (0.1, -0.2, 0.1))]
    rows += [_final("svd0", s, "arith", v - 10 + d) for (s, v), d in zip(lora.items(), (0.5, -0.5, 0.0))]
    rows += [_final("all", s, "arith", v + d) for (s, v), d in zip(lora.items(), (3.0, -3.0, 0.5))]
    checks = {c.scope.split(",")[0]: c for c in convergence.checks.verdict(rows)
              if c.check in (convergence.checks.PAPER_CHECK, convergence.checks.ABLATION_CHECK)}
    d = [0.1, -0.2, 0.1]        # paper - LoRA per seed; the reference interval by hand, t(0.975, 2) = 4.3026527
    mean, se = sum(d) / 3, (sum((x - sum(d) / 3) ** 2 for x in d) / 2) ** 0.5 / 3 ** 0.5
    assert checks["paper"].value == pytest.approx(mean)
    assert checks["paper"].lo == pytest.approx(mean - 4.3026527 * se) and checks["paper"].hi == pytest.approx(
        mean + 4.3026527 * se)
    assert checks["paper"].status == "PASS" and checks["svd0"].status == "FAIL" and checks["all"].status == "NOISE"
    one = [_final("lora", 0, "lm", 2.0), _final("paper", 0, "lm", 2.1)]
    (c,) = [c for c in convergence.checks.verdict(one) if c.check is convergence.checks.PAPER_CHECK]
    assert c.status == "INFO" and "smoke run" in c.detail and c.lo is None


def test_layer_plan_converts_only_the_named_blocks():
    import core
    from celora_bench import models
    model = models.build_model("tiny", seed=0)
    core.convert(model, text_task.on_layers(core.preset("dense"), "1,3"))
    got = sorted({int(n.split(".")[2]) for n, m in model.named_modules() if isinstance(m, core.CELoRALinear)})
    assert got == [1, 3]
    n_conv = sum(isinstance(m, core.CELoRALinear) for m in model.modules())
    assert n_conv == 2 * len(models.PROJECTIONS)
    assert text_task.on_layers({"*v_proj": 1}, "all") == {"*v_proj": 1}


def test_spectrum_energy_matches_the_residual_of_the_svd_split():
    import torch

    from core import selection
    case = next(c for c in approx_error.cases(Options()) if c.param("kind") == "spectrum")
    rows = approx_error.run_spectrum(case, CTX)
    W = approx_error.captures(case)["weights"]
    assert len(rows) == len(W)
    assert rows, 'nothing to check: the loop below would pass vacuously'
    for r in rows[:7]:
        name = next(n for n in W if approx_error._short(n) == (r.extra["module"], r.extra["layer"]))
        W0 = W[name].double()
        for r0, key in ((r.extra["r0"], "energy_r0"), (2 * r.extra["r0"], "energy_2r0")):
            B0, A0 = selection.svd_split(W0, r0)       # fp32 SVD: 1 - ‖W0 - B0 A0‖² / ‖W0‖²
            ref = 1 - (W0 - B0 @ A0).square().sum() / W0.square().sum()
            assert r.extra[key] == pytest.approx(ref.item(), abs=1e-5)
        assert r.extra["energy"] == sorted(r.extra["energy"]) and 0 < r.extra["energy"][0] <= 1
    assert torch.is_tensor(W[name])
    t = approx_error.render.spectra_table(rows)
    assert t is not None and "tiny-byte" in t.title
