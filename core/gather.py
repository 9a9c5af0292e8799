"""G_y[:, I], the one gather of the CE-LoRA backward, with the fastest method per device behind one seam.

    gather_columns(gy, idx, out=None): gy (N, m), idx (k,) sorted int64 -> (N, k)

out, when given, is an (N, k) view with unit column stride (e.g. columns of the fused form's left
operand) that the gather writes into, instead of a fresh contiguous tensor.

The method is looked up by device type in METHODS (and, for CUDA, by whether Triton imports):
- cpu: torch.gather with a broadcast index, ~2× faster than index_select along dim 1 for wide G_y here.
- cuda: the Triton column-gather kernel (core.triton_gather) where Triton is importable, else
  index_select. On an H200 (bf16, N=8192, GPU run of 2026-11-30; docs/gpu.md) the kernel + cuBLAS beat
  index_select + cuBLAS on all five measured 8B shapes (1.08–1.37·p against 1.13–1.52·p), so it is
  used for every shape; torch.gather and index_select tie there. A Triton that imports but cannot
  compile or launch the kernel falls back to index_select: the first failure warns once, and every
  later call goes straight to index_select. Only such failures (kernel_failure) fall back: a bad
  argument (ValueError, e.g. a wrong `out`) and a CUDA out-of-memory are the caller's and are raised,
  so they neither disable Triton for the process nor read as "triton failed".
- anything else: index_select.

``methods_used()`` says which method ran last per device type, so a results file can record it.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor


def torch_gather(gy: Tensor, idx: Tensor, out: Tensor | None = None) -> Tensor:
    """torch.gather with idx broadcast over the N rows: (N, m) -> (N, k)."""
    return torch.gather(gy, 1, idx.expand(gy.shape[0], idx.numel()), out=out)


def index_select(gy: Tensor, idx: Tensor, out: Tensor | None = None) -> Tensor:
    """index_select along dim 1: (N, m) -> (N, k)."""
    return torch.index_select(gy, 1, idx, out=out)


def triton_gather(gy: Tensor, idx: Tensor, out: Tensor | None = None) -> Tensor:
    """The Triton kernel: (N, m) -> (N, k). Imported on first use only; raises what Triton raises."""
    from core import triton_gather as T
    return T.gather_columns(gy, idx, out=out)


_triton_ok: bool | None = None          # None: not probed yet
_triton_failure: str | None = None      # "ExcType: message" of the first compile or launch failure


def kernel_failure(e: BaseException) -> bool:
    """True for what a kernel that cannot compile or launch raises: Triton's own errors (CompilationError,
    OutOfResources, PTXASError: modules under triton.), an ImportError from its toolchain, and a
    RuntimeError from the driver ("no kernel image", no C compiler). Not a CUDA out-of-memory (a
    RuntimeError too, but the same on any method), not a ValueError or TypeError (a bad argument)."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return False
    if isinstance(e, (RuntimeError, ImportError)):
        return True
    return type(e).__module__.split(".")[0] == "triton"


def triton_or_index_select(gy: Tensor, idx: Tensor, out: Tensor | None = None) -> Tensor:
    """The Triton kernel; on its first compile or launch failure, a warning (once) and index_select from
    then on. Anything else it raises (a bad argument, out of memory) is raised.

    Raises:
        ValueError: out is not an (N, k) view with unit column stride in gy's dtype (core.triton_gather).
        torch.cuda.OutOfMemoryError: the device has no room for the result.
    """
    global _triton_ok, _triton_failure
    try:
        return triton_gather(gy, idx, out)
    except Exception as e:                           # noqa: BLE001  (sorted by kernel_failure)
        if not kernel_failure(e):
            raise
        _triton_ok = False
        _triton_failure = f"{type(e).__name__}: {e}"
        warnings.warn(f"core.gather: the Triton gather kernel failed ({_triton_failure}); "
                      f"G_y[:, I] uses index_select from now on", RuntimeWarning, stacklevel=2)
        return index_select(gy, idx, out)


def _cuda_method():
    global _triton_ok
    if _triton_ok is None:
        from core import triton_gather as T
        _triton_ok = T.available()
    return triton_or_index_select if _triton_ok else index_select


METHODS = {"cpu": lambda: torch_gather, "cuda": _cuda_method}

_NAMES = {torch_gather: "torch.gather", index_select: "index_select", triton_gather: "triton",
          triton_or_index_select: "triton"}
_used: dict[str, object] = {}           # device type -> the method that ran last there


def method_for(device: torch.device):
    """The gather function used for tensors on device."""
    pick = METHODS.get(device.type)
    return pick() if pick is not None else index_select


def method_name(fn) -> str:
    """How methods_used names fn: "torch.gather", "index_select", "triton", or
    "index_select (triton failed: ExcType: message)" once the Triton kernel has failed."""
    name = _NAMES.get(fn) or getattr(fn, "__name__", repr(fn))
    if name == "index_select" and _triton_failure is not None:
        return f"index_select (triton failed: {_triton_failure})"
    return name


def methods_used() -> dict[str, str]:
    """{device type: the gather method that ran last there}, e.g. {"cpu": "torch.gather"} or
    {"cuda": "index_select (triton failed: RuntimeError: ...)"}; empty before the first gather."""
    return {dev: method_name(fn) for dev, fn in _used.items()}


def gather_columns(gy: Tensor, idx: Tensor, out: Tensor | None = None) -> Tensor:
    """G_y[:, I]: (N, m) -> (N, k), by the method chosen for gy's device (into out if given)."""
    kind = gy.device.type
    pick = METHODS.get(kind)
    fn = pick() if pick is not None else index_select
    res = fn(gy, idx, out)
    _used[kind] = index_select if fn is triton_or_index_select and _triton_failure is not None else fn
    return res
