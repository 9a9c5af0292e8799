"""The GPU path's logic, tested on the CPU: device resolution, GPU-sized cases, grouped-query attention
FLOPs, the launch-bound rule, kernel-time samples, model-step's providers."""
import pytest
import torch
import torch.nn.functional as F

from celora_bench import cli, flops, models, suite, timing
from celora_bench.suite import Options
from suites import backward_breakdown, model_step


def test_device_auto_and_dtype_defaults(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cli._device_dtype("auto", None) == ("cuda", "bfloat16")
    assert cli._device_dtype("auto", "float32") == ("cuda", "float32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli._device_dtype("auto", None) == ("cpu", "float32")
    with pytest.raises(cli.CLIError, match="no CUDA device"):
        cli._device_dtype("cuda", None)
    assert suite.default_dtype("cuda:1") == "bfloat16" and suite.resolve_device("cpu") == "cpu"


def test_cases_are_sized_for_the_device():
    cpu = backward_breakdown.cases(Options(mode="quick", device="cpu", dtype="float32"))
    assert {c.tokens for c in cpu} == {1024} and {c.model for c in cpu} == {"llama-3.2-1b"}
    gpu = backward_breakdown.cases(Options(mode="quick", device="cuda", dtype="bfloat16"))
    assert {c.tokens for c in gpu} == {8192} and {c.model for c in gpu} == {"llama-3.1-8b"}   # sized to gpu_check
    sizes = [c.m * c.n for c in gpu]
    assert sizes == sorted(sizes, reverse=True)                 # largest shapes first: a cut run keeps them
    assert {c.model for c in backward_breakdown.cases(Options(mode="full", device="cuda", dtype="bfloat16"))} >= {
        "llama-3.1-8b", "llama-3.2-1b"}
    assert {c.dtype for c in gpu} == {"bfloat16"} and {c.rank for c in gpu} == {16}
    ps = {(c.layer, c.keep_ratio) for c in gpu if c.provider == "celora"}
    assert ("gate_proj+up_proj", 0.65) in ps and ("k_proj+v_proj", 0.55) in ps and ("down_proj", 0.65) in ps
    assert ("q_proj+o_proj", 0.55) in ps      # o_proj's ratio: q and o share a shape, measured once in quick
    assert {c.svd_rank for c in gpu if c.provider == "celora"} == {0, 14}
    full = backward_breakdown.cases(Options(mode="full", device="cuda", dtype="bfloat16"))
    assert {c.tokens for c in full} >= {2048, 8192, 32768} and {c.rank for c in full} >= {8, 16, 64}
    ref = [c for c in full if c.model == "reference"]
    assert {(c.provider, c.m, c.n, c.tokens) for c in ref} >= {("dense", 4096, 4096, 131072)}
    ce = [c for c in ref if c.provider == "celora"]         # lean and cached rows, as the reference's script
    assert sorted(c.cache_rows for c in ce) == [False, True]
    assert all(c.keep_ratio == 1 / 16 and c.svd_rank == 56 and c.param("lora_rank") == 56 for c in ce)
    assert len({c.id for c in full}) == len(full)


def _analytic_attention(B, Hq, S, D, backward):
    return (4 + (8 if backward else 0)) * B * Hq * S * S * D


@pytest.mark.parametrize("Hq,Hk", [(8, 8), (8, 2), (9, 3)])
def test_grouped_query_attention_flops_on_cpu(Hq, Hk):
    B, S, D = 2, 48, 16
    q = torch.randn(B, Hq, S, D, requires_grad=True)
    k, v = torch.randn(B, Hk, S, D), torch.randn(B, Hk, S, D)

    def fwd_bwd():
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=Hq != Hk).sum().backward()
    assert flops.torch_total(fwd_bwd) == _analytic_attention(B, Hq, S, D, True)
    assert sum(flops.profile_scopes(fwd_bwd, ()).flops.values()) == _analytic_attention(B, Hq, S, D, True)


def test_every_cuda_sdpa_formula_counts_query_heads_in_either_layout():
    """Flash, memory-efficient and cuDNN kernels, forward and backward, with 32 query / 8 key-value heads
    (Llama-3's grouping; torch's own formulas assert on it)."""
    B, Hq, Hk, S, D = 1, 32, 8, 128, 64
    bhsd_q, bhsd_k = (B, Hq, S, D), (B, Hk, S, D)
    bshd_q, bshd_k = (B, S, Hq, D), (B, S, Hk, D)
    fwd, bwd = _analytic_attention(B, Hq, S, D, False), 8 * B * Hq * S * S * D
    for name, f in flops.ATTENTION_OPS.items():
        layout_bshd = name.startswith(("_flash_attention", "_efficient_attention"))
        q, k = (bshd_q, bshd_k) if layout_bshd else (bhsd_q, bhsd_k)
        if name.endswith("backward"):
            assert f(q, q, k, k) == bwd, name            # (grad_out, query, key, value, ...)
        else:
            assert f(q, k, k) == fwd, name
        assert f"aten::{name}" in flops.FLOP_OPS


def test_launch_bound_rule_on_synthetic_timings():
    assert timing.launch_bound(1.06e-3, 0.27e-3)            # the H200's q_proj at N=1024
    assert not timing.launch_bound(1.10e-3, 1.0e-3)
    assert timing.launch_bound(1.26e-3, 1.0e-3) and not timing.launch_bound(1.24e-3, 1.0e-3)
    assert not timing.launch_bound(1.0, 0.0)                # no kernel time recorded: no claim


def test_kernel_samples_on_the_cpu_see_op_time_not_python_time():
    import time
    a = torch.randn(64, 64)
    walls = []

    def op_then_sleep():
        t0 = time.perf_counter()
        a @ a
        time.sleep(0.05)                       # host time between ops: not the device's
        walls.append(time.perf_counter() - t0)
    ks = timing.kernel_samples(op_then_sleep, "cpu", reps=3)
    assert len(ks) == 3 and all(k > 0 for k in ks)
    assert all(k < w - 0.045 for k, w in zip(ks, walls[1:]))


def test_model_step_providers_and_gpu_sizes():
    assert model_step.providers("float32") == ("peft", "dense", "celora-paper", "celora-all")
    assert model_step.providers("bfloat16") == ("peft", "peft-native", "dense", "celora-paper", "celora-all")
    gpu = model_step.cases(Options(mode="quick", device="cuda", dtype="bfloat16"))
    assert {(c.model, c.tokens) for c in gpu} == {("llama-3.2-1b", 8192)}
    ckpt = model_step.cases(Options(checkpointing=True))
    assert all(c.param("checkpointing") for c in ckpt)
    assert models.get("llama-3.2-1b").kv_heads < models.get("llama-3.2-1b").heads   # grouped-query shapes
