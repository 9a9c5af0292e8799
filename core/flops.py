"""Analytic FLOPs of each component, 2·m·n·k per matmul (torch FlopCounterMode's convention).

N tokens, m output features, n input features, r LoRA rank, k kept features,
r0 SVD rank. Element-wise work (bias, scale, norms, top-k, gathers) counts 0.
"""
from __future__ import annotations

CONVENTION = "2·m·n·k per matmul (FlopCounterMode); element-wise ops, norms, top-k, gathers count 0"

COMPONENTS = ("fwd.frozen", "fwd.lora", "bwd.grad_h", "bwd.grad_B", "bwd.grad_A",
              "bwd.grad_x_lora", "bwd.grad_x_frozen")


def layer_flops(N: int, m: int, n: int, r: int, k: int | None = None, r0: int = 0,
                cache_rows: bool = False) -> dict[str, int]:
    """FLOPs of one forward+backward of a LoRA layer, per component, plus "selection".

    k None or k == m is the dense G_y·W0; otherwise the AMM form:
    cached 2Nkn + 2N·r0·(m+n), lean 2Nkn + 2N·r0·(m+k+n). "selection" is one
    refresh: 2·k·r0·n when the residual rows are cached, else 0.
    """
    dense = k is None or k == m
    if dense:
        frozen = 2 * N * m * n
    else:
        frozen = 2 * N * k * n
        if r0:
            frozen += 2 * N * r0 * (m + n) + (0 if cache_rows else 2 * N * k * r0)
    return {
        "fwd.frozen": 2 * N * m * n,
        "fwd.lora": 2 * N * r * (n + m),
        "bwd.grad_h": 2 * N * m * r,
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
