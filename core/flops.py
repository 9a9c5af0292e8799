"""Analytic FLOPs of each component, 2·m·n·k per matmul (torch FlopCounterMode's convention).

N tokens, m output features, n input features, r LoRA rank, k kept features,
r0 SVD rank. Element-wise work (bias, scale, norms, top-k, gathers) counts 0.
"""
from __future__ import annotations

from core.components import skinny_width

CONVENTION = "2·m·n·k per matmul (FlopCounterMode); element-wise ops, norms, top-k, gathers count 0"

COMPONENTS = ("fwd.frozen", "fwd.lora", "bwd.grad_h", "bwd.grad_B", "bwd.grad_A",
              "bwd.grad_x_lora", "bwd.grad_x_frozen")


def layer_flops(N: int, m: int, n: int, r: int, k: int | None = None, r0: int = 0,
                cache_rows: bool = False, fused: bool = True) -> dict[str, int]:
    """FLOPs of one forward+backward of a LoRA layer, per component, plus "selection".

    k None or k == m is the dense G_y·W0; otherwise the AMM form, 2Nkn + 2N·r0·(m+n)
    in lean and cached mode alike (lean reads G_y·C with C = B0 with its kept rows
    zeroed, so it no longer subtracts G_y[:, I] B0[I, :]).

    fused (what the Function does): the skinny product G_y·C is computed in one product
    with G_y·s·B, padded with zero columns to w = skinny_width(r, r0) (a multiple of 16),
    and counted in "bwd.grad_h" as 2N·m·w; unfused, G_y·C (2N·m·r0) is in
    "bwd.grad_x_frozen" and grad_h is 2N·m·r. "selection" is one refresh: 2·k·r0·n when the residual rows
    are cached, else 0.
    """
    dense = k is None or k == m
    double = not dense and r0 > 0
    frozen = 2 * N * m * n if dense else 2 * N * k * n + 2 * N * r0 * n + (0 if fused else 2 * N * m * r0)
    return {
        "fwd.frozen": 2 * N * m * n,
        "fwd.lora": 2 * N * r * (n + m),
        "bwd.grad_h": 2 * N * m * (skinny_width(r, r0) if fused and double else r),
        "bwd.grad_B": 2 * N * m * r,
        "bwd.grad_A": 2 * N * r * n,
        "bwd.grad_x_lora": 2 * N * r * n,
        "bwd.grad_x_frozen": frozen,
        "selection": 0 if dense or not (cache_rows and r0) else 2 * k * r0 * n,
    }


def frozen_share(N: int, m: int, n: int, r: int) -> float:
    """Share of the dense G_y·W0 in a dense LoRA layer's forward+backward FLOPs: 2mn / (4mn + 6r(m+n))."""
    f = layer_flops(N, m, n, r)
    return f["bwd.grad_x_frozen"] / sum(v for c, v in f.items() if c != "selection")
