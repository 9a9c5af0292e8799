"""Peak memory of one phase: CUDA allocator stats, or peak RSS on Linux CPUs."""
from __future__ import annotations

import sys
from typing import Callable

import torch

from celora_bench import malloc

RSS_WHAT = "peak RSS increase over the phase (VmHWM after clear_refs, malloc trimmed first), bytes"
CUDA_WHAT = "peak torch.cuda allocated during the phase minus allocated before it, bytes"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def rss_supported() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


def rss_and_total() -> tuple[int | None, int | None]:
    """(the process's resident bytes, the machine's memory in bytes); None where /proc cannot tell."""
    try:
        rss = _status_kib("VmRSS") * 1024
        with open("/proc/meminfo") as f:
            total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
        return rss, total
    except (OSError, StopIteration, ValueError):
        return None, None


def rss_phase(fn: Callable[[], object]) -> int | None:
    """Bytes the phase raised the process's resident set above where it started; None off Linux."""
    if not rss_supported():
        return None
    malloc.trim()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                  # resets VmHWM to the current RSS
    before = _status_kib("VmRSS")
    out = fn()
    peak = _status_kib("VmHWM")
    del out
    return (peak - before) * 1024


def cuda_phase(fn: Callable[[], object], device: str) -> int:
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del out
    return peak - before


def phase_peak(fn: Callable[[], object], device: str) -> tuple[int | None, str]:
    """(bytes, what the number includes) for one phase on the device."""
    if device.startswith("cuda"):
        return cuda_phase(fn, device), CUDA_WHAT
    got = rss_phase(fn)
    return got, RSS_WHAT if got is not None else "peak RSS unavailable on this platform"


def tensor_bytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
