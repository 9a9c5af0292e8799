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


def _sdpa_cpu(q, k, *_, **__):       # q (B, H, S, D), k (B, Hk, Sk, D): QKᵀ and PV, causal mask not discounted
    return 4 * q[0] * q[1] * q[2] * k[2] * q[3]


def _sdpa_cpu_backward(grad_out, q, k, *_, **__):   # dV, dP, dQ, dK
    return 8 * q[0] * q[1] * q[2] * k[2] * q[3]


# profiler op name -> formula over the op's input shapes
FLOP_OPS = {"aten::mm": _mm, "aten::addmm": _addmm, "aten::addmm_": _addmm,
            "aten::bmm": _bmm, "aten::baddbmm": _baddbmm,
            "aten::_scaled_dot_product_flash_attention_for_cpu": _sdpa_cpu,
            "aten::_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_cpu_backward}


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
        if e.name in scopes and _scope_of(e, scopes) == "other":      # outermost scope events only
            t = e.device_time_total if cuda else e.cpu_time_total
            secs[e.name] = secs.get(e.name, 0.0) + t / 1e6
    return ScopeProfile(flops, mem, secs, wall)


def torch_total(fn: Callable[[], object]) -> int:
    """Total FLOPs by torch.utils.flop_counter.FlopCounterMode, taught in-place addmm_ and CPU SDPA."""
    aten = torch.ops.aten
    mapping = {aten.addmm_: _addmm}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_backward)):
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
