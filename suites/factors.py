"""Cheap double-LoRA factors for the suites that time CE-LoRA: their time depends on the shapes (r0, k, m, n),
never on the factors' values, so a full SVD per weight (seconds each on a GPU at 14336×4096, about 112 per
Llama-3.2-1B model under `paper` and `all`) buys nothing there. Two savings, together:

- lowrank_split: torch.svd_lowrank with a few oversampled columns and two power iterations: the top r0
  triplets of a randomized range finder, not exact, close on a weight with a decaying spectrum;
- per_shape: one split per (shape, r0, dtype, device), handed to every later weight of that shape.

The accuracy suites (approx-error, convergence) keep the exact SVD (core.selection.svd_split): their
numbers are the factors' values.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

OVERSAMPLE = 8          # extra random columns of the range finder
POWER_ITERATIONS = 2


def lowrank_split(W0: Tensor, r0: int) -> tuple[Tensor | None, Tensor | None]:
    """W0 ≈ B0 A0 from a randomized truncated SVD in fp32: B0 = U√S (m, r0), A0 = √S Vᵀ (r0, n), as
    core.selection.svd_split returns them. Leaves the global random state as it was."""
    if r0 == 0:
        return None, None
    w = W0.detach().float()
    devices = [w.device] if w.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        U, S, V = torch.svd_lowrank(w, q=min(r0 + OVERSAMPLE, *w.shape), niter=POWER_ITERATIONS)
    root = S[:r0].sqrt()
    B0 = (U[:, :r0] * root).to(W0.dtype).contiguous()              # (m, r0)
    A0 = (root[:, None] * V[:, :r0].T).to(W0.dtype).contiguous()    # (r0, n)
    return B0, A0


def per_shape(split: Callable | None = None) -> Callable:
    """An SVD function (core's SVDSplit) that runs split (None: lowrank_split, looked up at each call, so a
    test can spy on it) once per (shape, r0, dtype, device) and hands those factors to every later weight of
    that shape: exact for weights that are one W0, a stand-in of the right shape for the others."""
    memo: dict = {}

    def cached(W0: Tensor, r0: int):
        key = (tuple(W0.shape), r0, W0.dtype, W0.device)
        if key not in memo:
            memo[key] = (split or _default())(W0, r0)
        return memo[key]
    return cached



def _default() -> Callable:
    import suites.factors
    return suites.factors.lowrank_split       # looked up at each call: a test can spy on it
