"""Accuracy suites: offline data, gradient error against float references, a short convergence run."""
import json
import math

import pytest

from celora_bench.cases import Case
from celora_bench.suite import Context, Options, budget_for
from suites import approx_error, convergence, text_task

CTX = Context(budget_for("quick"), 2, Options())


def test_offline_text_is_deterministic_and_real():
    a, b = text_task.stdlib_source(200_000), text_task.stdlib_source(200_000)
    assert a == b and len(a) == 200_000 and b"def " in a
    prose = text_task.pydoc_prose()
    assert len(prose) > 300_000 and b"The " in prose


def test_user_data_jsonl_and_errors(tmp_path):
    rows = [{"instruction": f"Add {i} and 2", "input": "", "output": str(i + 2) * 40} for i in range(60)]
    p = tmp_path / "math.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    text = text_task.read_user_data(str(p))
    assert b"### Instruction:\nAdd 3 and 2" in text and b"### Response:\n" in text
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "output": "y"}\nnot json\n' * 300)
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        text_task.read_user_data(str(bad))
    with pytest.raises(ValueError, match="at least 4096"):
        small = tmp_path / "small.txt"
        small.write_text("tiny")
        text_task.read_user_data(str(small))


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
