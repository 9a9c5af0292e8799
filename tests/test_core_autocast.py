"""Autocast with fp32 weights, as transformers.Trainer(bf16=True) runs a model: CELoRALinear (lean and
cached, r0 = 0 and 14, both G_x forms) and LoRALinear against the same layer run in fp32 on the same
index and weights; dtypes as nn.Linear under autocast gives them; k from the compute dtype."""
import pytest
import torch
from torch import nn

import core
from core import config as config_mod
from core import selection
from tests.conftest import TOL

M, N_IN, R, R0 = 64, 48, 14, 14


def low_rank_linear(m=M, n=N_IN):
    """nn.Linear whose W0 has a strong rank-R0 part, as trained weights do: the double-LoRA term
    G_y[:, Ī] B0[Ī] A0 is then a visible share of G_x (on i.i.d. weights it hides under bf16 rounding)."""
    lin = nn.Linear(n, m)
    with torch.no_grad():
        lin.weight.copy_(3 * torch.randn(m, R0) @ torch.randn(R0, n) / (R0 * n) ** 0.5
                         + 0.3 * torch.randn(m, n) / n ** 0.5)
        lin.bias.mul_(3)                          # visible beside x W0ᵀ: a dropped bias must fail
    return lin


def pair(kind, cache_rows=False, r0=0, form=None):
    """Two layers with the same W0, bias, A and B (B non-zero): (fp32 reference, the one run under autocast)."""
    lin = low_rank_linear()
    if kind == "lora":
        def make():
            return core.LoRALinear.from_linear(lin, r=R, alpha=2.0 * R)
    else:
        cfg = core.CELoRAConfig(r=R, alpha=2.0 * R, keep_ratio=0.5, svd_rank=r0, cache_rows=cache_rows,
                                grad_x_form=form)

        def make():
            return core.CELoRALinear.from_linear(lin, cfg)
    ref, amp = make(), make()
    with torch.no_grad():
        ref.lora_B.normal_()
        amp.lora_B.copy_(ref.lora_B)
        amp.lora_A.copy_(ref.lora_A)
    return ref, amp


def run(layer, x, gy, dtype=None):
    """(y, G_x, G_A, G_B) of one forward+backward, under autocast to dtype when given."""
    x = x.clone().requires_grad_(True)
    layer.lora_A.grad = layer.lora_B.grad = None
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        y = layer(x)
    y.backward(gy.to(y.dtype))
    return y, x.grad, layer.lora_A.grad, layer.lora_B.grad


def droppable_terms(layer, x, gy):
    """What a broken path could drop, in fp32, by output: the bias of y; the LoRA part s·G_y B A of G_x
    and, with double-LoRA, its part G_y[:, Ī] B0[Ī] A0. Written here from the formulas."""
    G = gy.reshape(-1, layer.out_features)
    A, B = layer.lora_A.detach(), layer.lora_B.detach()
    out = {"y": [layer.bias.detach().expand(x.reshape(-1, layer.in_features).shape[0], -1)],
           "G_x": [layer.scale * (G @ B) @ A]}
    if not layer.dense and layer.B0 is not None:
        rest = torch.ones(layer.out_features, dtype=torch.bool)
        rest[layer.idx] = False                                          # Ī
        out["G_x"].append(G[:, rest] @ layer.B0[rest] @ layer.A0)
    return out


CASES = [("lora", False, 0, None)] + [("ce", c, r0, f) for f in ("split", "fused") for c in (False, True)
                                      for r0 in (0, R0)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind,cache_rows,r0,form", CASES)
def test_autocast_matches_the_fp32_layer(dtype, kind, cache_rows, r0, form):
    ref, amp = pair(kind, cache_rows, r0, form)
    x = torch.randn(2, 8, N_IN)
    gy = torch.randn(2, 8, M) * torch.exp(torch.randn(M))   # per-feature scales: a clear top-k, Ī not negligible
    want = run(ref, x, gy)
    got = run(amp, x, gy, dtype)
    if kind == "ce":
        assert torch.equal(amp.idx, ref.idx) and amp.grad_x_form == form and amp.r0 == r0
    # as nn.Linear under autocast: y in the autocast dtype, G_x in x's dtype, fp32 params with fp32 grads
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    assert got[2].dtype == got[3].dtype == amp.lora_A.dtype == amp.lora_B.dtype == amp.weight.dtype == torch.float32
    # TOL[dtype] with atol relative to each output's mean |value| (the outputs span 1e-2 to 1e2 here)
    atol, rtol = TOL[dtype]
    tols = {}
    for name, g, w in zip(("y", "G_x", "G_A", "G_B"), got, want):
        tols[name] = atol * w.abs().mean().item()
        torch.testing.assert_close(g.float(), w, atol=tols[name], rtol=rtol, msg=name)
    # the tolerance can fail: without any one of these terms the fp32 output would be out of it
    for name, terms in droppable_terms(ref, x, gy).items():
        w = want[0 if name == "y" else 1].reshape(terms[0].shape)
        for term in terms:
            assert (term.abs() > tols[name] + rtol * w.abs()).any(), name


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("make", ["linear", "lora", "celora"])
def test_output_and_grad_dtypes_follow_plain_linear(x_dtype, make):
    lin = nn.Linear(N_IN, M)
    if make == "lora":
        lin = core.LoRALinear.from_linear(lin, r=4)
    elif make == "celora":
        lin = core.CELoRALinear.from_linear(lin, core.CELoRAConfig(r=4, keep_ratio=0.5, svd_rank=3))
    x = torch.randn(5, N_IN, dtype=x_dtype, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin(x)
        y.float().square().sum().backward()    # backward inside the autocast region works too
    assert y.dtype == torch.bfloat16 and x.grad.dtype == x_dtype           # what nn.Linear gives
    params = [p for p in lin.parameters() if p.requires_grad]
    assert params and all(p.dtype == p.grad.dtype == torch.float32 for p in params)


@pytest.mark.parametrize("cache_rows", [False, True])
@pytest.mark.parametrize("form", ["split", "fused"])
def test_w0_is_not_saved_for_the_backward(cache_rows, form):
    # plain autocast saves the bf16 copy of W0 for G_x; the Function casts it again in the backward instead
    layer = core.CELoRALinear.from_linear(nn.Linear(40, 72), core.CELoRAConfig(
        r=4, keep_ratio=0.5, svd_rank=3, cache_rows=cache_rows, grad_x_form=form))
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    x = torch.randn(9, 40, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert (72, 40) not in shapes and (40, 72) not in shapes
    y.backward(torch.randn_like(y))
    assert layer.lora_A.grad is not None and x.grad.dtype == torch.float32


def test_k_is_resolved_from_the_compute_dtype(monkeypatch):
    # pretend this CPU wants k a multiple of 8 for 16-bit products, as CUDA wants 64
    seen = []
    real = config_mod.k_multiple_for

    def multiple(device="cpu", dtype=None):
        seen.append(dtype)
        return 8 if dtype in (torch.bfloat16, torch.float16) else real(device, dtype)

    monkeypatch.setattr(config_mod, "k_multiple_for", multiple)
    layer = core.CELoRALinear.from_linear(nn.Linear(12, 50), core.CELoRAConfig(r=2, keep_ratio=0.5, svd_rank=2))
    x, gy = torch.randn(6, 12), torch.randn(6, 50)
    run(layer, x, gy)
    assert layer.k == 25 == layer.idx.numel() and layer.refresh_count == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x.clone().requires_grad_())
    assert layer.compute_dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    assert layer.k == 32 and layer.k_multiple == 8 and torch.bfloat16 in seen
    assert layer.refresh_due()                                        # k changed: reselect
    y.backward(gy.bfloat16())
    assert layer.idx.numel() == 32 and layer.refresh_count == 2 and layer.fused_layout().K % 8 == 0
    assert "k=32" in repr(layer)
    run(layer, x, gy)                                                 # fp32 again: k back to 25, reselect
    assert layer.compute_dtype == torch.float32 and layer.idx.numel() == 25 and layer.refresh_count == 3


def test_cuda_k_multiple_for_the_autocast_dtype():
    # fp32 weights on CUDA under bf16 autocast run bf16 GEMMs: k from bf16 (64), not from the weights (16)
    cfg = core.CELoRAConfig(keep_ratio=0.65)
    assert cfg.kept(14336, torch.device("cuda", 0), torch.bfloat16) == 9344
    assert cfg.kept(14336, torch.device("cuda", 0), torch.float32) == 9328
    assert cfg.multiple_for("cuda", torch.float16) == 64 and cfg.multiple_for("cuda:1", torch.float32) == 16
    assert core.CELoRAConfig(k_multiple=8).multiple_for("cuda", torch.bfloat16) == 8


def test_selection_scores_are_fp32_for_16_bit_gradients(monkeypatch):
    gy = (torch.randn(300, 70) * torch.exp(torch.randn(70))).bfloat16()
    want = gy.double().square().sum(0)
    got = selection.column_sq_norms(gy)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)        # bf16 squares would be ~1e-3 off
    monkeypatch.setattr(selection, "SQ_CHUNK", 70 * 7)                       # 7 rows per block, a ragged last one
    torch.testing.assert_close(selection.column_sq_norms(gy).double(), want, rtol=1e-6, atol=0)
