"""G_y[:, I], the one gather of the CE-LoRA backward, with the fastest method per device behind one seam.

    gather_columns(gy, idx): gy (N, m), idx (k,) sorted int64 -> (N, k) contiguous

The method is looked up by device type in METHODS (and, for CUDA, by whether Triton imports):
- cpu: torch.gather with a broadcast index, ~2× faster than index_select along dim 1 for wide G_y here.
- cuda: the Triton column-gather kernel (core.triton_gather) where Triton is importable, else
  index_select. On an H200 (bf16, N=8192, shared/gpu/2026-11-30.md) the kernel + cuBLAS beat
  index_select + cuBLAS on all five measured 8B shapes (1.08–1.37·p against 1.13–1.52·p), so it is
  used for every shape; torch.gather and index_select tie there.
- anything else: index_select.
"""
from __future__ import annotations

import torch
from torch import Tensor


def torch_gather(gy: Tensor, idx: Tensor) -> Tensor:
    """torch.gather with idx broadcast over the N rows: (N, m) -> (N, k)."""
    return torch.gather(gy, 1, idx.expand(gy.shape[0], idx.numel()))


def index_select(gy: Tensor, idx: Tensor) -> Tensor:
    """index_select along dim 1: (N, m) -> (N, k)."""
    return gy.index_select(1, idx)


def triton_gather(gy: Tensor, idx: Tensor) -> Tensor:
    """The Triton kernel: (N, m) -> (N, k). Imported on first use only."""
    from core import triton_gather as T
    return T.gather_columns(gy, idx)


_triton_ok: bool | None = None


def _cuda_method():
    global _triton_ok
    if _triton_ok is None:
        from core import triton_gather as T
        _triton_ok = T.available()
    return triton_gather if _triton_ok else index_select


METHODS = {"cpu": lambda: torch_gather, "cuda": _cuda_method}


def method_for(device: torch.device):
    """The gather function used for tensors on device."""
    pick = METHODS.get(device.type)
    return pick() if pick is not None else index_select


def gather_columns(gy: Tensor, idx: Tensor) -> Tensor:
    """G_y[:, I]: (N, m) -> (N, k), by the method chosen for gy's device."""
    return method_for(gy.device)(gy, idx)
