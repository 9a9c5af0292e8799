"""glibc malloc settings for CPU benchmarks.

glibc serves allocations of 32 MiB and more with a fresh mmap and returns them
on free, so every large tensor pays page faults on first touch (measured here:
9 ms for a 32 MiB row gather that takes 1 ms from the heap). PyTorch's CPU
tuning guide answers this with jemalloc or tcmalloc; we raise glibc's mmap and
trim thresholds instead, which needs no extra package. The setting applies to
every provider alike and is recorded in each results file.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_state = {"tuned": False}


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune() -> str:
    """Keeps large blocks on the heap; returns a description for the fingerprint."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return "default (not glibc)"
    ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31)
    _state["tuned"] = bool(ok)
    return "glibc mmap_threshold=1GiB trim_threshold=2GiB" if ok else "default (mallopt failed)"


def describe() -> str:
    return "glibc mmap_threshold=1GiB trim_threshold=2GiB" if _state["tuned"] else "default"


def trim() -> None:
    """Returns free heap pages to the OS, so a phase's peak RSS counts its own allocations."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
