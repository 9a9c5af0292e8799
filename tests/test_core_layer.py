"""CELoRALinear against independent references: plain autograd LoRA, peft, float64 formulas."""
import math

import peft
import pytest
import torch
from torch import nn

import core
from tests.conftest import TOL


def reference_lora(x, W0, b, A, B, scale):
    """Plain autograd LoRA, written independently of core."""
    y = x @ W0.t() + (x @ A.t()) @ B.t() * scale
    return y if b is None else y + b


def make(m=24, n=40, r=4, bias=True, dtype=torch.float32, **kw):
    lin = nn.Linear(n, m, bias=bias).to(dtype)
    layer = core.CELoRALinear.from_linear(lin, core.CELoRAConfig(r=r, alpha=8.0, **kw))
    with torch.no_grad():
        layer.lora_B.normal_()  # zeros would hide every B-dependent gradient
    return layer


def grads(layer, x, gy):
    x = x.clone().requires_grad_(True)
    layer.lora_A.grad = layer.lora_B.grad = None
    y = layer(x)
    y.backward(gy)
    return y.detach(), x.grad, layer.lora_A.grad, layer.lora_B.grad


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7,), (2, 5), (2, 3, 4)])
def test_dense_matches_plain_autograd(bias, shape):
    layer = make(bias=bias)
    x = torch.randn(*shape, 40)
    gy = torch.randn(*shape, 24)
    y, gx, gA, gB = grads(layer, x, gy)
    xr = x.clone().requires_grad_(True)
    A = layer.lora_A.detach().clone().requires_grad_(True)
    B = layer.lora_B.detach().clone().requires_grad_(True)
    yr = reference_lora(xr, layer.weight, layer.bias, A, B, layer.scale)
    yr.backward(gy)
    atol, rtol = TOL[torch.float32]
    for got, want in [(y, yr), (gx, xr.grad), (gA, A.grad), (gB, B.grad)]:
        torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


def test_dense_matches_peft_linear():
    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(40, 24)

        def forward(self, x):
            return self.lin(x)

    wrap = Wrap()
    pm = peft.get_peft_model(wrap, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["lin"]))
    plin = pm.base_model.model.lin
    with torch.no_grad():
        plin.lora_B["default"].weight.normal_()
    layer = core.LoRALinear.from_linear(plin.base_layer, r=4, alpha=8.0)
    with torch.no_grad():
        layer.lora_A.copy_(plin.lora_A["default"].weight)
        layer.lora_B.copy_(plin.lora_B["default"].weight)
    x = torch.randn(3, 6, 40)
    gy = torch.randn(3, 6, 24)
    y, gx, gA, gB = grads(layer, x, gy)
    xp = x.clone().requires_grad_(True)
    pm(xp).backward(gy)
    atol, rtol = TOL[torch.float32]
    torch.testing.assert_close(y, pm(x).detach(), atol=atol, rtol=rtol)
    torch.testing.assert_close(gx, xp.grad, atol=atol, rtol=rtol)
    torch.testing.assert_close(gA, plin.lora_A["default"].weight.grad, atol=atol, rtol=rtol)
    torch.testing.assert_close(gB, plin.lora_B["default"].weight.grad, atol=atol, rtol=rtol)


@pytest.mark.parametrize("keep_ratio,svd_rank", [(1.0, 0), (0.5, 0), (0.5, 2)])
def test_gradcheck_float64(keep_ratio, svd_rank):
    # With the index fixed, the AMM backward is linear in G_y: gradcheck checks
    # the approximate G_x is the exact gradient only for p=1, so compare against
    # the layer's own approximation only through A and B (exact for every p).
    layer = make(m=6, n=5, r=2, dtype=torch.float64, keep_ratio=keep_ratio, svd_rank=svd_rank, tau=10**6)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=keep_ratio == 1.0)
    A, B = layer.lora_A, layer.lora_B
    assert torch.autograd.gradcheck(lambda x, A, B: layer(x), (x, A, B))


@pytest.mark.parametrize("keep_ratio", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("svd_rank", [0, 3])
@pytest.mark.parametrize("cache_rows", [False, True])
def test_amm_matches_float64_formula(keep_ratio, svd_rank, cache_rows):
    m, n = 32, 20
    layer = make(m=m, n=n, keep_ratio=keep_ratio, svd_rank=svd_rank, cache_rows=cache_rows)
    dense = core.LoRALinear.from_linear(nn.Linear(n, m), r=4, alpha=8.0)
    with torch.no_grad():
        dense.weight.copy_(layer.weight)
        dense.bias.copy_(layer.bias)
        dense.lora_A.copy_(layer.lora_A)
        dense.lora_B.copy_(layer.lora_B)
    x = torch.randn(2, 9, n)
    # heavy-tailed per-feature scales so the top-k is well separated
    gy = torch.randn(2, 9, m) * torch.exp(2 * torch.randn(m))
    y, gx, gA, gB = grads(layer, x, gy)
    yd, gxd, gAd, gBd = grads(dense, x, gy)
    # forward, G_A and G_B are exact (G_h comes from the fused G_y [s·B | C]: fp32 rounding only)
    torch.testing.assert_close(y, yd)
    torch.testing.assert_close(gA, gAd, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gB, gBd)
    # the index set: top-k of ||G_y[:, i]|| * ||R[i, :]|| computed here in float64
    W = layer.weight.double()
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    B0 = U[:, :svd_rank] * S[:svd_rank].sqrt()
    A0 = S[:svd_rank].sqrt()[:, None] * Vh[:svd_rank]
    R = W - B0 @ A0
    G = gy.reshape(-1, m).double()
    k = math.ceil(keep_ratio * m)
    score = G.norm(dim=0) * R.norm(dim=1)
    want_idx = torch.sort(torch.topk(score, k).indices).values
    assert torch.equal(layer.idx, want_idx)
    # G_x = (G_y B0) A0 + G_y[:, I] R[I, :] + s · G_y B A, in float64
    Ah, Bh = layer.lora_A.double(), layer.lora_B.double()
    want = (G @ B0) @ A0 + G[:, want_idx] @ R[want_idx] + layer.scale * (G @ Bh) @ Ah
    torch.testing.assert_close(gx.reshape(-1, n).double(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("keep_ratio", [0.1, 0.5, 0.9])
def test_full_svd_rank_is_exact(keep_ratio):
    m, n = 16, 12
    layer = make(m=m, n=n, keep_ratio=keep_ratio, svd_rank=min(m, n))
    dense = make(m=m, n=n)
    with torch.no_grad():
        for name in ("weight", "bias", "lora_A", "lora_B"):
            getattr(dense, name).copy_(getattr(layer, name))
    x, gy = torch.randn(10, n), torch.randn(10, m)
    torch.testing.assert_close(grads(layer, x, gy)[1], grads(dense, x, gy)[1], atol=1e-4, rtol=1e-4)


def formula64(layer, x, gy):
    """(y, G_x, G_A, G_B) in float64 from the layer's own (rounded) tensors and its current index I:

    y = x W0ᵀ + b + s (x Aᵀ) Bᵀ;  G_B = s G_yᵀ (x Aᵀ);  G_A = s (G_y B)ᵀ x;
    G_x = G_y W0 + s G_y B A when dense, else G_y[:, I] W0[I] + G_y[:, Ī] B0[Ī] A0 + s G_y B A.
    Written here from the formulas, independently of core.
    """
    d = lambda t: None if t is None else t.detach().double()          # noqa: E731
    X, G = d(x).reshape(-1, layer.in_features), d(gy).reshape(-1, layer.out_features)
    W, b, A, B, s = d(layer.weight), d(layer.bias), d(layer.lora_A), d(layer.lora_B), layer.scale
    y = X @ W.t() + s * (X @ A.t()) @ B.t() + (0 if b is None else b)
    gB = s * G.t() @ (X @ A.t())
    gA = s * (G @ B).t() @ X
    if layer.dense:
        frozen = G @ W
    else:
        kept = layer.idx                                              # I
        out = torch.ones(layer.out_features, dtype=torch.bool, device=kept.device)
        out[kept] = False                                             # Ī, the complement
        frozen = G[:, kept] @ W[kept]
        if layer.B0 is not None:
            frozen = frozen + G[:, out] @ d(layer.B0)[out] @ d(layer.A0)
    gx = frozen + s * (G @ B) @ A
    return y, gx, gA, gB


# Tolerances of test_dtypes: rtol, and atol relative to the mean |value| of each output; a few units of
# the dtype's rounding on these sizes (K <= 32 sums; bf16 unit 2^-8 = 0.0039; G_x adds the rounding of its
# bf16 intermediates: up to 1.2x of 1e-2 seen over 4 seeds). A dropped bias (|b| up to 1/sqrt(24) = 0.2
# against the bf16 atol 0.02 x mean |y| ~ 0.012) exceeds the tolerance several times, as test_dtypes asserts.
DTYPE_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def assert_outputs_match(layer, x, gy, dtype):
    got = grads(layer, x, gy)
    want = formula64(layer, x, gy)
    tol = DTYPE_TOL[dtype]
    for name, g, w in zip(("y", "G_x", "G_A", "G_B"), got, want):
        assert g.dtype == dtype, name
        scale = w.abs().mean().item()
        torch.testing.assert_close(g.double().reshape(w.shape), w, atol=tol * scale, rtol=tol, msg=name)
    return want


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("keep_ratio", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("svd_rank,cache_rows", [(0, False), (3, False), (3, True)])
def test_dtypes(dtype, keep_ratio, svd_rank, cache_rows):
    layer = make(m=32, n=24, dtype=dtype, keep_ratio=keep_ratio,
                 svd_rank=None if keep_ratio == 1.0 else svd_rank, cache_rows=cache_rows)
    with torch.no_grad():
        layer.lora_B.mul_(0.1)                 # a trained-size update: y ~ x W0ᵀ, bias visible beside it
    x = torch.randn(2, 8, 24).to(dtype)
    gy = (torch.randn(2, 8, 32) * torch.exp(torch.randn(32))).to(dtype)
    y_want = assert_outputs_match(layer, x, gy, dtype)[0]
    # the tolerance is tighter than the bias: a path that dropped it would fail
    no_bias = y_want - layer.bias.detach().double()
    tol = DTYPE_TOL[dtype] * y_want.abs().mean().item()
    assert (no_bias - y_want).abs().max() > 2 * tol


def test_dropout_gradients_match_masked_reference():
    layer = make(dropout=0.3)
    x = torch.randn(6, 40)
    gy = torch.randn(6, 24)
    torch.manual_seed(1)
    y, gx, gA, gB = grads(layer, x, gy)
    torch.manual_seed(1)
    mask = torch.empty(6, 40).bernoulli_(0.7).div_(0.7)   # the same draw the layer makes
    xr = x.clone().requires_grad_(True)
    A = layer.lora_A.detach().clone().requires_grad_(True)
    B = layer.lora_B.detach().clone().requires_grad_(True)
    yr = xr @ layer.weight.t() + layer.bias + ((xr * mask) @ A.t()) @ B.t() * layer.scale
    yr.backward(gy)
    for got, want in [(y, yr), (gx, xr.grad), (gA, A.grad), (gB, B.grad)]:
        torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)
    layer.eval()
    torch.testing.assert_close(layer(x), reference_lora(x, layer.weight, layer.bias, layer.lora_A,
                                                        layer.lora_B, layer.scale))


def test_only_lora_params_train_and_weight_is_shared():
    lin = nn.Linear(8, 6)
    layer = core.CELoRALinear.from_linear(lin, core.CELoRAConfig(r=2))
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    assert layer.weight.data_ptr() == lin.weight.data_ptr()
    assert torch.count_nonzero(layer.lora_B) == 0
