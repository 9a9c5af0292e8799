"""FLOPs counted from a real run, split by ``record_function`` scope. 2·m·n·k per matmul.

The profiler records every aten op with its input shapes and its enclosing
scopes; one small formula per matmul op (as fvcore's jit_handles) turns shapes
into FLOPs. torch's own FlopCounterMode gives the total to check it against: its own
formulas for mm, addmm and bmm (independent of ours); for in-place ``addmm_`` and CPU
SDPA attention, which it does not know, it is handed the same formulas as the profiler.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

CONVENTION = "FLOPs: 2·m·n·k per matmul (FlopCounterMode convention)"


# One formula per op over its input shapes, in the op's argument order. The profiler
# path calls formula(*event.input_shapes); FlopCounterMode calls it with the same
# shapes (plus out_shape), for the ops it does not know itself.

def _mm(a, b, *_, **__):             # (m, k) @ (k, n)
    return 2 * a[0] * a[1] * b[-1]


def _addmm(c, a, b, *_, **__):       # c + (m, k) @ (k, n)
    return _mm(a, b)


def _bmm(a, b, *_, **__):            # (B, m, k) @ (B, k, n)
    return 2 * a[0] * a[1] * a[2] * b[-1]


def _baddbmm(c, a, b, *_, **__):
    return _bmm(a, b)


# Attention, 2·m·n·k per matmul: QKᵀ and PV forward (4·B·Hq·Sq·Sk·D), dV, dP, dQ, dK backward
# (8·B·Hq·Sq·Sk·D), the causal mask not discounted (as torch's own formulas). Counted over the
# query heads: under grouped-query attention (Hq = g·Hk) each key/value head serves g query heads,
# so the key's head count must not enter the product (torch's formulas assert Hq == Hk and crash).

def _attn(q, k, heads_dim: int, fwd: bool) -> int:
    """q, k shapes in (B, H, S, D) (heads_dim 1) or (B, S, H, D) (heads_dim 2) layout."""
    seq_dim = 3 - heads_dim
    return (4 if fwd else 8) * q[0] * q[heads_dim] * q[seq_dim] * k[seq_dim] * q[3]


def _sdpa_bhsd(q, k, *_, **__):                      # q (B, Hq, Sq, D), k (B, Hk, Sk, D)
    return _attn(q, k, 1, True)


def _sdpa_bhsd_backward(grad_out, q, k, *_, **__):
    return _attn(q, k, 1, False)


def _sdpa_bshd(q, k, *_, **__):                      # q (B, Sq, Hq, D), k (B, Sk, Hk, D)
    return _attn(q, k, 2, True)


def _sdpa_bshd_backward(grad_out, q, k, *_, **__):
    return _attn(q, k, 2, False)


# every SDPA kernel the CPU and CUDA builds dispatch to (math decomposes into bmm, counted above)
ATTENTION_OPS = {
    "_scaled_dot_product_flash_attention_for_cpu": _sdpa_bhsd,
    "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_bhsd_backward,
    "_scaled_dot_product_flash_attention": _sdpa_bhsd,
    "_scaled_dot_product_flash_attention_backward": _sdpa_bhsd_backward,
    "_scaled_dot_product_efficient_attention": _sdpa_bhsd,
    "_scaled_dot_product_efficient_attention_backward": _sdpa_bhsd_backward,
    "_scaled_dot_product_cudnn_attention": _sdpa_bhsd,
    "_scaled_dot_product_cudnn_attention_backward": _sdpa_bhsd_backward,
    "_flash_attention_forward": _sdpa_bshd,
    "_flash_attention_backward": _sdpa_bshd_backward,
    "_efficient_attention_forward": _sdpa_bshd,
    "_efficient_attention_backward": _sdpa_bshd_backward,
}

# profiler op name -> formula over the op's input shapes
FLOP_OPS = {"aten::mm": _mm, "aten::addmm": _addmm, "aten::addmm_": _addmm,
            "aten::bmm": _bmm, "aten::baddbmm": _baddbmm,
            **{f"aten::{name}": f for name, f in ATTENTION_OPS.items()}}


def _scope_of(event, scopes: frozenset[str]) -> str:
    p = event.cpu_parent
    while p is not None:
        if p.name in scopes:
            return p.name
        p = p.cpu_parent
    return "other"


def _inside_counted(event) -> bool:
    p = event.cpu_parent
    while p is not None:
        if p.name in FLOP_OPS:
            return True
        p = p.cpu_parent
    return False


@contextlib.contextmanager
def _quiet_stderr():
    """Silences C++ writes to fd 2 (the profiler's start/stop lines); Python's stderr is untouched."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass(frozen=True)
class ScopeProfile:
    """One profiled run split by scope ("other" = outside every named scope).

    flops: 2·m·n·k per matmul. bytes: gross positive allocations (not a peak).
    seconds: profiler time inside each scope (CPU time, or device time on CUDA),
    which includes the profiler's own overhead.
    """

    flops: dict[str, int]
    bytes: dict[str, int]
    seconds: dict[str, float]
    wall_s: float | None
    device_s: float | None = None      # CUDA: the device time of every kernel of the run


def profile_scopes(fn: Callable[[], object], scopes: Iterable[str], device: str = "cpu") -> ScopeProfile:
    """Runs fn once under the profiler and splits FLOPs, allocations and time by scope."""
    scopes = frozenset(scopes)
    cuda = device.startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with _quiet_stderr(), profile(activities=acts, record_shapes=True, profile_memory=True) as prof:
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    flops: dict[str, int] = {}
    mem: dict[str, int] = {}
    secs: dict[str, float] = {}
    for e in prof.events():
        scope = _scope_of(e, scopes)
        formula = FLOP_OPS.get(e.name)
        if formula is not None and not _inside_counted(e):
            flops[scope] = flops.get(scope, 0) + int(formula(*e.input_shapes))
        alloc = e.self_device_memory_usage if cuda else e.self_cpu_memory_usage
        if alloc and alloc > 0:
            mem[scope] = mem.get(scope, 0) + int(alloc)
        # outermost scope events only, on the host side (on CUDA the profiler also lists each
        # annotation as a device-side event of the same name, which would count its kernels twice)
        if e.name in scopes and e.device_type == DeviceType.CPU and _scope_of(e, scopes) == "other":
            t = e.device_time_total if cuda else e.cpu_time_total
            secs[e.name] = secs.get(e.name, 0.0) + t / 1e6
    # every kernel once: through the top-level host ops that launched them
    device = sum(e.device_time_total for e in prof.events()
                 if e.device_type == DeviceType.CPU and e.cpu_parent is None) / 1e6 if cuda else None
    return ScopeProfile(flops, mem, secs, wall, device)


def torch_total(fn: Callable[[], object]) -> int:
    """Total FLOPs by torch.utils.flop_counter.FlopCounterMode, taught in-place addmm_ and every SDPA kernel
    (CPU flash; CUDA flash, memory-efficient, cuDNN) with grouped-query shapes."""
    aten = torch.ops.aten
    mapping = {aten.addmm_: _addmm}
    for name, formula in ATTENTION_OPS.items():      # replaces torch's, which assert on grouped-query shapes
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = formula
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        fn()
    return int(counter.get_total_flops())


def fvcore_forward(module: torch.nn.Module, inputs: tuple) -> tuple[int | None, str]:
    """Forward FLOPs by fvcore, converted to 2·m·n·k, and what fvcore could not see.

    fvcore counts one multiply-add as one FLOP and traces the forward only; a
    custom autograd Function is an opaque ``prim::PythonOp`` to it.
    """
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        return None, "fvcore not installed"
    analysis = FlopCountAnalysis(module, inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    try:
        total = 2 * int(analysis.total())
    except Exception as e:  # the jit tracer fails on Functions that take a module
        return None, f"fvcore cannot trace this forward ({type(e).__name__}: {str(e)[:60]})"
    unseen = sorted(analysis.unsupported_ops())
    note = "forward only, fvcore MACs ×2"
    if unseen:
        note += "; cannot see: " + ", ".join(unseen)
    return total, note
