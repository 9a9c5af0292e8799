"""Double-LoRA split of W0 and the top-k selection of kept output features."""
from __future__ import annotations

import torch
from torch import Tensor


def svd_split(W0: Tensor, r0: int) -> tuple[Tensor | None, Tensor | None]:
    """Truncated SVD of W0 in fp32: W0 ≈ B0 A0, B0 = U√S (m, r0), A0 = √S Vᵀ (r0, n).

    Runs on W0's device; falls back to the CPU where that device has no SVD.
    Returns (None, None) for r0 == 0.
    """
    if r0 == 0:
        return None, None
    w = W0.detach().float()
    try:
        U, S, Vh = torch.linalg.svd(w, full_matrices=False)
    except (RuntimeError, NotImplementedError):
        U, S, Vh = (t.to(W0.device) for t in torch.linalg.svd(w.cpu(), full_matrices=False))
    root = S[:r0].sqrt()
    B0 = (U[:, :r0] * root).to(W0.dtype).contiguous()              # (m, r0)
    A0 = (root[:, None] * Vh[:r0]).to(W0.dtype).contiguous()       # (r0, n)
    return B0, A0


def residual_row_sq_norms(W0: Tensor, B0: Tensor | None, A0: Tensor | None) -> Tensor:
    """‖R[i, :]‖² for R = W0 − B0 A0, in fp32: (m,)."""
    R = W0.detach().float()
    if B0 is not None:
        R = torch.addmm(R, B0.float(), A0.float(), alpha=-1.0)      # (m, n)
    return R.square().sum(1)


# Rows of a 16-bit G_y squared in fp32 per step of column_sq_norms: bounds the fp32 copy at 2^22 values
# (16 MiB). Squaring in bf16 would round each square to bf16 (tests/test_core_autocast.py holds the fp32
# accumulation to fp32 accuracy) and, on the CPU, run on bf16's emulated path.
SQ_CHUNK = 1 << 22


def column_sq_norms(gy: Tensor) -> Tensor:
    """‖G_y[:, i]‖² in fp32: (N, m) -> (m,). square().sum(0), not norm(dim=0) (20× faster on CPU).

    G_y in a 16-bit dtype (bf16 weights, autocast) is squared and summed in fp32, a block of rows
    at a time, so the score ranks on fp32 values without an fp32 copy of all of G_y.
    """
    if gy.dtype in (torch.float32, torch.float64):
        return gy.square().sum(0, dtype=torch.float32)
    N, m = gy.shape
    step = max(1, SQ_CHUNK // max(1, m))
    out = torch.zeros(m, dtype=torch.float32, device=gy.device)
    for i in range(0, N, step):
        out += gy[i:i + step].float().square_().sum(0)            # (step, m) -> (m,)
    return out


def top_k_index(score: Tensor, k: int) -> Tensor:
    """Indices of the k largest scores, sorted ascending (sorted gathers are faster): (k,)."""
    idx = torch.topk(score, k, sorted=False).indices                 # (m,) -> (k,)
    return idx.sort().values


def random_index(m: int, k: int, generator: torch.Generator, device) -> Tensor:
    """k distinct features drawn uniformly, sorted ascending: (k,)."""
    return torch.randperm(m, generator=generator)[:k].sort().values.to(device)


def select(score_rule: str, gy: Tensor, res_sq: Tensor, k: int,
           generator: torch.Generator, reduce=None) -> Tensor:
    """The index set I for one refresh under the given score rule.

    reduce: applied in place to the (m,) column norms before ranking, e.g. an
    all-reduce over data-parallel ranks so that every rank selects the same I.
    """
    if score_rule == "product":
        # ‖G_y[:, i]‖·‖R[i, :]‖ ranks the same as its square.
        col = column_sq_norms(gy)
        if reduce is not None:
            reduce(col)
        return top_k_index(col * res_sq, k)
    if score_rule == "residual_norm":
        return top_k_index(res_sq, k)
    return random_index(res_sq.numel(), k, generator, res_sq.device)


def residual_rows(W0: Tensor, idx: Tensor, B0: Tensor | None, A0: Tensor | None) -> Tensor:
    """R[I, :] = W0[I, :] − B0[I, :] A0, contiguous: (k, n)."""
    rows = W0.index_select(0, idx)                                     # (m, n) -> (k, n)
    if B0 is not None:
        rows.addmm_(B0.index_select(0, idx), A0, alpha=-1.0)           # (k, r0) @ (r0, n)
    return rows


def zero_rows(B0: Tensor, idx: Tensor) -> Tensor:
    """B0 with rows I zeroed: (m, r0). G_y·zero_rows(B0, I) = G_y[:, Ī] B0[Ī, :]."""
    out = B0.clone()
    out.index_fill_(0, idx, 0)                                         # rows I -> 0
    return out
