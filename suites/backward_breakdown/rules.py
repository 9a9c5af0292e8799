"""The rules backward-breakdown's exact checks hold a run to, written apart from core (core.config.kept,
core.components, core/flops.py) so that a change there is caught: the kept-feature count k a configured p
asks for on a device, and the FLOPs CE-LoRA's G_y·W0 is charged."""
from __future__ import annotations

import math

from celora_bench.cases import Case

# k from the configured p, written here apart from core (core.config.kept): ceil(p·m) rounded up to a
# multiple a per (device type, bytes per element); a run whose layer kept another k fails.
K_MULTIPLES = {("cuda", 2): 64, ("cuda", 4): 16, ("cuda", 8): 16}      # anything else: 1
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
SKINNY_MULTIPLE = 16    # the skinny operand [s·B | 0 | C | 0] is padded to a multiple of 16 columns (core.components)
ALIGN = 8               # and each block of the fused operands starts at a multiple of 8 elements


def k_rule(case: Case) -> tuple[int, int]:
    """(k, a): the kept features the configured p asks for on the case's device and dtype, and the multiple."""
    a = K_MULTIPLES.get((case.device.split(":")[0], ITEMSIZE.get(case.dtype, 4)), 1)
    k = min(case.m, max(1, math.ceil(case.keep_ratio * case.m - 1e-9)))
    return min(case.m, -(-k // a) * a), a


def _up(x: int, a: int) -> int:
    return -(-x // a) * a


def expected_frozen_flops(N: int, m: int, n: int, k: int, r: int, r0: int, form: str = "split", a: int = 1) -> int:
    """FLOPs of CE-LoRA's G_y·W0 by its definition (the brief) and the layout core documents, written apart
    from core/flops.py, counted as the verdict charges it against dense (dense's own G_h·B and G_h·A
    taken out):

    split: the kept-column product G_y[:, I]·rows (2Nkn), the double-LoRA's T·A0 (2N·r0·n), and what
      reading G_y against C adds to the G_y·B product it shares a pass with: the skinny operand
      [s·B | 0 | C | 0] is w = (r up to 8) + r0, up to 16, columns wide, 2N·m·(w − r);
    fused: one GEMM over the inner width K = w + k up to lcm(8, a) (w = r up to 8 without C), which
      includes G_h·A (2N·r·n, dense's grad_x_lora), and the same 2N·m·(w − r).
    k == m is the dense product 2Nmn."""
    if k >= m:
        return 2 * N * m * n
    w = _up(_up(r, ALIGN) + r0, SKINNY_MULTIPLE) if r0 else (_up(r, ALIGN) if form == "fused" else r)
    extra = 2 * N * m * (w - r)
    if form == "fused":
        K = _up(w + k, math.lcm(ALIGN, a))
        return 2 * N * K * n - 2 * N * r * n + extra
    return 2 * N * (k * n + r0 * n) + extra
