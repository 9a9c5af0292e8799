"""FLOPs counted from a real run, split by ``record_function`` scope. 2·m·n·k per matmul.

The profiler records every aten op with its input shapes and its enclosing
scopes; one small formula per matmul op (as fvcore's jit_handles) turns shapes
into FLOPs. torch's own FlopCounterMode misses in-place ``addmm_``, so it is
given that formula too and used as the independent total.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterable

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

CONVENTION = "FLOPs: 2·m·n·k per matmul (FlopCounterMode convention)"


def _mm(s):              # (m, k) @ (k, n)
    return 2 * s[0][0] * s[0][1] * s[1][-1]


def _addmm(s):           # c + (m, k) @ (k, n)
    return _mm(s[1:3])


def _bmm(s):             # (B, m, k) @ (B, k, n)
    return 2 * s[0][0] * s[0][1] * s[0][2] * s[1][-1]


def _baddbmm(s):
    return _bmm(s[1:3])


# profiler op name -> formula over the op's input shapes
MATMUL_OPS = {"aten::mm": _mm, "aten::addmm": _addmm, "aten::addmm_": _addmm,
              "aten::bmm": _bmm, "aten::baddbmm": _baddbmm}


def _scope_of(event, scopes: frozenset[str]) -> str:
    p = event.cpu_parent
    while p is not None:
        if p.name in scopes:
            return p.name
        p = p.cpu_parent
    return "other"


def _inside_matmul(event) -> bool:
    p = event.cpu_parent
    while p is not None:
        if p.name in MATMUL_OPS:
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


def profile_scopes(fn: Callable[[], object], scopes: Iterable[str], device: str = "cpu"
                   ) -> tuple[dict[str, int], dict[str, int]]:
    """Runs fn once under the profiler; returns (FLOPs by scope, bytes allocated by scope).

    Bytes: the sum of every op's positive self allocations inside the scope
    (gross allocations, CPU or CUDA by device), not a peak. Ops outside every
    named scope go to "other".
    """
    scopes = frozenset(scopes)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with _quiet_stderr(), profile(activities=acts, record_shapes=True, profile_memory=True) as prof:
        fn()
    flops: dict[str, int] = {}
    mem: dict[str, int] = {}
    cuda = device.startswith("cuda")
    for e in prof.events():
        scope = _scope_of(e, scopes)
        formula = MATMUL_OPS.get(e.name)
        if formula is not None and not _inside_matmul(e):
            flops[scope] = flops.get(scope, 0) + int(formula(e.input_shapes))
        alloc = e.self_device_memory_usage if cuda else e.self_cpu_memory_usage
        if alloc and alloc > 0:
            mem[scope] = mem.get(scope, 0) + int(alloc)
    return flops, mem


def _addmm_inplace_flop(c_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def torch_total(fn: Callable[[], object]) -> int:
    """Total FLOPs by torch.utils.flop_counter.FlopCounterMode (taught in-place addmm_)."""
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_inplace_flop})
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
