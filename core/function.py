"""The autograd Function of a CE-LoRA linear layer: one call per component.

Each component runs inside a ``record_function`` scope named as in the
brief's table, so a profiler can attribute FLOPs and memory to it. Scopes are
opened only while a profiler is active (``scope``): without one, a
record_function costs two dispatcher calls each, 7 per layer per step.

Scope rule for the fused skinny product: ``bwd.grad_h`` holds every product
that reads all of G_y against a skinny right factor, i.e. G_y [s·B | C]
(C = B0, or B0 with the kept rows zeroed, see components.grad_h_fused);
``bwd.grad_x_frozen`` holds the gather, the kept-column product and T·A0.
"""
from __future__ import annotations

import contextlib

import torch
from torch.profiler import record_function

from core import components as C

_NO_SCOPE = contextlib.nullcontext()
_profiler_enabled = torch._C._autograd._profiler_enabled   # the C++ profiler state, any frontend


def scope(name: str):
    """record_function(name) under an active profiler, else a shared no-op context."""
    return record_function(name) if _profiler_enabled() else _NO_SCOPE


class CELoRAFunction(torch.autograd.Function):
    """y = x W0ᵀ + b + s·(x_d Aᵀ) Bᵀ with a decomposed backward.

    Inputs: x2 (N, n), A (r, n), B (m, r), the owning layer (holds the frozen
    W0, bias, scale and the CE-LoRA state) and the dropout mask scale (N, n)
    or None. W0 and the bias are frozen, so they get no gradient.
    """

    @staticmethod
    def forward(ctx, x2, A, B, layer, mask_scale):
        xd = x2 if mask_scale is None else x2 * mask_scale
        with scope("fwd.frozen"):
            y = C.fwd_frozen(x2, layer.weight, layer.bias)
        with scope("fwd.lora"):
            y, h = C.fwd_lora(y, xd, A, B, layer.scale)
        ctx.layer = layer
        ctx.save_for_backward(xd, h, A, B, mask_scale)
        return y

    @staticmethod
    def backward(ctx, gy):
        xd, h, A, B, mask_scale = ctx.saved_tensors
        layer = ctx.layer
        need_x, need_A, need_B = ctx.needs_input_grad[:3]
        gy = gy.contiguous()                       # (N, m)
        g_x = g_A = g_B = None
        t = None
        # The index first: in lean mode the skinny operand depends on it.
        if need_x and layer.refresh_due():
            with scope("selection"):
                layer.refresh(gy)
        # G_h = s·G_y B, shared by G_A and the LoRA part of G_x; with double-LoRA, T = G_y·C
        # in the same read of G_y.
        if need_x or need_A:
            with scope("bwd.grad_h"):
                g_h, t = C.grad_h_fused(gy, B, layer.scale, layer.skinny_operand() if need_x else None)
        # G_B = s·G_yᵀ h: exact.
        if need_B:
            with scope("bwd.grad_B"):
                g_B = C.grad_B(gy, h, layer.scale)
        # G_A = G_hᵀ x_d: exact.
        if need_A:
            with scope("bwd.grad_A"):
                g_A = C.grad_A(g_h, xd)
        # G_x = G_y W0 (dense, or double-LoRA + AMM) + G_h A (exact).
        if need_x:
            with scope("bwd.grad_x_frozen"):
                g_x = layer.grad_x_frozen(gy, t)
            with scope("bwd.grad_x_lora"):
                g_x = C.grad_x_lora(g_x, g_h, A, mask_scale)
        return g_x, g_A, g_B, None, None
