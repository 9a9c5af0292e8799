"""The line a layer's fwd+bwd speed-up is judged against, as a fraction of its Amdahl bound, per device, in one
place: backward-breakdown's check 3 and gpu-targets' layers section read it, so one layer cannot PASS in one
suite and FAIL in the other.

CPU 0.95: the reachable target (the kept-column product runs at 79-98% of the GEMM roof here, docs/results.md).
CUDA 0.90 at r0 = 0 and 0.85 with double-LoRA (its skinny product G_y·[s·B | C] and the column gather are
memory-bound passes that do not shrink with p; docs/gpu.md)."""
from __future__ import annotations

AMDAHL = {"cpu": (0.95, 0.95), "cuda": (0.90, 0.85)}     # device kind -> (r0 = 0, r0 > 0)


def amdahl_line(device: str, r0: int) -> float:
    """At least this fraction of the Amdahl bound, for a layer on device (e.g. "cuda:1") with SVD rank r0."""
    plain, double = AMDAHL.get(device.split(":")[0], AMDAHL["cpu"])
    return plain if r0 == 0 else double
