"""Issue 11 on the CPU: the aligned k rule, the fused skinny products, the per-device gather
(Triton in its interpreter), FLOP attribution and the scope-free fast path."""
import math
import os
import subprocess
import sys

import pytest
import torch

import core
from core import components as C
from core import config as config_mod
from core import gather, selection
from core.flops import layer_flops
from tests.test_core_layer import assert_outputs_match, make

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the k rule ----------------------------------------------------------------

@pytest.mark.parametrize("m", [1, 7, 63, 64, 65, 100, 513, 1024, 4099, 14336])
@pytest.mark.parametrize("p", [0.01, 0.25, 0.5, 0.55, 0.65, 0.99, 1.0])
@pytest.mark.parametrize("a", [1, 8, 16, 64, 128])
def test_k_rule_on_odd_shapes(m, p, a):
    base = min(m, max(1, math.ceil(p * m - 1e-9)))                     # ceil(p·m), at least 1
    k = core.CELoRAConfig(keep_ratio=p, k_multiple=a).kept(m)
    assert base <= k <= m                                              # never below ceil(p·m)
    assert k == m or (k % a == 0 and k - base < a)                     # the next multiple, or dense
    assert k == min(m, -(-base // a) * a)


def test_k_rule_by_hand():
    # the 8B shapes measured on the H200: up/down at 0.65, v at 0.55
    cfg = core.CELoRAConfig(keep_ratio=0.65)
    assert cfg.kept(14336) == 9319 and cfg.kept(14336, "cuda", torch.bfloat16) == 9344
    assert cfg.kept(4096, "cuda:0", torch.float16) == 2688
    assert core.CELoRAConfig(keep_ratio=0.55).kept(1024, "cuda", torch.bfloat16) == 576
    assert cfg.kept(14336, "cuda", torch.float32) == 9328               # 16 for fp32
    assert core.CELoRAConfig(keep_ratio=0.99, k_multiple=64).kept(100) == 100   # rounds past m: dense


def test_auto_multiple_per_device_and_dtype():
    f = config_mod.k_multiple_for
    assert f("cuda", torch.bfloat16) == f(torch.device("cuda:1"), torch.float16) == 64
    assert f("cuda", torch.float32) == f("cuda", None) == 16
    assert f("cpu", torch.bfloat16) == f("cpu", torch.float32) == f(torch.device("cpu")) == config_mod.CPU_MULTIPLE


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "64"])
def test_k_multiple_is_validated(bad):
    with pytest.raises(ValueError, match=r"k_multiple=.*allowed: None \(auto\) or an integer >= 1"):
        core.CELoRAConfig(k_multiple=bad)


def test_layer_k_follows_dtype_after_to(monkeypatch):
    # the auto multiple read when the index is selected: pretend this CPU wants 8 for 16-bit dtypes
    real = config_mod.k_multiple_for
    monkeypatch.setattr(config_mod, "k_multiple_for",
                        lambda device="cpu", dtype=None: 8 if dtype in (torch.bfloat16, torch.float16)
                        else real(device, dtype))
    layer = make(m=50, n=12, keep_ratio=0.5, svd_rank=2)
    x, gy = torch.randn(6, 12, requires_grad=True), torch.randn(6, 50)
    layer(x).backward(gy)
    assert layer.k == 25 == layer.idx.numel() and layer.effective_keep_ratio == 0.5
    layer.to(torch.bfloat16)
    assert layer.k == 32 and layer.refresh_due()                        # k changed: reselect
    layer(x.detach().bfloat16().requires_grad_()).backward(gy.bfloat16())
    assert layer.idx.numel() == 32 and layer.effective_keep_ratio == 32 / 50
    assert "k=32" in repr(layer)


def test_layer_dense_when_k_rounds_to_m():
    layer = make(m=40, n=12, keep_ratio=0.9, k_multiple=64)
    assert layer.dense and layer.k == 40 and layer.r0 == 0 and layer.B0 is None


def test_aligned_index_is_a_superset():
    # the same algorithm: top-k of the same score, only more features kept
    m, n = 100, 30
    small = make(m=m, n=n, keep_ratio=0.37, svd_rank=3, k_multiple=1)
    big = make(m=m, n=n, keep_ratio=0.37, svd_rank=3, k_multiple=16)
    with torch.no_grad():
        for name in ("weight", "bias", "lora_A", "lora_B"):
            getattr(big, name).copy_(getattr(small, name))
    big.res_sq.copy_(small.res_sq)
    x, gy = torch.randn(9, n, requires_grad=True), torch.randn(9, m) * torch.exp(2 * torch.randn(m))
    small(x).backward(gy)
    big(x).backward(gy)
    assert small.k == 37 and big.k == 48
    assert set(small.idx.tolist()) < set(big.idx.tolist())


def test_convert_summary_shows_effective_p():
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=100, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(cfg)
    summary = core.convert(model, "paper", r=8, k_multiple=16)
    up = next(c for c in summary if c.module.endswith("up_proj"))
    assert up.k == 80 and up.effective_keep_ratio == 0.8                # ceil(0.65·100) = 65 -> 80
    assert " 80 0.8000 " in str(summary)


# ---- one read of G_y: fused skinny products -----------------------------------

@pytest.mark.parametrize("cache_rows", [False, True])
def test_fused_equals_unfused_float64(cache_rows):
    g = torch.Generator().manual_seed(1)
    N, m, n, r, r0, k = 11, 40, 23, 4, 5, 17
    gy = torch.randn(N, m, generator=g, dtype=torch.float64)
    W0 = torch.randn(m, n, generator=g, dtype=torch.float64)
    B = torch.randn(m, r, generator=g, dtype=torch.float64)
    B0, A0 = selection.svd_split(W0, r0)
    idx = torch.randperm(m, generator=g)[:k].sort().values
    C_ = B0 if cache_rows else selection.zero_rows(B0, idx)
    g_h, T = C.grad_h_fused(gy, B, 0.7, C_)
    assert C.skinny_width(r, r0) == 16 and T.shape == (N, r0)
    torch.testing.assert_close(g_h, C.grad_h(gy, B, 0.7), atol=1e-12, rtol=1e-12)
    if cache_rows:
        rows = selection.residual_rows(W0, idx, B0, A0)
        want = C.grad_x_frozen_cached(gy, idx, rows, B0, A0)
    else:
        rows = W0.index_select(0, idx)
        want = C.grad_x_frozen_lean(gy, idx, W0, B0, A0)
    torch.testing.assert_close(C.grad_x_frozen_amm(gy, idx, rows, T, A0), want, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(C.skinny(gy, C_), gy @ C_, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cache_rows", [False, True])
def test_direct_grad_x_frozen_equals_the_functions(cache_rows):
    # suites time layer.grad_x_frozen(gy) alone (t computed inside) and the Function passes t from grad_h
    layer = make(m=40, n=20, dtype=torch.float64, keep_ratio=0.5, svd_rank=3, cache_rows=cache_rows)
    x, gy = torch.randn(7, 20, dtype=torch.float64, requires_grad=True), torch.randn(7, 40, dtype=torch.float64)
    layer(x).backward(gy)
    _, t = C.grad_h_fused(gy, layer.lora_B.detach(), layer.scale, layer.skinny_operand())
    torch.testing.assert_close(layer.grad_x_frozen(gy), layer.grad_x_frozen(gy, t), atol=1e-12, rtol=1e-12)
    g_h = C.grad_h(gy, layer.lora_B.detach(), layer.scale)
    torch.testing.assert_close(x.grad, layer.grad_x_frozen(gy) + g_h @ layer.lora_A.detach(), atol=1e-12, rtol=1e-12)


def test_fused_flops_by_hand():
    # q_proj of Llama-3.2-1B at N=2048, r=16, k=1024, r0=14: G_y [s·B | C] in bwd.grad_h
    N = m = n = 2048
    for cache in (False, True):
        f = layer_flops(N, m, n, 16, k=1024, r0=14, cache_rows=cache)
        assert f["bwd.grad_h"] == 2 * N * m * 32                        # 16 + 14 padded to 32
        assert f["bwd.grad_x_frozen"] == 2 * N * 1024 * n + 2 * N * 14 * n
    unfused = layer_flops(N, m, n, 16, k=1024, r0=14, fused=False)
    assert unfused["bwd.grad_h"] == 2 * N * m * 16
    assert unfused["bwd.grad_x_frozen"] == 2 * N * 1024 * n + 2 * N * 14 * (m + n)
    dense = layer_flops(N, m, n, 16)
    assert dense["bwd.grad_h"] == 2 * N * m * 16 and dense["bwd.grad_x_frozen"] == 2 * N * m * n


def test_no_scopes_without_a_profiler(monkeypatch):
    from core import function
    layer = make(keep_ratio=0.5, svd_rank=2)
    monkeypatch.setattr(function, "record_function", lambda name: pytest.fail(f"scope {name} opened"))
    layer(torch.randn(5, 40, requires_grad=True)).backward(torch.randn(5, 24))


# ---- the gather, per device ----------------------------------------------------

def _triton_interpreter_ok() -> str | None:
    """None when Triton imports and its interpreter runs here, else the reason to skip."""
    try:
        import triton  # noqa: F401
    except Exception as e:                           # noqa: BLE001
        return f"triton not importable ({type(e).__name__}); pip install --no-deps triton to run"
    return None


needs_triton = pytest.mark.skipif(_triton_interpreter_ok() is not None, reason=str(_triton_interpreter_ok()))


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def test_cpu_uses_torch_gather_and_unknown_devices_index_select():
    assert gather.method_for(torch.device("cpu")) is gather.torch_gather
    assert gather.method_for(torch.device("meta")) is gather.index_select


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("N,m,k", [(1, 5, 1), (37, 300, 129), (64, 1024, 576), (9, 700, 700)])
def test_gather_methods_equal_indexing(dtype, N, m, k):
    G = torch.randn(N, m).to(dtype)
    idx = torch.randperm(m)[:k].sort().values
    want = G[:, idx]
    for f in (gather.torch_gather, gather.index_select):
        assert torch.equal(f(G, idx), want)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("N,m,k,tile", [(1, 5, 1, (8, 256)), (37, 300, 129, (8, 64)), (20, 1000, 576, (8, 256)),
                                        (9, 70, 70, (16, 32))])
def test_triton_gather_in_interpreter(interpret, dtype, N, m, k, tile):
    from core import triton_gather
    G = torch.randn(N, m).to(dtype)
    idx = torch.randperm(m)[:k].sort().values
    out = triton_gather.gather_columns(G, idx, tile)
    assert out.is_contiguous() and torch.equal(out, G[:, idx])
    wide = torch.randn(N, 2 * m).to(dtype)[:, ::2]                     # a column stride of 2
    assert torch.equal(triton_gather.gather_columns(wide, idx, tile), wide[:, idx])


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("svd_rank,cache_rows", [(0, False), (3, False), (3, True)])
def test_layer_through_triton_gather(interpret, monkeypatch, dtype, svd_rank, cache_rows):
    # the layer's whole backward with G_y[:, I] taken by the Triton kernel, against the float64 formula
    calls = []

    def tri(gy, idx, out=None):
        calls.append(idx.numel())
        return gather.triton_gather(gy, idx, out)

    monkeypatch.setitem(gather.METHODS, "cpu", lambda: tri)
    layer = make(m=32, n=24, dtype=dtype, keep_ratio=0.5, svd_rank=svd_rank, cache_rows=cache_rows)
    x = torch.randn(2, 8, 24).to(dtype)
    gy = (torch.randn(2, 8, 32) * torch.exp(torch.randn(32))).to(dtype)
    assert_outputs_match(layer, x, gy, dtype)
    assert calls == [16]


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_gather_into_a_column_view(interpret, dtype):
    from core import triton_gather
    G = torch.randn(13, 90).to(dtype)
    idx = torch.randperm(90)[:37].sort().values
    wide = torch.zeros(13, 64 + 48, dtype=dtype)
    view = wide[:, 16:16 + 37]
    assert triton_gather.gather_columns(G, idx, out=view).data_ptr() == view.data_ptr()
    assert torch.equal(wide[:, 16:53], G[:, idx]) and not wide[:, :16].any() and not wide[:, 53:].any()


@pytest.mark.parametrize("method", [gather.torch_gather, gather.index_select])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gather_into_a_column_view(method, dtype):
    # the fused form gathers G_y[:, I] straight into columns of its left operand: no second copy
    G = torch.randn(13, 90).to(dtype)
    idx = torch.randperm(90)[:37].sort().values
    wide = torch.zeros(13, 16 + 37 + 11, dtype=dtype)
    view = wide[:, 16:16 + 37]
    out = method(G, idx, view)
    assert out.data_ptr() == view.data_ptr() and out.stride() == (64, 1)
    assert torch.equal(wide[:, 16:53], G[:, idx]) and not wide[:, :16].any() and not wide[:, 53:].any()


# ---- the Triton fallback and the device guard, on the CPU with mocks -----------------------

@pytest.fixture
def broken_triton(monkeypatch):
    """The CUDA method table on the CPU, with a Triton that imports but whose launch raises."""
    from core import triton_gather
    calls = []

    def launch(gy, idx, tile=None, out=None):
        calls.append(idx.numel())
        raise RuntimeError("boom: no kernel image")

    monkeypatch.setattr(triton_gather, "gather_columns", launch)
    monkeypatch.setattr(gather, "_triton_ok", True)
    monkeypatch.setattr(gather, "_triton_failure", None)
    monkeypatch.setattr(gather, "_used", {})
    monkeypatch.setitem(gather.METHODS, "cpu", gather._cuda_method)
    return calls


def test_triton_failure_falls_back_once_with_one_warning(broken_triton):
    import warnings
    G = torch.randn(9, 50)
    idx = torch.randperm(50)[:20].sort().values
    assert gather.method_for(G.device) is gather.triton_or_index_select
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [gather.gather_columns(G, idx) for _ in range(4)]
    assert all(torch.equal(o, G.index_select(1, idx)) for o in outs)
    ours = [w for w in caught if "Triton gather kernel failed" in str(w.message)]
    assert len(ours) == 1 and "RuntimeError: boom: no kernel image" in str(ours[0].message)
    assert broken_triton == [20]                                       # launched once, never again
    assert gather.method_for(G.device) is gather.index_select
    assert gather.methods_used() == {"cpu": "index_select (triton failed: RuntimeError: boom: no kernel image)"}


def test_triton_failure_inside_a_backward_gives_the_same_gradients(broken_triton):
    layer = make(m=32, n=24, keep_ratio=0.5, svd_rank=3)
    x = torch.randn(2, 8, 24)
    gy = torch.randn(2, 8, 32) * torch.exp(torch.randn(32))
    with pytest.warns(RuntimeWarning, match="Triton gather kernel failed"):
        assert_outputs_match(layer, x, gy, torch.float32)
    assert gather.methods_used()["cpu"].startswith("index_select (triton failed: RuntimeError")


def test_methods_used_names_the_cpu_gather(monkeypatch):
    monkeypatch.setattr(gather, "_used", {})
    assert gather.methods_used() == {}
    layer = make(m=32, n=24, keep_ratio=0.5)
    layer(torch.randn(5, 24, requires_grad=True)).backward(torch.randn(5, 32))
    assert gather.methods_used() == {"cpu": "torch.gather"}


def test_device_guard_is_the_tensors_cuda_device(monkeypatch):
    from core import triton_gather
    entered = []

    class Guard:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            entered.append("exit")

    monkeypatch.setattr(torch.cuda, "device", Guard)
    with triton_gather.device_guard(torch.device("cuda", 1)):
        assert entered == [torch.device("cuda", 1)]
    assert entered[-1] == "exit"
    entered.clear()
    with triton_gather.device_guard(torch.device("cpu")):              # the interpreter's CPU tensors
        pass
    assert entered == []


def test_kernel_launches_under_the_guard_of_the_input_device(monkeypatch):
    from core import triton_gather
    state = {"inside": None, "launched_inside": None}

    class Guard:
        def __init__(self, device):
            state["device"] = device

        def __enter__(self):
            state["inside"] = True

        def __exit__(self, *exc):
            state["inside"] = False

    class Kernel:
        def __getitem__(self, grid):
            def launch(G, Idx, Out, N, K, stride_g, stride_o, BLOCK_R, BLOCK_K):
                state["launched_inside"] = state["inside"]
                Out.copy_(G.index_select(1, Idx))
            return launch

    monkeypatch.setattr(triton_gather, "device_guard", Guard)
    monkeypatch.setattr(triton_gather, "_kernel", lambda: Kernel())
    G = torch.randn(7, 30)
    idx = torch.tensor([1, 4, 9, 29])
    out = triton_gather.gather_columns(G, idx)
    assert torch.equal(out, G[:, idx])
    assert state["device"] == G.device and state["launched_inside"] is True and state["inside"] is False


def test_triton_not_needed_to_import_core():
    code = ("import sys; sys.modules['triton'] = None; import core, core.gather, core.components; "
            "from torch import nn; import torch; l = core.CELoRALinear.from_linear(nn.Linear(8, 16), "
            "core.CELoRAConfig(r=2, keep_ratio=0.5)); l(torch.randn(3, 8, requires_grad=True)).sum().backward(); "
            "from core import triton_gather; assert not triton_gather.available(); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

