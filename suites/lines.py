"""The lines a layer is judged against, per device, in one place (backward-breakdown's verdict and its plots
read them): its fwd+bwd speed-up as a fraction of its Amdahl bound, and its kept-column product.

CPU 0.95: the reachable target (the kept-column product runs at 79-98% of the GEMM roof here, docs/results.md).
CUDA 0.90 at r0 = 0 and 0.85 with double-LoRA (its skinny product G_y·[s·B | C] and the column gather are
memory-bound passes that do not shrink with p; docs/gpu.md).

The kept-column product (G_y column gather + the GEMM over the kept rows) at most 1.25·p_eff of dense
G_y·W0 on CUDA (docs/gpu.md: the gather's floor at n = 4096 is 1.22·p on an H100); reported on the CPU."""
from __future__ import annotations

AMDAHL = {"cpu": (0.95, 0.95), "cuda": (0.90, 0.85)}     # device kind -> (r0 = 0, r0 > 0)
KEPT = {"cuda": 1.25}                                    # device kind -> at most this many p_eff of dense


def amdahl_line(device: str, r0: int) -> float:
    """At least this fraction of the Amdahl bound, for a layer on device (e.g. "cuda:1") with SVD rank r0."""
    plain, double = AMDAHL.get(device.split(":")[0], AMDAHL["cpu"])
    return plain if r0 == 0 else double


def kept_line(device: str) -> float | None:
    """At most this many p_eff of dense G_y·W0 for the kept-column product on device; None: reported only."""
    return KEPT.get(device.split(":")[0])
