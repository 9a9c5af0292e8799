"""A Triton column-gather kernel for CUDA: out[:, j] = G[:, I[j]], G (N, m) -> out (N, k).

Imported only by ``core.gather`` on a CUDA tensor, and only when Triton is importable:
nothing here is needed to install or run the project on a CPU. Each program copies one
BLOCK_R-row × BLOCK_K-index tile: it loads I[j] for its BLOCK_K indices, loads
G[rows, I[j]] and stores the tile contiguous. On an H200 (bf16, N=8192) 8×256 tiles took
0.117 ms where index_select took 0.188 ms for 14336→7168 columns, and gather + cuBLAS
was faster with this kernel on every measured shape (GPU run of 2026-11-30; docs/gpu.md).

Under ``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors (the correctness test).
The launch runs under G's device guard (``torch.cuda.device(gy.device)``): Triton launches on the
current device, so a tensor on cuda:1 would otherwise be read by a kernel on cuda:0.
"""
from __future__ import annotations

import contextlib
import os

import torch
from torch import Tensor

# (BLOCK_R, BLOCK_K) per case; 8×256 was the previous H200 run's best on the large layers. The gpu-targets
# suite's kernels section (`celora-bench run gpu-targets --device cuda -k /kernels/`) times the alternatives
# per shape; change this table on its evidence.
DEFAULT_TILE = (8, 256)

_kernels: dict[bool, object] = {}


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _kernel():
    """The jitted kernel, built on first use (and per TRITON_INTERPRET setting)."""
    mode = _interpret()
    if mode not in _kernels:
        import triton
        import triton.language as tl

        def gather_cols(G, Idx, Out, N, K, stride_g, stride_o,
                        BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
            rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)        # (BLOCK_R,)
            ks = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)          # (BLOCK_K,)
            k_ok = ks < K
            cols = tl.load(Idx + ks, mask=k_ok, other=0)                     # I[j]: (BLOCK_K,)
            mask = (rows < N)[:, None] & k_ok[None, :]                       # (BLOCK_R, BLOCK_K)
            r64 = rows.to(tl.int64)[:, None]
            v = tl.load(G + r64 * stride_g + cols[None, :], mask=mask)       # G[rows, I[j]]
            tl.store(Out + r64 * stride_o + ks[None, :], v, mask=mask)        # contiguous tile

        _kernels[mode] = triton.jit(gather_cols)
    return _kernels[mode]


def available() -> bool:
    """True when Triton can be imported (never imports torch's CUDA on its own)."""
    try:
        import triton  # noqa: F401
    except Exception:                                  # ImportError, or a broken install
        return False
    return True


def device_guard(device: torch.device):
    """The CUDA device guard of device (a no-op context for the interpreter's CPU tensors)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(device)


def gather_columns(gy: Tensor, idx: Tensor, tile: tuple[int, int] = DEFAULT_TILE, out: Tensor | None = None) -> Tensor:
    """G_y[:, I] by the Triton kernel: gy (N, m), idx (k,) int64 -> (N, k).

    out: an (N, k) view with unit column stride to write into (e.g. columns of a wider tensor);
    None allocates a contiguous one.
    """
    if gy.stride(1) != 1:
        gy = gy.contiguous()
    N, k = gy.shape[0], idx.numel()
    if out is None:
        out = torch.empty(N, k, device=gy.device, dtype=gy.dtype)        # (N, k)
    elif out.shape != (N, k) or out.stride(1) != 1 or out.dtype != gy.dtype:
        raise ValueError(f"out must be ({N}, {k}) {gy.dtype} with unit column stride, got "
                         f"{tuple(out.shape)} {out.dtype} strides {out.stride()}")
    if N == 0 or k == 0:
        return out
    br, bk = tile
    grid = (-(-N // br), -(-k // bk))
    with device_guard(gy.device):
        _kernel()[grid](gy, idx, out, N, k, gy.stride(0), out.stride(0), BLOCK_R=br, BLOCK_K=bk)
    return out
