"""Analytic FLOPs of each component, 2·m·n·k per matmul (torch FlopCounterMode's convention).

N tokens, m output features, n input features, r LoRA rank, k kept features,
r0 SVD rank. Element-wise work (bias, scale, norms, top-k, gathers) counts 0.
Zero columns of padded operands are executed, so they count (core.components: ALIGN, SKINNY_MULTIPLE).
"""
from __future__ import annotations

from core.components import fused_layout, skinny_width
from core.config import GRAD_X_FORMS
from core.scopes import COMPONENTS as SCOPE_COMPONENTS
from core.scopes import FWD_FROZEN, FWD_LORA, GRAD_A, GRAD_B, GRAD_H, GRAD_X_FROZEN, GRAD_X_LORA, SELECTION

CONVENTION = "2·m·n·k per matmul (FlopCounterMode); element-wise ops, norms, top-k, gathers count 0"

COMPONENTS = SCOPE_COMPONENTS      # one layer's forward+backward, in order (core.scopes)


def layer_flops(N: int, m: int, n: int, r: int, k: int | None = None, r0: int = 0,
                cache_rows: bool = False, fused: bool = True, form: str = "split",
                k_multiple: int = 1) -> dict[str, int]:
    """FLOPs of one forward+backward of a LoRA layer, per component (profiler scope), plus "selection".

    k None or k == m is the dense G_y·W0 (always the split form); otherwise the AMM form,
    2Nkn + 2N·r0·(m+n) in lean and cached mode alike (lean reads G_y·C with C = B0 with its
    kept rows zeroed, so it no longer subtracts G_y[:, I] B0[I, :]).

    form "split" (core.config.GRAD_X_FORM's CPU default):
      fused (what the Function does): the skinny product G_y·C is computed in one product
      with G_y·s·B, padded with zero columns to w = skinny_width(r, r0), and counted in
      "bwd.grad_h" as 2N·m·w; unfused, G_y·C (2N·m·r0) is in "bwd.grad_x_frozen" and
      grad_h is 2N·m·r. "bwd.grad_x_lora" is G_h·A, 2N·r·n.
    form "fused" (sampled layers only; ``fused`` is then implied): "bwd.grad_h" is G_y [s·B | 0 | C | 0],
      2N·m·w (r0 = 0: w = r rounded up to 8); "bwd.grad_x_frozen" is the one GEMM
      [G_h | 0 | T | 0 | G_y[:, I] | 0] · [A; 0; A0; 0; rows; 0], 2N·K·n with K = w + k rounded up to
      lcm(8, k_multiple) (core.components.fused_layout; k_multiple: the layer's, ``CELoRALinear.k_multiple``);
      "bwd.grad_x_lora" is 0 (its product is inside that GEMM).
    "selection" is one refresh: 2·k·r0·n when the residual rows are cached, else 0.

    Raises:
        ValueError: form is not "split" or "fused".
    """
    if form not in GRAD_X_FORMS:
        raise ValueError(f"layer_flops form={form!r} is invalid; allowed: " + " or ".join(GRAD_X_FORMS))
    dense = k is None or k == m
    double = not dense and r0 > 0
    out = {
        FWD_FROZEN: 2 * N * m * n,
        FWD_LORA: 2 * N * r * (n + m),
        GRAD_H: 2 * N * m * (skinny_width(r, r0) if fused and double else r),
        GRAD_B: 2 * N * m * r,
        GRAD_A: 2 * N * r * n,
        GRAD_X_LORA: 2 * N * r * n,
        GRAD_X_FROZEN: 2 * N * m * n if dense else
        2 * N * k * n + 2 * N * r0 * n + (0 if fused else 2 * N * m * r0),
        SELECTION: 0 if dense or not (cache_rows and r0) else 2 * k * r0 * n,
    }
    if form == "fused" and not dense:
        lay = fused_layout(k, r, r0, k_multiple)
        out.update({GRAD_H: 2 * N * m * lay.w, GRAD_X_FROZEN: 2 * N * lay.K * n,
                    GRAD_X_LORA: 0})
    return out


def module_flops(layer, N: int, form: str | None = None) -> dict[str, int]:
    """layer_flops of a CELoRALinear for N tokens as it runs now: its k, r0, cache mode, k multiple
    and (form None) its resolved ``grad_x_form``; pass form to get the other form's counts."""
    return layer_flops(N, layer.out_features, layer.in_features, layer.config.r,
                       None if layer.dense else layer.k, layer.r0, layer.config.cache_rows,
                       form=form or layer.grad_x_form, k_multiple=layer.k_multiple)


def frozen_share(N: int, m: int, n: int, r: int) -> float:
    """Share of the dense G_y·W0 in a dense LoRA layer's forward+backward FLOPs: 2mn / (4mn + 6r(m+n))."""
    f = layer_flops(N, m, n, r)
    return f[GRAD_X_FROZEN] / sum(v for c, v in f.items() if c != SELECTION)
