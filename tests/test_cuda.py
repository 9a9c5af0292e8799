"""CUDA paths: skipped where no GPU is present; scripts/gpu_check.sh runs them on one."""
import copy

import pytest
import torch
from torch import nn

import core
from celora_bench import memory, rounds, timing

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-3), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("cache_rows", [False, True])
def test_cuda_layer_matches_cpu_float64(dtype, tol, cache_rows):
    torch.manual_seed(0)
    config = core.CELoRAConfig(r=8, keep_ratio=0.5, svd_rank=4, cache_rows=cache_rows)
    lin_gpu = nn.Linear(256, 512).cuda().to(dtype)
    lin_cpu = nn.Linear(256, 512).double()
    with torch.no_grad():                     # the same (rounded) W0 before either layer takes its SVD
        lin_cpu.weight.copy_(lin_gpu.weight.double().cpu())
        lin_cpu.bias.copy_(lin_gpu.bias.double().cpu())
    gpu = core.CELoRALinear.from_linear(lin_gpu, config)
    cpu = core.CELoRALinear.from_linear(lin_cpu, config)           # SVD in float64 on the CPU
    with torch.no_grad():
        gpu.lora_B.normal_()
        for name in ("lora_A", "lora_B"):
            getattr(cpu, name).copy_(getattr(gpu, name).double().cpu())
    x = torch.randn(4, 32, 256, dtype=torch.float64)
    gy = torch.randn(4, 32, 512, dtype=torch.float64) * torch.exp(2 * torch.randn(512, dtype=torch.float64))
    xg = x.cuda().to(dtype).requires_grad_(True)
    gpu(xg).backward(gy.cuda().to(dtype))
    assert gpu.B0.is_cuda and gpu.idx.is_cuda                      # SVD and selection ran on the device
    xc = x.clone().requires_grad_(True)
    cpu(xc).backward(gy)
    # the same top-k in fp32; bf16 rounding may swap a few features at the cut
    overlap = len(set(gpu.idx.tolist()) & set(cpu.idx.tolist())) / cpu.idx.numel()
    assert overlap == 1.0 if dtype == torch.float32 else overlap >= 0.95
    rel = (xg.grad.double().cpu() - xc.grad).norm() / xc.grad.norm()
    assert rel < tol
    rel_b = (gpu.lora_B.grad.double().cpu() - cpu.lora_B.grad).norm() / cpu.lora_B.grad.norm()
    assert rel_b < tol


def test_cuda_event_timing_and_memory_stats():
    a = torch.randn(1024, 1024, device="cuda")
    budget = timing.TimingBudget(all_rounds=1, rounds=10, stages=(), cuda_warmup=3, cuda_reps=10)
    stats = rounds.time_rounds([lambda: a @ a], "cuda", budget, 1)   # one sample per round (events, 10 calls)
    assert stats[0].count == 10 and all(t > 0 for t in stats[0].samples)
    assert memory.cuda_phase(lambda: torch.empty(2**20, device="cuda"), "cuda") >= 4 * 2**20


def test_cuda_suite_runs(tmp_path):
    from celora_bench import cli, results
    out = str(tmp_path / "cuda.json")
    assert cli.main(["run", "backward-breakdown", "--device", "cuda", "--model", "tiny", "-k", "tiny/q_proj+",
                     "--out", out]) == 0
    run = results.load(out)
    assert run.machine_info["gpu"]["name"] and not run.errors


# ---- every output against the float64 formula, the Triton gather, k rounded for the GPU ----

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("keep_ratio", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("svd_rank,cache_rows", [(0, False), (3, False), (3, True)])
def test_cuda_outputs_match_float64_formula(dtype, keep_ratio, svd_rank, cache_rows):
    from tests.test_core_layer import assert_outputs_match
    lin = nn.Linear(24, 96).cuda().to(dtype)
    layer = core.CELoRALinear.from_linear(lin, core.CELoRAConfig(
        r=4, alpha=8.0, keep_ratio=keep_ratio, svd_rank=None if keep_ratio == 1.0 else svd_rank,
        cache_rows=cache_rows))
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 8, 24, device="cuda").to(dtype)
    gy = (torch.randn(2, 8, 96, device="cuda") * torch.exp(torch.randn(96, device="cuda"))).to(dtype)
    assert_outputs_match(layer, x, gy, dtype)
    if keep_ratio < 1:
        assert layer.idx.is_cuda and layer.k % (64 if dtype != torch.float32 else 16) == 0 or layer.dense


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("N,m,k", [(1, 5, 1), (37, 300, 129), (8192, 1024, 576), (1000, 14336, 9344)])
def test_cuda_gather_methods_agree(dtype, N, m, k):
    from core import gather
    G = torch.randn(N, m, device="cuda").to(dtype)
    idx = torch.randperm(m, device="cuda")[:k].sort().values
    want = G.index_select(1, idx)
    assert torch.equal(gather.gather_columns(G, idx), want)
    assert torch.equal(gather.torch_gather(G, idx), want)
    from core import triton_gather
    if triton_gather.available() and gather._triton_failure is None:
        assert gather.method_for(G.device) is gather.triton_or_index_select
        assert gather.methods_used()["cuda"] == "triton"
        for tile in ((8, 256), (16, 128), (32, 64), (4, 512)):
            assert torch.equal(triton_gather.gather_columns(G, idx, tile), want)
    else:                                  # no Triton, or it failed once here: index_select, and said so
        assert gather.method_for(G.device) is gather.index_select
        assert gather.methods_used()["cuda"].startswith("index_select")
    wide = torch.zeros(N, k + 24, device="cuda", dtype=dtype)
    assert torch.equal(gather.gather_columns(G, idx, out=wide[:, 16:16 + k]), want)   # into a column view
    assert torch.equal(wide[:, 16:16 + k], want) and not wide[:, :16].any() and not wide[:, 16 + k:].any()


def test_cuda_triton_bad_out_raises_and_triton_stays_on():
    """A wrong `out` is the caller's error: raised, not a Triton failure that disables the kernel."""
    from core import gather, triton_gather
    if not triton_gather.available() or gather._triton_failure is not None:
        pytest.skip("no working Triton here")
    G = torch.randn(64, 300, device="cuda", dtype=torch.bfloat16)
    idx = torch.arange(0, 300, 3, device="cuda")
    with pytest.raises(ValueError, match="unit column stride"):
        gather.gather_columns(G, idx, out=torch.empty(64, idx.numel() + 1, device="cuda", dtype=torch.bfloat16))
    assert gather._triton_failure is None and gather.method_for(G.device) is gather.triton_or_index_select
    assert torch.equal(gather.gather_columns(G, idx), G.index_select(1, idx))


def test_k_rounds_to_64_after_to_cuda_bf16():
    layer = core.CELoRALinear.from_linear(nn.Linear(4096, 1024), core.CELoRAConfig(keep_ratio=0.55))
    assert layer.k == 564                                    # converted on the CPU: ceil(0.55·1024)
    layer.to("cuda", torch.bfloat16)
    assert layer.k == 576 and layer.effective_keep_ratio == 576 / 1024
    x = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    layer(x).backward(torch.randn(64, 1024, device="cuda", dtype=torch.bfloat16))
    assert layer.idx.is_cuda and layer.idx.numel() == 576
    layer.float()
    assert layer.k == 576 and layer.refresh_due() is False   # fp32 on CUDA: 16 divides 576 too


# ---- autocast, the fused G_x form, alignment, a second GPU ----

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cache_rows", [False, True])
@pytest.mark.parametrize("r0", [0, 14])
@pytest.mark.parametrize("form", [None, "split"])
def test_cuda_autocast_with_fp32_weights_matches_fp32(dtype, cache_rows, r0, form):
    # what transformers.Trainer(bf16=True) runs; m = 256 so that k = 128 for both fp32 (16) and 16-bit (64)
    torch.manual_seed(0)
    lin = nn.Linear(128, 256).cuda()
    cfg = core.CELoRAConfig(r=14, alpha=28.0, keep_ratio=0.5, svd_rank=r0, cache_rows=cache_rows, grad_x_form=form)
    ref, amp = core.CELoRALinear.from_linear(lin, cfg), core.CELoRALinear.from_linear(lin, cfg)
    with torch.no_grad():
        ref.lora_B.normal_()
        amp.lora_B.copy_(ref.lora_B)
        amp.lora_A.copy_(ref.lora_A)
    x = torch.randn(4, 32, 128, device="cuda")
    gy = torch.randn(4, 32, 256, device="cuda") * torch.exp(torch.randn(256, device="cuda"))
    out = []
    for layer, ac in ((ref, False), (amp, True)):
        xx = x.clone().requires_grad_(True)
        with torch.autocast("cuda", dtype=dtype, enabled=ac):
            y = layer(xx)
        y.backward(gy.to(y.dtype))
        out.append((y, xx.grad, layer.lora_A.grad, layer.lora_B.grad))
    assert amp.k == ref.k == 128 and amp.k_multiple == 64 and ref.k_multiple == 16
    assert amp.grad_x_form == (form or "fused") and torch.equal(amp.idx, ref.idx)
    got, want = out[1], out[0]
    assert got[0].dtype == dtype and got[1].dtype == torch.float32                   # G_x in x's dtype
    assert got[2].dtype == got[3].dtype == amp.lora_A.dtype == torch.float32
    for name, g, w in zip(("y", "G_x", "G_A", "G_B"), got, want):
        rel = (g.float() - w).norm() / w.norm()
        assert rel < 2e-2, (name, rel.item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cache_rows", [False, True])
@pytest.mark.parametrize("r,r0", [(14, 14), (16, 14), (17, 3), (8, 0), (7, 0)])
def test_cuda_fused_equals_split_and_operands_are_aligned(dtype, cache_rows, r, r0):
    from core import components as C
    torch.manual_seed(0)
    lin = nn.Linear(256, 512).cuda().to(dtype)
    layers = [core.CELoRALinear.from_linear(lin, core.CELoRAConfig(r=r, keep_ratio=0.5, svd_rank=r0,
                                                                   cache_rows=cache_rows, grad_x_form=f))
              for f in ("split", "fused")]
    with torch.no_grad():
        layers[0].lora_B.normal_()
        layers[1].lora_B.copy_(layers[0].lora_B)
        layers[1].lora_A.copy_(layers[0].lora_A)
    x = torch.randn(64, 256, device="cuda", dtype=dtype)
    gy = (torch.randn(64, 512, device="cuda") * torch.exp(torch.randn(512, device="cuda"))).to(dtype)
    got = []
    for layer in layers:
        xx = x.clone().requires_grad_(True)
        layer(xx).backward(gy)
        got.append(xx.grad.float())
    assert torch.equal(layers[0].idx, layers[1].idx)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert ((got[1] - got[0]).norm() / got[0].norm()).item() < tol
    fused = layers[1]
    lay = fused.fused_layout()
    left, g_h = fused.fused_grad_h(gy, fused.lora_B.detach())
    C.gather_into_left(left, gy, fused.idx, lay)
    for t in (left, g_h, left[:, lay.t_off:lay.t_off + max(r0, 1)], left[:, lay.w:lay.w + lay.k],
              fused.rows if cache_rows else left):
        assert t.data_ptr() % 16 == 0 and (t.stride(0) * t.element_size()) % 16 == 0


def test_k_multiple_under_cuda_autocast_forces_a_refresh():
    # fp32 weights: k from fp32 (16) outside autocast, from bf16 (64) inside; the change reselects
    layer = core.CELoRALinear.from_linear(nn.Linear(64, 1000).cuda(), core.CELoRAConfig(keep_ratio=0.55))
    x, gy = torch.randn(32, 64, device="cuda", requires_grad=True), torch.randn(32, 1000, device="cuda")
    layer(x).backward(gy)
    assert layer.k == 560 and layer.idx.numel() == 560                   # ceil(550 / 16)·16
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = layer(x)
    assert layer.k == 576 and layer.refresh_due()                         # ceil(550 / 64)·64
    y.backward(gy.bfloat16())
    assert layer.idx.numel() == 576 and layer.refresh_count == 2


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
@pytest.mark.parametrize("form", ["split", "fused"])
def test_layer_on_the_second_gpu(form):
    # the Triton gather launches under its input's device guard: cuda:1 while cuda:0 is current
    torch.manual_seed(0)
    lin = nn.Linear(128, 256)
    cfg = core.CELoRAConfig(r=8, keep_ratio=0.5, svd_rank=4, grad_x_form=form)
    cpu = core.CELoRALinear.from_linear(lin, cfg)
    gpu = core.CELoRALinear.from_linear(copy.deepcopy(lin), cfg)           # the same SVD, taken on the CPU
    with torch.no_grad():
        cpu.lora_B.normal_()
        gpu.lora_B.copy_(cpu.lora_B)
        gpu.lora_A.copy_(cpu.lora_A)
    gpu.to("cuda:1")
    torch.cuda.set_device(0)
    x = torch.randn(16, 128)
    gy = torch.randn(16, 256) * torch.exp(2 * torch.randn(256))
    xc, xg = x.clone().requires_grad_(True), x.to("cuda:1").requires_grad_(True)
    cpu(xc).backward(gy)
    gpu(xg).backward(gy.to("cuda:1"))
    assert gpu.idx.device == torch.device("cuda", 1)
    torch.testing.assert_close(xg.grad.cpu(), xc.grad, atol=1e-3, rtol=1e-3)
