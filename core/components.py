"""One plain function per forward/backward component of a LoRA linear layer.

Row convention, tokens flattened to N rows:

    y = x W0ᵀ + b + s · (x_d Aᵀ) Bᵀ     x: (N, n)  W0: (m, n)  A: (r, n)  B: (m, r)

The autograd Function calls these in order; suites time and count each alone.
FLOPs use the 2·m·n·k convention and are written next to each function.

A sampled layer (k < m) forms G_x in one of two forms (``CELoRAConfig.grad_x_form``, default per
device type in ``core.config.GRAD_X_FORM``); each product runs in the profiler scope named here:

    split   bwd.grad_h         G_y [s·B | 0 | C | 0] -> G_h, T          (grad_h_fused; r0 = 0: G_y B, grad_h)
            bwd.grad_x_frozen  G_y[:, I] (gather), G_y[:, I]·rows, + T·A0  (grad_x_frozen_amm)
            bwd.grad_x_lora    + G_h·A (through the dropout mask, if any)  (grad_x_lora)
    fused   bwd.grad_h         G_y [s·B | 0 | C | 0] written into the first w columns of the left operand
                               L = [G_h | 0 | T | 0 | G_y[:, I] | 0] (N, K)          (grad_h_fused with out=)
            bwd.grad_x_frozen  G_y[:, I] gathered into L (gather_into_left), the right operand
                               [A; 0; A0; 0; W0[I] or R[I]; 0] (K, n) (right_operand_lean, or the cached one
                               with put_lora_rows), and the one GEMM L·right (grad_x_fused)
            bwd.grad_x_lora    nothing: G_h·A is inside the fused GEMM

rows = R[I, :] with C = B0 (cached) or W0[I, :] with C = B0 with its kept rows zeroed (lean), see
grad_x_frozen_amm. Dense layers (k = m) run split: G_y·W0 (grad_x_frozen_dense) then + G_h·A; fusing
would add a pass over G_y. Dropout > 0 runs split too (G_h·A goes through the mask).

Alignment: every block of the fused operands starts at a column (left) or row (right) offset that is a
multiple of ALIGN = 8 elements (16 bytes in 16-bit dtypes, more in fp32/fp64), and their widths are
multiples of 8 too, so every operand a product reads (G_h, T, L, the gathered block) and every row of
them starts 16-byte aligned, as cuBLAS's vectorized kernels need, whatever r and r0. The zero columns
and rows of the padding are executed, and counted (core.flops.layer_flops).
grad_x_frozen_lean / _cached are the unfused forms, kept as the reference and the baseline.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from core.gather import gather_columns  # (G_y[:, I], per device)

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


# The fused skinny operand's width is padded with zero columns to a multiple of this (r0 > 0): BLAS
# kernels run a skinny product of odd width (r + r0 = 30) on a slower path than a multiple of 16; the
# zero columns cost at most 15 columns of work. The layer's timed components (`celora-bench run
# backward-breakdown`) include this product, so a change here shows in their G_y·W0 time.
SKINNY_MULTIPLE = 16
# Every block of a fused operand starts at a multiple of ALIGN elements: 16 bytes for 2-byte dtypes (cuBLAS's
# vectorized loads); r = r0 = 14 in bf16 would otherwise start T at byte 28.
ALIGN = 8


def round_up(x: int, a: int) -> int:
    """The smallest multiple of a that is >= x."""
    return -(-x // a) * a


class FusedLayout(NamedTuple):
    """Blocks of the fused operands, in columns of L (N, K) and rows of the right operand (K, n):

        [0, r)          G_h            | A
        [r, t_off)      0              | 0
        [t_off, +r0)    T              | A0
        [.., w)         0              | 0       (w: the width of G_y [s·B | 0 | C | 0])
        [w, w + k)      G_y[:, I]      | W0[I, :] (lean) or R[I, :] (cached)
        [w + k, K)      0              | 0

    The skinny block comes first: the product G_y [s·B | 0 | C | 0] writes all w columns (its zero
    columns included) with out=L[:, :w] (torch 2.13 CPU: in place, no copy), and the gathered block
    then starts aligned at w whatever k is; only L[:, w+k:] needs zeroing. The inner width K is
    w + k rounded up, so the GEMM's rows of L start 16-byte aligned too.
    """

    r: int
    t_off: int
    r0: int
    w: int
    k: int
    K: int


def skinny_offsets(r: int, r0: int) -> tuple[int, int]:
    """(t_off, w): T's first column in G_y [s·B | 0 | C | 0] and the operand's width.

    t_off = r rounded up to ALIGN; w = t_off (r0 = 0) or t_off + r0 rounded up to SKINNY_MULTIPLE.
    """
    t_off = round_up(r, ALIGN)
    return t_off, (t_off if r0 == 0 else round_up(t_off + r0, SKINNY_MULTIPLE))


def skinny_width(r: int, r0: int) -> int:
    """Columns w of the fused skinny operand [s·B | 0 | C | 0] (see skinny_offsets)."""
    return skinny_offsets(r, r0)[1]


def fused_layout(k: int, r: int, r0: int, multiple: int = 1) -> FusedLayout:
    """The fused operands' blocks for k kept features: the inner width K = w + k rounded up to
    lcm(ALIGN, multiple) (multiple: the layer's k multiple, 64 for 16-bit CUDA: cuBLAS's tile depth)."""
    t_off, w = skinny_offsets(r, r0)
    return FusedLayout(r, t_off, r0, w, k, round_up(w + k, math.lcm(ALIGN, multiple)))


def skinny(gy: Tensor, C: Tensor) -> Tensor:
    """T = G_y C alone: (N, m) @ (m, r0) -> (N, r0), C padded with zero columns to a multiple of
    SKINNY_MULTIPLE (MKL runs 16 columns 2x faster than 14). 2·N·m·r0 FLOPs plus the padding's."""
    m, r0 = C.shape
    pad = round_up(r0, SKINNY_MULTIPLE) - r0
    if pad == 0:
        return torch.mm(gy, C)
    return torch.mm(gy, torch.cat((C, C.new_zeros(m, pad)), 1))[:, :r0]   # (N, r0 + pad) -> (N, r0)


def skinny_operand(B: Tensor, scale: float, C: Tensor | None, w: int) -> Tensor:
    """[s·B | 0 | C | 0]: (m, w) in B's dtype, C at column t_off (C cast to B's dtype if it differs).

    B is detached: a backward product, never differentiated (suites call it with the parameter).
    One cat of the blocks (2.7 µs faster here than filling a zero (m, w) tensor through column views).
    """
    B = B.detach()
    m, r = B.shape
    r0 = 0 if C is None else C.shape[1]
    t_off = skinny_offsets(r, r0)[0]
    parts = [B * scale]                                     # (m, r)
    if t_off > r:
        parts.append(B.new_zeros(m, t_off - r))
    if C is not None:
        parts.append(C if C.dtype == B.dtype else C.to(B.dtype))   # (m, r0), cast under autocast
    if w > t_off + r0:
        parts.append(B.new_zeros(m, w - t_off - r0))
    return torch.cat(parts, 1)                              # (m, w)


def grad_h_fused(gy: Tensor, B: Tensor, scale: float, C: Tensor | None,
                 out: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """(G_h, T) from one read of G_y: G_y [s·B | 0 | C | 0] = [s·G_y B | 0 | G_y C | 0], split.

    C (m, r0) is the double-LoRA's skinny operand: B0 (cached rows, T = G_y B0) or B0 with
    its kept rows I zeroed (lean, T = G_y[:, Ī] B0[Ī, :]); None gives T = None.
    The operand is (m, w), w = skinny_width(r, r0): T starts at column t_off = r rounded up to 8
    and w is padded with zero columns (see SKINNY_MULTIPLE, ALIGN). 2·N·m·w FLOPs (the zero
    columns are executed, so counted), all in the bwd.grad_h scope: the scope of every product
    that reads all of G_y against a skinny right factor. Both outputs are column views of one
    (N, w) result: a fresh one, or out, e.g. the first w columns of the fused form's left operand.
    With C None and no out this is grad_h (2·N·m·r FLOPs, no padding).
    """
    if C is None and out is None:
        return grad_h(gy, B, scale), None
    r, r0 = B.shape[1], 0 if C is None else C.shape[1]
    t_off, w = skinny_offsets(r, r0)
    if w == r:                                                    # no C, no padding: grad_h into out
        return torch.mm(gy, B.detach(), out=out).mul_(scale), None
    res = torch.mm(gy, skinny_operand(B, scale, C, w), out=out)   # (N, m) @ (m, w) -> (N, w)
    return res[:, :r], (None if C is None else res[:, t_off:t_off + r0])   # (N, r), (N, r0)


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


# ---- the fused form: G_x in one GEMM [G_h | 0 | T | 0 | G_y[:, I] | 0] · [A; 0; A0; 0; rows; 0] ----

def fused_left(gy: Tensor, lay: FusedLayout) -> Tensor:
    """The left operand L, uninitialized: (N, K) in G_y's dtype. grad_h_fused (out=L[:, :w]) and
    gather_into_left fill every column of it."""
    return gy.new_empty(gy.shape[0], lay.K)


def gather_into_left(left: Tensor, gy: Tensor, idx: Tensor, lay: FusedLayout) -> Tensor:
    """Writes G_y[:, I] into L[:, w:w+k] (the gather's own copy, no second one) and zeros L[:, w+k:].

    gy (N, m), idx (k,) sorted, left (N, K). 0 FLOPs (a copy).
    """
    gather_columns(gy, idx, out=left[:, lay.w:lay.w + lay.k])   # (N, m) -> (N, k) in place
    if lay.K > lay.w + lay.k:
        left[:, lay.w + lay.k:].zero_()                         # (N, K - w - k)
    return left


def put_lora_rows(right: Tensor, A: Tensor, A0: Tensor | None, lay: FusedLayout) -> Tensor:
    """Writes A, A0 (cast to right's dtype) and the zero rows around them into right[:w]: [A; 0; A0; 0].
    A is copied detached (a backward operand; the cached right operand is a buffer)."""
    right[:lay.r].copy_(A.detach())                             # (r, n)
    if lay.t_off > lay.r:
        right[lay.r:lay.t_off].zero_()
    if A0 is not None:
        right[lay.t_off:lay.t_off + lay.r0].copy_(A0)           # (r0, n)
    if lay.w > lay.t_off + lay.r0:
        right[lay.t_off + lay.r0:lay.w].zero_()
    return right


def right_operand_lean(W0: Tensor, idx: Tensor, A: Tensor, A0: Tensor | None, lay: FusedLayout) -> Tensor:
    """[A; 0; A0; 0; W0[I, :]; 0]: (K, n) in A's dtype, W0's kept rows gathered straight into it.

    Lean mode gathers W0[I, :] every backward anyway; here it lands in the fused operand. Under
    autocast (W0 fp32, A bf16) the rows are gathered, then cast. 0 FLOPs (copies).
    """
    right = A.new_empty(lay.K, W0.shape[1])                     # (K, n)
    kept = right[lay.w:lay.w + lay.k]                           # (k, n), contiguous rows
    if W0.dtype == right.dtype:
        torch.index_select(W0, 0, idx, out=kept)                # (m, n) -> (k, n) in place
    else:
        kept.copy_(W0.index_select(0, idx))                     # (m, n) -> (k, n), then the cast
    if lay.K > lay.w + lay.k:
        right[lay.w + lay.k:].zero_()
    return put_lora_rows(right, A, A0, lay)


def right_operand_cached(rows: Tensor, A0: Tensor | None, lay: FusedLayout, dtype: torch.dtype) -> Tensor:
    """[0; 0; A0; 0; R[I, :]; 0]: (K, n) in dtype, built once per refresh from rows = R[I, :] (k, n).

    The first r rows are A's place: put_lora_rows (or right[:r].copy_(A)) fills them each backward.
    """
    right = torch.zeros(lay.K, rows.shape[1], dtype=dtype, device=rows.device)   # (K, n)
    right[lay.w:lay.w + lay.k].copy_(rows)                      # (k, n)
    if A0 is not None:
        right[lay.t_off:lay.t_off + lay.r0].copy_(A0)           # (r0, n)
    return right


def grad_x_fused(left: Tensor, right: Tensor) -> Tensor:
    """G_x = L · right = G_h A + T A0 + G_y[:, I] rows in one GEMM: (N, K) @ (K, n) -> (N, n).

    2·N·K·n FLOPs, K = w + k rounded up (the zero columns are executed, so counted).
    """
    return torch.mm(left, right)
