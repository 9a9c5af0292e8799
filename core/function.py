"""The autograd Function of a CE-LoRA linear layer: one call per component.

Each component runs inside a ``record_function`` scope named as in the
brief's table, so a profiler can attribute FLOPs and memory to it.
"""
from __future__ import annotations

import torch
from torch.profiler import record_function

from core import components as C


class CELoRAFunction(torch.autograd.Function):
    """y = x W0ᵀ + b + s·(x_d Aᵀ) Bᵀ with a decomposed backward.

    Inputs: x2 (N, n), A (r, n), B (m, r), the owning layer (holds the frozen
    W0, bias, scale and the CE-LoRA state) and the dropout mask scale (N, n)
    or None. W0 and the bias are frozen, so they get no gradient.
    """

    @staticmethod
    def forward(ctx, x2, A, B, layer, mask_scale):
        xd = x2 if mask_scale is None else x2 * mask_scale
        with record_function("fwd.frozen"):
            y = C.fwd_frozen(x2, layer.weight, layer.bias)
        with record_function("fwd.lora"):
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

        # G_h = s·G_y B, shared by G_A and the LoRA part of G_x.
        if need_x or need_A:
            with record_function("bwd.grad_h"):
                g_h = C.grad_h(gy, B, layer.scale)
        # G_B = s·G_yᵀ h: exact.
        if need_B:
            with record_function("bwd.grad_B"):
                g_B = C.grad_B(gy, h, layer.scale)
        # G_A = G_hᵀ x_d: exact.
        if need_A:
            with record_function("bwd.grad_A"):
                g_A = C.grad_A(g_h, xd)
        # G_x = G_y W0 (dense, or double-LoRA + AMM) + G_h A (exact).
        if need_x:
            if layer.refresh_due():
                with record_function("selection"):
                    layer.refresh(gy)
            with record_function("bwd.grad_x_frozen"):
                g_x = layer.grad_x_frozen(gy)
            with record_function("bwd.grad_x_lora"):
                g_x = C.grad_x_lora(g_x, g_h, A, mask_scale)
        return g_x, g_A, g_B, None, None
