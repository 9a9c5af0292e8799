"""The fused G_x form (one GEMM [G_h | 0 | T | 0 | G_y[:, I] | 0] · [A; 0; A0; 0; rows; 0]) and the
alignment of every operand of the fused products: components and the whole layer in float64 against
references written here, gradcheck where the approximation is exact, scopes and FLOPs per form."""
import math

import pytest
import torch
from test_core_layer import grads  # one helper: y, G_x, G_A, G_B of a layer
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import core
from core import components as C
from core import config as config_mod
from core import selection
from core.flops import COMPONENTS, layer_flops, module_flops

RS = (1, 7, 8, 14, 16, 17)
R0S = (0, 3, 14)


def make(m=64, n=40, r=4, dtype=torch.float64, **kw):
    layer = core.CELoRALinear.from_linear(nn.Linear(n, m).to(dtype), core.CELoRAConfig(r=r, alpha=2.0 * r, **kw))
    with torch.no_grad():
        layer.lora_B.normal_()                       # zeros would hide every B-dependent gradient
    return layer


def twins(m=64, n=40, r=4, **kw):
    """(split, fused): one layer per G_x form over the same W0 and bias (so the same B0, A0), A and B."""
    lin = nn.Linear(n, m).double()
    split, fused = (core.CELoRALinear.from_linear(lin, core.CELoRAConfig(r=r, alpha=2.0 * r, grad_x_form=f, **kw))
                    for f in ("split", "fused"))
    with torch.no_grad():
        split.lora_B.normal_()
        fused.lora_B.copy_(split.lora_B)
        fused.lora_A.copy_(split.lora_A)
    return split, fused




def approx_reference(layer, x, gy):
    """(y, G_x, G_A, G_B) by dense autograd of the approximation the layer runs, in float64:
    G_x = G_y M + s G_y B A with M = W0 on the kept rows I and B0 A0 on the others (Ī)."""
    W = layer.weight.detach().double()
    M = W.clone()
    if layer.B0 is not None:
        rest = torch.ones(layer.out_features, dtype=torch.bool)
        rest[layer.idx] = False                                               # Ī
        M[rest] = (layer.B0.double() @ layer.A0.double())[rest]
    else:
        M = torch.zeros_like(W)
        M[layer.idx] = W[layer.idx]
    xr = x.detach().double().reshape(-1, layer.in_features).requires_grad_(True)
    A = layer.lora_A.detach().double().requires_grad_(True)
    B = layer.lora_B.detach().double().requires_grad_(True)
    # forward through W0 (what y is), backward through M (what G_x is): y = x W0ᵀ with G_x taken via M
    frozen = xr @ M.t() + (xr @ (W - M).t()).detach()
    y = frozen + layer.bias.detach().double() + layer.scale * (xr @ A.t()) @ B.t()
    y.backward(gy.double().reshape(y.shape))
    return y.detach(), xr.grad, A.grad, B.grad


def assert_matches(got, want, tol=1e-10):
    for name, g, w in zip(("y", "G_x", "G_A", "G_B"), got, want):
        torch.testing.assert_close(g.double().reshape(w.shape), w, atol=tol, rtol=tol, msg=name)


# ---- the layout ----------------------------------------------------------------

@pytest.mark.parametrize("r", RS)
@pytest.mark.parametrize("r0", R0S)
@pytest.mark.parametrize("k,a", [(1, 1), (37, 1), (576, 64), (9328, 16), (100, 3)])
def test_layout_blocks_are_aligned_and_disjoint(r, r0, k, a):
    lay = C.fused_layout(k, r, r0, a)
    assert lay.t_off % 8 == 0 and lay.w % 8 == 0 and lay.K % math.lcm(8, a) == 0
    assert r <= lay.t_off and lay.t_off + r0 <= lay.w and lay.w + k <= lay.K < lay.w + k + math.lcm(8, a)
    assert lay.w - lay.t_off - r0 < 16 and lay.t_off - r < 8              # no more padding than needed
    assert C.skinny_width(r, r0) == lay.w and (r0 == 0 or lay.w % C.SKINNY_MULTIPLE == 0)


# ---- components, float64 ---------------------------------------------------------

def problem(r, r0, cache_rows, N=11, m=40, n=24, k=17, seed=1):
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(N, m, generator=g, dtype=torch.float64)
    W0 = torch.randn(m, n, generator=g, dtype=torch.float64)
    A = torch.randn(r, n, generator=g, dtype=torch.float64)
    B = torch.randn(m, r, generator=g, dtype=torch.float64)
    B0, A0 = selection.svd_split(W0, r0)
    idx = torch.randperm(m, generator=g)[:k].sort().values
    C_ = None if B0 is None else (B0 if cache_rows else selection.zero_rows(B0, idx))
    return gy, W0, A, B, B0, A0, idx, C_


@pytest.mark.parametrize("cache_rows", [False, True])
@pytest.mark.parametrize("r0", [0, 14])
@pytest.mark.parametrize("r", [1, 7, 16, 17])
def test_fused_components_equal_the_split_form_and_the_formula(cache_rows, r0, r):
    gy, W0, A, B, B0, A0, idx, C_ = problem(r, r0, cache_rows)
    s, (N, m), n = 0.7, gy.shape, W0.shape[1]
    lay = C.fused_layout(idx.numel(), r, r0, 3)
    left = torch.full((N, lay.K), float("nan"), dtype=gy.dtype)               # every column must be written
    g_h, t = C.grad_h_fused(gy, B, s, C_, out=left[:, :lay.w])
    C.gather_into_left(left, gy, idx, lay)
    if cache_rows:
        rows = selection.residual_rows(W0, idx, B0, A0)
        right = C.put_lora_rows(C.right_operand_cached(rows, A0, lay, gy.dtype), A, A0, lay)
    else:
        rows = W0.index_select(0, idx)
        right = C.right_operand_lean(W0, idx, A, A0, lay)
    got = C.grad_x_fused(left, right)
    # the split form, unfused
    g_h_split = C.grad_h(gy, B, s)
    frozen = (C.grad_x_frozen_cached(gy, idx, rows, B0, A0) if cache_rows
              else C.grad_x_frozen_lean(gy, idx, W0, B0, A0))
    torch.testing.assert_close(got, frozen + g_h_split @ A, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(g_h, g_h_split, atol=1e-12, rtol=1e-12)
    # the formula, by plain indexing: G_y[:, I] W0[I] + G_y[:, Ī] B0[Ī] A0 + s G_y B A
    rest = torch.ones(m, dtype=torch.bool)
    rest[idx] = False
    want = gy[:, idx] @ W0[idx] + s * gy @ B @ A
    if r0:
        want = want + gy[:, rest] @ B0[rest] @ A0
        torch.testing.assert_close(t, gy @ C_, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    # the operands are what the layout says, zero padding included
    assert torch.equal(left[:, :r], g_h) and torch.equal(left[:, lay.w:lay.w + lay.k], gy[:, idx])
    pad_cols = [c for c in range(lay.K) if not (c < r or lay.t_off <= c < lay.t_off + r0 or lay.w <= c < lay.w + lay.k)]
    assert torch.equal(left[:, pad_cols], torch.zeros(N, len(pad_cols), dtype=gy.dtype))
    assert torch.equal(right[pad_cols], torch.zeros(len(pad_cols), n, dtype=gy.dtype))
    assert torch.equal(right[:r], A) and (r0 == 0 or torch.equal(right[lay.t_off:lay.t_off + r0], A0))


# ---- alignment of every operand of the fused products ---------------------------------------

class MatmulOperands(TorchDispatchMode):
    """Logs the tensor operands (and out=) of every mm / addmm run under it."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func._overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_):
            ts = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
            self.seen.append((str(func), ts))
        return func(*args, **kwargs)


def _aligned(t: torch.Tensor) -> bool:
    return t.data_ptr() % 16 == 0


def _rows_aligned(t: torch.Tensor) -> bool:
    """Every row (along the non-unit stride) starts 16-byte aligned."""
    return _aligned(t) and all(st == 1 or st * t.element_size() % 16 == 0 for st in t.stride())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cache_rows", [False, True])
@pytest.mark.parametrize("r0", R0S)
@pytest.mark.parametrize("r", RS)
def test_every_fused_operand_is_16_byte_aligned(dtype, cache_rows, r0, r):
    layer = make(m=64, n=40, r=r, dtype=dtype, keep_ratio=0.5, svd_rank=r0, cache_rows=cache_rows,
                 grad_x_form="fused", tau=10**6)
    x = torch.randn(10, 40, dtype=dtype, requires_grad=True)
    gy = torch.randn(10, 64, dtype=dtype)
    layer(x).backward(gy)                                                      # selects I
    B, A = layer.lora_B.detach(), layer.lora_A.detach()
    lay = layer.fused_layout()
    left, g_h = layer.fused_grad_h(gy, B)
    _, t = C.grad_h_fused(gy, B, layer.scale, layer.skinny_operand(), out=left[:, :lay.w])
    skinny = C.skinny_operand(B, layer.scale, layer.skinny_operand(), lay.w)
    C.gather_into_left(left, gy, layer.idx, lay)
    right = (layer.rows if cache_rows else C.right_operand_lean(layer.weight, layer.idx, A, layer.A0, lay))
    operands = {"G_h": g_h, "L": left, "L[:, :w]": left[:, :lay.w], "G_y[:, I] in L": left[:, lay.w:lay.w + lay.k],
                "right": right, "W0[I] or R[I] in right": right[lay.w:lay.w + lay.k], "A in right": right[:r],
                "skinny operand": skinny}
    if r0:
        operands.update({"T": t, "A0 in right": right[lay.t_off:lay.t_off + r0]})
    for name, op in operands.items():
        assert _rows_aligned(op), (name, op.data_ptr() % 16, op.stride())
    # and every mm / addmm operand of a whole fused backward
    with MatmulOperands() as log:
        layer(x).backward(gy)
    assert len(log.seen) >= 4
    assert log.seen, 'nothing to check: the loop below would pass vacuously'
    for op, ts in log.seen:
        assert all(_aligned(t) for t in ts), (op, [(tuple(t.shape), t.stride(), t.data_ptr() % 16) for t in ts])


def test_split_form_operands_are_aligned_too():
    # r = r0 = 14 in bf16: T used to start at byte 28 of each row of G_y [s·B | C | 0]
    g_h, t = C.grad_h_fused(torch.randn(9, 30).bfloat16(), torch.randn(30, 14).bfloat16(), 0.5,
                            torch.randn(30, 14).bfloat16())
    assert _rows_aligned(g_h) and _rows_aligned(t) and t.data_ptr() - g_h.data_ptr() == 16 * 2


# ---- the whole layer ----------------------------------------------------------------

@pytest.mark.parametrize("cache_rows", [False, True])
@pytest.mark.parametrize("r0", [0, 14])
@pytest.mark.parametrize("r", [1, 7, 16, 17])
def test_fused_layer_equals_split_layer_and_dense_autograd(cache_rows, r0, r):
    split, fused = twins(r=r, keep_ratio=0.5, svd_rank=r0, cache_rows=cache_rows, tau=10**6)
    assert (split.grad_x_form, fused.grad_x_form) == ("split", "fused")
    x = torch.randn(2, 7, 40, dtype=torch.float64)
    gy = torch.randn(2, 7, 64, dtype=torch.float64) * torch.exp(torch.randn(64, dtype=torch.float64))
    for _ in range(2):                                  # the refresh, then a cached-index step
        got, base = grads(fused, x, gy), grads(split, x, gy)
        assert torch.equal(fused.idx, split.idx)
        assert_matches(got, approx_reference(fused, x, gy))
        assert_matches(base, approx_reference(split, x, gy))
        gy = gy.flip(0)
    assert fused.refresh_count == 1


@pytest.mark.parametrize("cache_rows", [False, True])
def test_gradcheck_fused_where_the_approximation_is_exact(cache_rows):
    # r0 = min(m, n): B0 A0 = W0, so the sampled G_x is the exact gradient and gradcheck can take x too
    layer = make(m=9, n=6, r=2, keep_ratio=0.5, svd_rank=6, cache_rows=cache_rows, grad_x_form="fused", tau=10**6)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert not layer.dense and layer.grad_x_form == "fused"
    assert torch.autograd.gradcheck(lambda x, A, B: layer(x), (x, layer.lora_A, layer.lora_B))


@pytest.mark.parametrize("cache_rows", [False, True])
def test_gradcheck_fused_lora_params(cache_rows):
    # with the index fixed, G_A and G_B are exact for every p
    layer = make(m=12, n=5, r=3, keep_ratio=0.5, svd_rank=2, cache_rows=cache_rows, grad_x_form="fused", tau=10**6)
    x = torch.randn(4, 5, dtype=torch.float64)
    layer(x.requires_grad_()).sum().backward()                                   # selects I
    assert torch.autograd.gradcheck(lambda A, B: layer(x.detach()), (layer.lora_A, layer.lora_B))


def test_frozen_part_alone_and_fused_product_alone():
    # suites time layer.grad_x_frozen(gy, t) (the frozen part only) and layer.grad_x_fused(gy, L, A)
    for cache_rows in (False, True):
        split, fused = twins(keep_ratio=0.5, svd_rank=3, cache_rows=cache_rows, tau=10**6)
        x, gy = torch.randn(7, 40, dtype=torch.float64), torch.randn(7, 64, dtype=torch.float64)
        g = [grads(m, x, gy)[1] for m in (split, fused)]
        B, A = fused.lora_B.detach(), fused.lora_A.detach()
        torch.testing.assert_close(fused.grad_x_frozen(gy), split.grad_x_frozen(gy), atol=1e-12, rtol=1e-12)
        left, g_h = fused.fused_grad_h(gy, B)
        torch.testing.assert_close(fused.grad_x_fused(gy, left, A), g[1], atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(fused.grad_x_frozen(gy) + g_h @ A, g[0], atol=1e-12, rtol=1e-12)
        if cache_rows:
            assert fused.rows.shape == (fused.fused_layout().K, 40) and fused.kept_rows.shape == (fused.k, 40)
            torch.testing.assert_close(fused.kept_rows, split.rows)


def test_layout_change_rebuilds_the_rows_without_reselecting(monkeypatch):
    # the k multiple moves from 1 to 16 (as CUDA fp32 -> bf16) while k = 32 stays: K moves from 40 to 48
    real = config_mod.k_multiple_for
    monkeypatch.setattr(config_mod, "k_multiple_for", lambda device="cpu", dtype=None: 16
                        if dtype in (torch.bfloat16, torch.float16) else real(device, dtype))
    layer = make(r=1, dtype=torch.float32, keep_ratio=0.5, svd_rank=0, cache_rows=True, grad_x_form="fused")
    x, gy = torch.randn(5, 40), torch.randn(5, 64)
    grads(layer, x, gy)
    assert layer.rows.shape[0] == 40 and layer.refresh_count == 1
    xb = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(xb)
    assert layer.k == 32 and layer.fused_layout().K == 48 and not layer.refresh_due()
    y.backward(gy.bfloat16())
    assert layer.rows.shape[0] == 48 and layer.rows.dtype == torch.bfloat16 and layer.refresh_count == 1
    want = approx_reference(layer, x, gy)[1]
    torch.testing.assert_close(xb.grad.double(), want, atol=0.05 * want.abs().mean().item(), rtol=0.05)


# ---- the form: config, per-device default, property ------------------------------------

@pytest.mark.parametrize("bad", ["Fused", "one", 1, True])
def test_grad_x_form_is_validated(bad):
    with pytest.raises(ValueError, match=r"grad_x_form=.*allowed: None \(per device\) or split or fused"):
        core.CELoRAConfig(grad_x_form=bad)


def test_form_defaults_per_device_and_overrides():
    f = config_mod.grad_x_form_for
    assert f("cuda") == f(torch.device("cuda", 1)) == "fused"
    assert f("cpu") == f(torch.device("meta")) == "split"
    assert make(keep_ratio=0.5).grad_x_form == "split"                          # this CPU's default
    assert make(keep_ratio=0.5, grad_x_form="fused").grad_x_form == "fused"
    assert make(keep_ratio=1.0, grad_x_form="fused").grad_x_form == "split"     # dense: no fusion
    assert make(keep_ratio=0.5, dropout=0.1, grad_x_form="fused").grad_x_form == "split"   # G_h·A via the mask
    assert "grad_x_form=fused" in repr(make(keep_ratio=0.5, grad_x_form="fused"))


def test_dropout_with_fused_config_matches_masked_reference():
    layer = make(dtype=torch.float64, keep_ratio=1.0, dropout=0.3, grad_x_form="fused")
    x, gy = torch.randn(6, 40, dtype=torch.float64), torch.randn(6, 64, dtype=torch.float64)
    torch.manual_seed(1)
    _, gx, gA, gB = grads(layer, x, gy)
    torch.manual_seed(1)
    mask = torch.empty(6, 40, dtype=torch.float64).bernoulli_(0.7).div_(0.7)
    xr = x.clone().requires_grad_(True)
    A = layer.lora_A.detach().clone().requires_grad_(True)
    B = layer.lora_B.detach().clone().requires_grad_(True)
    (xr @ layer.weight.t() + ((xr * mask) @ A.t()) @ B.t() * layer.scale).backward(gy)
    for got, want in [(gx, xr.grad), (gA, A.grad), (gB, B.grad)]:
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


# ---- scopes and FLOPs per form ------------------------------------------------------------

@pytest.mark.parametrize("m,n,N,r", [(48, 32, 24, 4), (64, 96, 17, 7), (512, 128, 64, 16)])
@pytest.mark.parametrize("p,r0,cache", [(0.5, 0, False), (0.25, 3, False), (0.5, 5, True), (0.5, 0, True)])
def test_counted_flops_equal_analytic_per_scope_fused(m, n, N, r, p, r0, cache):
    from celora_bench import flops
    layer = core.CELoRALinear.from_linear(nn.Linear(n, m), core.CELoRAConfig(
        r=r, keep_ratio=p, svd_rank=r0, cache_rows=cache, grad_x_form="fused"))
    x = torch.randn(N, n, requires_grad=True)
    gy = torch.randn(N, m)

    def step():
        layer.refresh_index()
        layer(x).backward(gy)

    counted = flops.profile_scopes(step, COMPONENTS + ("selection",)).flops
    analytic = module_flops(layer, N)
    lay = layer.fused_layout()
    assert analytic == layer_flops(N, m, n, r, layer.k, r0, cache, form="fused", k_multiple=layer.k_multiple)
    assert analytic["bwd.grad_x_frozen"] == 2 * N * lay.K * n and analytic["bwd.grad_x_lora"] == 0
    assert analytic["bwd.grad_h"] == 2 * N * m * lay.w
    for comp in COMPONENTS + ("selection",):
        assert counted.get(comp, 0) == analytic[comp], comp
    assert "other" not in counted
    assert flops.torch_total(step) == sum(analytic.values())


def test_fused_flops_by_hand():
    # q_proj of Llama-3.2-1B at N=2048, r=16, r0=14, k=1024; bf16 CUDA pads K to 64
    N = m = n = 2048
    f = layer_flops(N, m, n, 16, k=1024, r0=14, form="fused", k_multiple=64)
    assert f["bwd.grad_h"] == 2 * N * m * 32                      # [s·B | C | 0]: 16 + 14 padded to 32
    assert f["bwd.grad_x_frozen"] == 2 * N * (1024 + 64) * n      # 32 + 1024 = 1056 -> 1088 = 17·64
    assert f["bwd.grad_x_lora"] == 0
    f = layer_flops(N, m, n, 14, k=1000, r0=0, form="fused")      # r0 = 0: [s·B | 0] 14 -> 16 columns
    assert f["bwd.grad_h"] == 2 * N * m * 16 and f["bwd.grad_x_frozen"] == 2 * N * 1016 * n
    split = layer_flops(N, m, n, 16, k=1024, r0=14)
    assert split["bwd.grad_x_lora"] == 2 * N * 16 * n and split["bwd.grad_x_frozen"] == 2 * N * 1038 * n
    assert layer_flops(N, m, n, 16, form="fused") == layer_flops(N, m, n, 16)   # dense: split
    with pytest.raises(ValueError, match="form='one' is invalid"):
        layer_flops(N, m, n, 16, k=1024, form="one")


@pytest.mark.parametrize("cache_rows", [False, True])
def test_components_take_the_parameters_under_grad_mode(cache_rows):
    # suites call the components with the layer's parameters (requires_grad) outside a backward
    layer = make(keep_ratio=0.5, svd_rank=3, cache_rows=cache_rows, grad_x_form="fused")
    x, gy = torch.randn(7, 40, dtype=torch.float64), torch.randn(7, 64, dtype=torch.float64)
    g = grads(layer, x, gy)[1]
    with torch.enable_grad():
        left, g_h = layer.fused_grad_h(gy, layer.lora_B)
        got = layer.grad_x_fused(gy, left, layer.lora_A)
        C.grad_h_fused(gy, layer.lora_B, layer.scale, layer.skinny_operand())
    torch.testing.assert_close(got.detach(), g, atol=1e-12, rtol=1e-12)
    assert layer.rows is None or not layer.rows.requires_grad
