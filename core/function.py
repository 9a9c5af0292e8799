"""The autograd Function of a CE-LoRA linear layer: one call per component.

Each component runs inside a ``record_function`` scope named as in the
brief's table, so a profiler can attribute FLOPs and memory to it. Scopes are
opened only while a profiler is active (``scope``): without one, a
record_function costs two dispatcher calls each, 7 per layer per step.

Scope rule for the fused skinny product: ``bwd.grad_h`` holds every product
that reads all of G_y against a skinny right factor, i.e. G_y [s·B | 0 | C | 0]
(C = B0, or B0 with the kept rows zeroed, see components.grad_h_fused).
Split form: ``bwd.grad_x_frozen`` holds the gather, the kept-column product and
T·A0, ``bwd.grad_x_lora`` holds G_h·A. Fused form (``CELoRALinear.grad_x_form``):
``bwd.grad_h`` writes G_y [s·B | 0 | C | 0] into the left operand, ``bwd.grad_x_frozen``
holds the gather into it, the right operand and the one GEMM, and there is no
``bwd.grad_x_lora`` work (core.components' docstring has the table).

Under autocast (``dtype`` given) the inputs x2, A, B arrive cast to dtype; the frozen
tensors are cast here, and both passes run with autocast disabled so that every
product runs in dtype as written.
"""
from __future__ import annotations

import contextlib

import torch
from torch.profiler import record_function

from core import components as C
from core.scopes import FWD_FROZEN, FWD_LORA, GRAD_A, GRAD_B, GRAD_H, GRAD_X_FROZEN, GRAD_X_LORA, SELECTION

_NO_SCOPE = contextlib.nullcontext()
_profiler_enabled = torch._C._autograd._profiler_enabled   # the C++ profiler state, any frontend


def scope(name: str):
    """record_function(name) under an active profiler, else a shared no-op context."""
    return record_function(name) if _profiler_enabled() else _NO_SCOPE


def _autocast_off(device_type: str | None):
    """Autocast disabled on device_type (the forward ran under autocast), else a shared no-op context."""
    return _NO_SCOPE if device_type is None else torch.autocast(device_type, enabled=False)


class CELoRAFunction(torch.autograd.Function):
    """y = x W0ᵀ + b + s·(x_d Aᵀ) Bᵀ with a decomposed backward.

    Inputs: x2 (N, n), A (r, n), B (m, r), the owning layer (holds the frozen
    W0, bias, scale and the CE-LoRA state), the dropout mask scale (N, n) or None,
    and the autocast dtype or None (x2, A, B are already in it; W0 and the bias
    are cast here, in the forward and again in the backward, never saved).
    W0 and the bias are frozen, so they get no gradient.
    """

    @staticmethod
    def forward(ctx, x2, A, B, layer, mask_scale, dtype):
        ctx.autocast = None if dtype is None else x2.device.type
        W0, bias = layer.weight, layer.bias
        with _autocast_off(ctx.autocast):
            if dtype is not None:
                W0, bias = W0.to(dtype), None if bias is None else bias.to(dtype)
            xd = x2 if mask_scale is None else x2 * mask_scale
            with scope(FWD_FROZEN):
                y = C.fwd_frozen(x2, W0, bias)
            with scope(FWD_LORA):
                y, h = C.fwd_lora(y, xd, A, B, layer.scale)
        ctx.layer = layer
        ctx.save_for_backward(xd, h, A, B, mask_scale)
        return y

    @staticmethod
    def backward(ctx, gy):
        xd, h, A, B, mask_scale = ctx.saved_tensors
        with _autocast_off(ctx.autocast):
            g_x, g_A, g_B = _backward(ctx.layer, gy.contiguous(), xd, h, A, B, mask_scale,
                                      *ctx.needs_input_grad[:3])
        return g_x, g_A, g_B, None, None, None


def _backward(layer, gy, xd, h, A, B, mask_scale, need_x, need_A, need_B):
    """(G_x, G_A, G_B) for G_y (N, m) in the form the layer runs (each None where not needed)."""
    g_x = g_A = g_B = None
    t = None
    # The index first: in lean mode the skinny operand depends on it.
    if need_x and layer.refresh_due():
        with scope(SELECTION):
            layer.refresh(gy)
    fused = need_x and layer.grad_x_form == "fused"
    # G_h = s·G_y B, shared by G_A and the LoRA part of G_x; with double-LoRA, T = G_y·C
    # in the same read of G_y. Fused form: both land in the left operand of the G_x GEMM.
    if fused:
        with scope(GRAD_H):
            left, g_h = layer.fused_grad_h(gy, B)
    elif need_x or need_A:
        with scope(GRAD_H):
            g_h, t = C.grad_h_fused(gy, B, layer.scale, layer.skinny_operand() if need_x else None)
    # G_B = s·G_yᵀ h: exact.
    if need_B:
        with scope(GRAD_B):
            g_B = C.grad_B(gy, h, layer.scale)
    # G_A = G_hᵀ x_d: exact.
    if need_A:
        with scope(GRAD_A):
            g_A = C.grad_A(g_h, xd)
    # G_x = G_y W0 (dense, or double-LoRA + AMM) + G_h A (exact): one GEMM, or two passes.
    if fused:
        with scope(GRAD_X_FROZEN):
            g_x = layer.grad_x_fused(gy, left, A)
    elif need_x:
        with scope(GRAD_X_FROZEN):
            g_x = layer.grad_x_frozen(gy, t)
        with scope(GRAD_X_LORA):
            g_x = C.grad_x_lora(g_x, g_h, A, mask_scale)
    return g_x, g_A, g_B
