"""Analytic bytes moved by each component: the minimum, every operand read once and every result written
once, in the run's dtype (b bytes per element); an in-place accumulation (addmm_) reads its output too.
Index tensors are int64 (8 bytes per element). The roofline (celora_bench.roofline) divides the FLOPs
(core.flops) by these.

Shapes as in core.flops: N tokens, m output features, n input features, r LoRA rank, k kept features, r0
SVD rank, w the skinny operand's width and K the fused operands' inner width (core.components).

The gather model per device (the one place the minimum is not what the hardware reads):
- cpu: G_y[:, I] reads N·k values, the minimum (the committed CPU rooflines use it; a CPU reads whole
  64-byte lines too, so on wide rows this is a lower bound).
- cuda: reads are sector-granular. A global load moves whole 32-byte sectors, 32/b values each; sorted
  kept columns spaced about 1/p apart touch nearly every sector of a row, so the gather reads about N·m
  values, not N·k (1.5x more traffic at p = 0.5 in bf16). column_read_bytes gives the expected sectors.
  The W0 row gather reads whole rows and is the minimum on both.
"""
from __future__ import annotations

import math

from core.components import fused_layout, skinny_width
from core.config import GRAD_X_FORMS
from core.scopes import FWD_FROZEN, FWD_LORA, GRAD_A, GRAD_B, GRAD_H, GRAD_X_FROZEN, GRAD_X_LORA, SELECTION

INDEX_BYTES = 8
SECTOR_BYTES = 32        # CUDA: the unit a global load moves between DRAM/L2 and the SMs
DEVICES = ("cpu", "cuda")


def _mm(b: int, rows: int, inner: int, cols: int, accumulate: bool = False) -> int:
    """(rows, inner) @ (inner, cols): both operands read, the result written (and read first if accumulated)."""
    out = rows * cols
    return b * (rows * inner + inner * cols + out * (2 if accumulate else 1))


def gather_bytes(b: int, rows: int, k: int) -> int:
    """k columns (or rows) of `rows` elements gathered: read, written contiguous, and the k indices read
    (the minimum; every row gather, and a column gather on the CPU)."""
    return 2 * b * rows * k + INDEX_BYTES * k


def column_read_bytes(b: int, rows: int, m: int, k: int, device: str = "cpu") -> int:
    """Bytes read gathering k of the m columns of a row-major (rows, m) tensor. cpu: rows·k values. cuda: the
    sectors touched, each row's ceil(m/s) sectors of s = 32/b values touched with probability 1 − (1 − k/m)^s
    (k columns spread over the row, as CE-LoRA's top-k of heavy-tailed scores are).

    Raises:
        ValueError: device is not one of DEVICES, or k is not in [0, m].
    """
    if device not in DEVICES:
        raise ValueError(f"column_read_bytes device={device!r} is invalid; allowed: " + ", ".join(DEVICES))
    if not 0 <= k <= m:
        raise ValueError(f"column_read_bytes k={k} is invalid; allowed: 0 <= k <= m={m}")
    if device == "cpu" or k == 0:
        return b * rows * k
    s = max(1, SECTOR_BYTES // b)                       # values per sector
    touched = math.ceil(m / s) * (1 - (1 - k / m) ** s)  # expected sectors per row
    return max(b * rows * k, round(rows * touched * SECTOR_BYTES))


def column_gather_bytes(b: int, rows: int, m: int, k: int, device: str = "cpu") -> int:
    """G_y[:, I] of a (rows, m) G_y: the columns read (column_read_bytes), written contiguous, indices read."""
    return column_read_bytes(b, rows, m, k, device) + b * rows * k + INDEX_BYTES * k


def separate_gather_floor(n: int, p: float, b: int, flops_per_s: float, bytes_per_s: float) -> float:
    """The least kept-column product time over the dense G_y·W0, in units of p, when G_y[:, I] is gathered in
    its own pass on a GPU: both GEMMs at the FLOP roof, the gather at the memory roof reading every sector
    (N·m values) and writing N·k. 1 + (1 + p)·b·F / (2·n·B·p): at n = 4096, p = 0.5, bf16 on an H100 SXM
    (989 TFLOP/s, 3.35 TB/s) 1.22; a gather fused into the skinny product (one pass over G_y) would leave
    only the write, 1 + b·F / (2·n·B)."""
    return 1 + (1 + p) * b * flops_per_s / (2 * n * bytes_per_s * p)


def layer_bytes(N: int, m: int, n: int, r: int, k: int | None = None, r0: int = 0, cache_rows: bool = False,
                form: str = "split", k_multiple: int = 1, b: int = 4, device: str = "cpu") -> dict[str, int]:
    """Bytes of one forward+backward of a LoRA layer, per component (profiler scope), plus "selection"
    and, for a sampled layer, the kept-column product's two halves timed alone ("detail.gather": G_y[:, I],
    "detail.kept_product": G_y[:, I]·rows). device: the gather model (column_gather_bytes; "cuda" counts
    the sectors the G_y column gather touches).

    fwd.frozen        x W0ᵀ: x (N, n), W0 (m, n) read, y (N, m) written
    fwd.lora          h = x_d Aᵀ (N, r) written; y += s·h Bᵀ in place (y read and written)
    bwd.grad_h        G_y [s·B | 0 | C | 0]: G_y (N, m) and the (m, w) operand read, (N, w) written
    bwd.grad_B        (hᵀ G_y)ᵀ: h (N, r), G_y (N, m) read, (r, m) written
    bwd.grad_A        G_hᵀ x_d: G_h (N, r), x_d (N, n) read, (r, n) written
    bwd.grad_x_lora   G_x += G_h A in place
    bwd.grad_x_frozen dense: G_y W0. split: the G_y column gather, (lean) the W0 row gather, the kept
                      product, and (r0 > 0) G_x += T A0 in place. fused: the gather into L, (lean) the W0
                      row gather into the right operand, A (and A0) copied in, one (N, K) @ (K, n) GEMM.
    selection         one refresh: G_y read for its column norms, the residual norms read, (cached) R[I, :]
                      rebuilt from W0[I, :], B0[I, :] and A0.

    Raises:
        ValueError: form is not "split" or "fused", or device is not one of DEVICES.
    """
    if form not in GRAD_X_FORMS:
        raise ValueError(f"layer_bytes form={form!r} is invalid; allowed: " + " or ".join(GRAD_X_FORMS))
    if device not in DEVICES:
        raise ValueError(f"layer_bytes device={device!r} is invalid; allowed: " + ", ".join(DEVICES))
    dense = k is None or k == m
    double = not dense and r0 > 0
    w = skinny_width(r, r0) if double else r
    out = {
        FWD_FROZEN: _mm(b, N, n, m),
        FWD_LORA: _mm(b, N, n, r) + _mm(b, N, r, m, accumulate=True),
        GRAD_H: _mm(b, N, m, w),
        GRAD_B: _mm(b, r, N, m),
        GRAD_A: _mm(b, r, N, n),
        GRAD_X_LORA: _mm(b, N, r, n, accumulate=True),
    }
    if dense:
        out[GRAD_X_FROZEN] = _mm(b, N, m, n)
        out[SELECTION] = 0
        return out
    cols = column_gather_bytes(b, N, m, k, device)                   # G_y[:, I]: (N, m) -> (N, k)
    rows_gather = 0 if cache_rows else gather_bytes(b, n, k)        # W0[I, :] in lean mode
    if form == "fused":
        lay = fused_layout(k, r, r0, k_multiple)
        copies = 2 * b * (lay.r0 if not cache_rows else 0) * n + 2 * b * r * n   # A0 (lean) and A into the right
        out[GRAD_H] = _mm(b, N, m, lay.w)
        out[GRAD_X_FROZEN] = cols + rows_gather + copies + _mm(b, N, lay.K, n)
        out[GRAD_X_LORA] = 0
    else:
        out[GRAD_X_FROZEN] = (cols + rows_gather + _mm(b, N, k, n)
                                    + (_mm(b, N, r0, n, accumulate=True) if r0 else 0))
    out[SELECTION] = b * N * m + 4 * m + INDEX_BYTES * k + (
        b * (2 * k * n + k * r0 + r0 * n) if cache_rows else (b * 2 * m * r0 if r0 else 0))
    out["detail.gather"] = cols
    out["detail.kept_product"] = _mm(b, N, k, n)
    return out


def module_bytes(layer, N: int, b: int) -> dict[str, int]:
    """layer_bytes of a CELoRALinear for N tokens as it runs now (its k, r0, cache mode, form, k multiple) on
    the device its weight is on (the gather model of that device type; others count as the CPU)."""
    kind = layer.weight.device.type
    return layer_bytes(N, layer.out_features, layer.in_features, layer.config.r,
                       None if layer.dense else layer.k, layer.r0, layer.config.cache_rows,
                       form=layer.grad_x_form, k_multiple=layer.k_multiple, b=b,
                       device=kind if kind in DEVICES else "cpu")
