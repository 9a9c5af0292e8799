"""One plain function per forward/backward component of a LoRA linear layer.

Row convention, tokens flattened to N rows:

    y = x W0ᵀ + b + s · (x_d Aᵀ) Bᵀ     x: (N, n)  W0: (m, n)  A: (r, n)  B: (m, r)

The autograd Function calls these in order; suites time and count each alone.
FLOPs use the 2·m·n·k convention and are written next to each function.
"""
from __future__ import annotations

import torch
from torch import Tensor

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


def gather_columns(gy: Tensor, idx: Tensor) -> Tensor:
    """G_y[:, I]: (N, m) -> (N, k). torch.gather with a broadcast index runs ~2× faster
    on CPU than index_select along dim 1 for wide G_y."""
    return torch.gather(gy, 1, idx.expand(gy.shape[0], idx.numel()))


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
