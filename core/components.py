"""One plain function per forward/backward component of a LoRA linear layer.

Row convention, tokens flattened to N rows:

    y = x W0ᵀ + b + s · (x_d Aᵀ) Bᵀ     x: (N, n)  W0: (m, n)  A: (r, n)  B: (m, r)

The autograd Function calls these in order; suites time and count each alone.
FLOPs use the 2·m·n·k convention and are written next to each function.

With double-LoRA the Function reads G_y once for both skinny products: grad_h_fused returns
G_h and T = G_y·C (bwd.grad_h scope), and grad_x_frozen_amm uses T (bwd.grad_x_frozen scope).
grad_x_frozen_lean / _cached are the unfused forms, kept as the reference and the baseline.
"""
from __future__ import annotations

import torch
from torch import Tensor

from core.gather import gather_columns  # noqa: F401  (G_y[:, I], per device)

# ---- forward ---------------------------------------------------------------

def fwd_frozen(x: Tensor, W0: Tensor, bias: Tensor | None) -> Tensor:
    """x W0ᵀ + b: (N, n) @ (n, m) -> (N, m).  2·N·m·n FLOPs."""
    if bias is None:
        return torch.mm(x, W0.t())
    return torch.addmm(bias, x, W0.t())


def fwd_lora(y: Tensor, xd: Tensor, A: Tensor, B: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Adds s·(x_d Aᵀ) Bᵀ into y in place; returns (y, h) with h = x_d Aᵀ: (N, r).

    2·N·r·(n + m) FLOPs. The scale is folded into the small (N, r) product
    instead of a pass over the (N, m) output.
    """
    h = torch.mm(xd, A.t())                       # (N, n) @ (n, r) -> (N, r)
    y.addmm_(h, B.t(), alpha=scale)               # (N, r) @ (r, m) -> (N, m)
    return y, h


# ---- backward --------------------------------------------------------------

def grad_h(gy: Tensor, B: Tensor, scale: float) -> Tensor:
    """G_h = s · G_y B: (N, m) @ (m, r) -> (N, r).  2·N·m·r FLOPs."""
    return torch.mm(gy, B).mul_(scale)


# The fused skinny operand's width r + r0 is padded with zero columns to a multiple of this.
# CPU (MKL, this 2-core AMD EPYC, fp32, N=1024, best of 15 interleaved rounds): G_y (1024, 2048)
# times an (m, w) operand took 0.49 ms at w=16, 1.11 ms at 14, 4.08 ms at 30 and 0.80–0.88 ms at 32:
# unpadded, one 30-wide product is slower than the 16 + 14 pair (1.59 ms); padded to 32 it is ~2x faster.
# On CUDA 32 columns keep the operand's rows 16-byte aligned for cuBLAS (30 bf16 = 60 bytes would not).
SKINNY_MULTIPLE = 16


def skinny_width(r: int, r0: int) -> int:
    """Columns of the fused operand [s·B | C | 0]: r + r0 rounded up to SKINNY_MULTIPLE (r0 > 0)."""
    return -(-(r + r0) // SKINNY_MULTIPLE) * SKINNY_MULTIPLE


def skinny(gy: Tensor, C: Tensor) -> Tensor:
    """T = G_y C alone: (N, m) @ (m, r0) -> (N, r0), C padded with zero columns to a multiple of
    SKINNY_MULTIPLE (MKL runs 16 columns 2x faster than 14). 2·N·m·r0 FLOPs plus the padding's."""
    m, r0 = C.shape
    pad = -(-r0 // SKINNY_MULTIPLE) * SKINNY_MULTIPLE - r0
    if pad == 0:
        return torch.mm(gy, C)
    return torch.mm(gy, torch.cat((C, C.new_zeros(m, pad)), 1))[:, :r0]   # (N, r0 + pad) -> (N, r0)


def grad_h_fused(gy: Tensor, B: Tensor, scale: float, C: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """(G_h, T) from one read of G_y: G_y [s·B | C | 0] = [s·G_y B | G_y C | 0], split.

    C (m, r0) is the double-LoRA's skinny operand: B0 (cached rows, T = G_y B0) or B0 with
    its kept rows I zeroed (lean, T = G_y[:, Ī] B0[Ī, :]); None gives (grad_h, None).
    The operand is padded with zero columns to w = skinny_width(r, r0) (see SKINNY_MULTIPLE).
    2·N·m·w FLOPs (the zero columns are executed, so counted), all in the bwd.grad_h scope:
    the scope of every product that reads all of G_y against a skinny right factor.
    Both outputs are column views of one (N, w) result.
    """
    if C is None:
        return grad_h(gy, B, scale), None
    m, r = B.shape
    r0 = C.shape[1]
    pad = skinny_width(r, r0) - r - r0
    parts = (B * scale, C) if pad == 0 else (B * scale, C, B.new_zeros(m, pad))
    out = torch.mm(gy, torch.cat(parts, 1))           # (N, m) @ (m, w) -> (N, w)
    return out[:, :r], out[:, r:r + r0]                # (N, r), (N, r0)


def grad_B(gy: Tensor, h: Tensor, scale: float) -> Tensor:
    """G_B = s · G_yᵀ h: (m, r).  2·N·m·r FLOPs.

    Computed as (hᵀ G_y)ᵀ: a (r, N) @ (N, m) product whose long side is the
    output, which CPU BLAS runs several times faster than the skinny
    transposed G_yᵀ h. The result is a transposed view of an (r, m) tensor.
    """
    return torch.mm(h.t(), gy).mul_(scale).t()


def grad_A(g_h: Tensor, xd: Tensor) -> Tensor:
    """G_A = G_hᵀ x_d: (r, N) @ (N, n) -> (r, n).  2·N·r·n FLOPs."""
    return torch.mm(g_h.t(), xd)


def grad_x_lora(gx: Tensor, g_h: Tensor, A: Tensor, mask_scale: Tensor | None = None) -> Tensor:
    """Adds G_h A (through the dropout mask, if any) into gx in place.

    (N, r) @ (r, n) -> (N, n).  2·N·r·n FLOPs.
    """
    if mask_scale is None:
        return gx.addmm_(g_h, A)
    return gx.add_(torch.mm(g_h, A).mul_(mask_scale))


def grad_x_frozen_dense(gy: Tensor, W0: Tensor) -> Tensor:
    """G_y W0: (N, m) @ (m, n) -> (N, n).  2·N·m·n FLOPs."""
    return torch.mm(gy, W0)


def grad_x_frozen_amm(gy: Tensor, idx: Tensor, rows: Tensor, T: Tensor | None,
                      A0: Tensor | None) -> Tensor:
    """G_y[:, I] rows + T A0: the frozen part of G_x once T (from grad_h_fused) is known.

    rows = R[I, :] with T = G_y B0 (cached), or W0[I, :] with T = G_y[:, Ī] B0[Ī, :] (lean);
    both are G_y[:, I] W0[I, :] + G_y[:, Ī] B0[Ī, :] A0. idx (k,), rows (k, n), T (N, r0).
    2·N·k·n + 2·N·r0·n FLOPs.
    """
    gx = torch.mm(gather_columns(gy, idx), rows)  # (N, m) -> (N, k) @ (k, n) -> (N, n)
    if T is not None:
        gx.addmm_(T, A0)                          # (N, r0) @ (r0, n) -> (N, n)
    return gx


# ---- the unfused forms: the reference for grad_h_fused + grad_x_frozen_amm, and a timing baseline

def grad_x_frozen_cached(gy: Tensor, idx: Tensor, rows: Tensor,
                         B0: Tensor | None, A0: Tensor | None) -> Tensor:
    """G_y[:, I] R[I, :] + (G_y B0) A0, with R[I, :] cached contiguous.

    idx: (k,) sorted; rows: (k, n). 2·N·k·n + 2·N·r0·(m + n) FLOPs.
    """
    gs = gather_columns(gy, idx)                  # (N, m) -> (N, k)
    gx = torch.mm(gs, rows)                       # (N, k) @ (k, n) -> (N, n)
    if B0 is not None:
        gx.addmm_(torch.mm(gy, B0), A0)           # (N, m)@(m, r0) -> (N, r0) @ (r0, n)
    return gx


def grad_x_frozen_lean(gy: Tensor, idx: Tensor, W0: Tensor,
                       B0: Tensor | None, A0: Tensor | None) -> Tensor:
    """G_y[:, I] W0[I, :] + (G_y B0 − G_y[:, I] B0[I, :]) A0, nothing cached but I.

    Algebraically G_y[:, I] W0[I, :] + G_y[:, Ī] B0[Ī, :] A0 (Ī the complement),
    i.e. the same product as the cached form. W0[I, :] is a transient buffer.
    2·N·k·n + 2·N·r0·(m + k + n) FLOPs.
    """
    gs = gather_columns(gy, idx)                  # (N, m) -> (N, k)
    gx = torch.mm(gs, W0.index_select(0, idx))    # (N, k) @ (k, n) -> (N, n)
    if B0 is not None:
        t = torch.mm(gy, B0)                      # (N, m) @ (m, r0) -> (N, r0)
        t.sub_(torch.mm(gs, B0.index_select(0, idx)))  # (N, k) @ (k, r0)
        gx.addmm_(t, A0)                          # (N, r0) @ (r0, n) -> (N, n)
    return gx
