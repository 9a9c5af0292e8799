"""CELoRAConfig: every knob of a CE-LoRA layer, validated once."""
from __future__ import annotations

import math
from dataclasses import dataclass

SCORES = ("product", "residual_norm", "random")
TAU_UNITS = ("optimizer_steps", "forward_calls")
GRAD_X_FORMS = ("split", "fused")


def balanced_rank(r: int) -> int:
    """The reference code's balanced SVD rank for LoRA rank r: floor(7r/8)."""
    return (7 * r) // 8


@dataclass(frozen=True)
class CELoRAConfig:
    """Configuration of one CE-LoRA linear layer.

    Args:
        r: LoRA rank (>= 1).
        alpha: LoRA scale numerator; the update is scaled by alpha / r.
        dropout: dropout probability on the LoRA branch input, in [0, 1).
        keep_ratio: p, the kept fraction of output features in the approximated
            G_y·W0 product, in (0, 1]. 1 means a dense activation gradient.
        svd_rank: r0, rank of the exact SVD part of W0 ("double-LoRA"), >= 0.
            None picks the reference code's balanced rank floor(7r/8) when
            keep_ratio < 1, and 0 when keep_ratio == 1.
        tau: index refresh period (>= 1), counted in ``tau_unit``.
        tau_unit: "optimizer_steps" (default) or "forward_calls" (the
            reference code's counting, which eval and checkpointing forwards advance).
        score: "product" (||G_y[:, i]|| * ||R[i, :]||), "residual_norm"
            (the reference code's effective rule) or "random" (an ablation).
        cache_rows: keep R[I, :] contiguous between refreshes (fastest, costs
            k*n extra values per layer); False (default, "lean") gathers W0[I, :]
            in each backward instead.
        seed: seed of the "random" score.
        sync_scores: under torch.distributed data parallelism, all-reduce the
            column norms of G_y (m floats) before top-k, so every rank keeps
            the same index set. Off: each rank selects from its own batch.
        k_multiple: a, the multiple k is rounded up to: k = min(m, ceil(ceil(p·m) / a)·a).
            None (default) resolves a from the device and dtype the layer's weight
            is on when its index is selected (``k_multiple_for``) and the dtype its products
            run in (the autocast dtype under autocast); an int >= 1 fixes it.
        grad_x_form: how a sampled layer's backward forms G_x: "split" (the kept-column product,
            then T·A0 and G_h·A added in two more passes over the (N, n) output) or "fused" (one
            GEMM [G_h | T | G_y[:, I]] · [A; A0; W0[I]]). None (default) takes the form of the
            weight's device type (``grad_x_form_for``). Dense layers and dropout > 0 run "split".

    Raises:
        ValueError: a field is outside its allowed range; the message names it.
    """

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    keep_ratio: float = 1.0
    svd_rank: int | None = None
    tau: int = 200
    tau_unit: str = "optimizer_steps"
    score: str = "product"
    cache_rows: bool = False
    seed: int = 0
    sync_scores: bool = False
    k_multiple: int | None = None
    grad_x_form: str | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.r, int) and self.r >= 1, "r", self.r, "an integer >= 1")
        _check(_is_real(self.alpha) and self.alpha > 0, "alpha", self.alpha, "a number > 0")
        _check(_is_real(self.dropout) and 0.0 <= self.dropout < 1.0, "dropout", self.dropout, "[0, 1)")
        _check(_is_real(self.keep_ratio) and 0.0 < self.keep_ratio <= 1.0, "keep_ratio", self.keep_ratio, "(0, 1]")
        _check(self.svd_rank is None or (isinstance(self.svd_rank, int) and self.svd_rank >= 0),
               "svd_rank", self.svd_rank, "None or an integer >= 0")
        _check(isinstance(self.tau, int) and self.tau >= 1, "tau", self.tau, "an integer >= 1")
        _check(self.tau_unit in TAU_UNITS, "tau_unit", self.tau_unit, " or ".join(TAU_UNITS))
        _check(self.score in SCORES, "score", self.score, ", ".join(SCORES))
        _check(isinstance(self.cache_rows, bool), "cache_rows", self.cache_rows, "True or False")
        _check(isinstance(self.seed, int), "seed", self.seed, "an integer")
        _check(isinstance(self.sync_scores, bool), "sync_scores", self.sync_scores, "True or False")
        _check(self.k_multiple is None or (isinstance(self.k_multiple, int) and not isinstance(self.k_multiple, bool)
                                           and self.k_multiple >= 1),
               "k_multiple", self.k_multiple, "None (auto) or an integer >= 1")
        _check(self.grad_x_form is None or self.grad_x_form in GRAD_X_FORMS, "grad_x_form", self.grad_x_form,
               "None (per device) or " + " or ".join(GRAD_X_FORMS))

    @property
    def scale(self) -> float:
        return self.alpha / self.r

    @property
    def is_dense(self) -> bool:
        """True when the activation gradient is the exact dense G_y·W0."""
        return self.keep_ratio == 1.0

    def resolved_svd_rank(self, m: int, n: int) -> int:
        """r0 for an m x n weight: the balanced rank when unset, clipped to min(m, n)."""
        if self.svd_rank is None:
            r0 = 0 if self.is_dense else balanced_rank(self.r)
        else:
            r0 = self.svd_rank
        return min(r0, m, n)

    def min_kept(self, m: int) -> int:
        """The smallest k over every device: ceil(p·m) under the auto multiple, else kept(m)."""
        if self.k_multiple is None:
            return min(m, max(1, math.ceil(self.keep_ratio * m - 1e-9)))
        return self.kept(m)

    def kept(self, m: int, device="cpu", dtype=None) -> int:
        """k, the number of kept output features of an m-row weight on (device, dtype).

        k = min(m, ceil(ceil(p·m) / a)·a) with a = k_multiple, or the auto multiple
        of (device, dtype) when k_multiple is None. k >= ceil(p·m) always; k == m
        means a dense activation gradient.
        """
        k = min(m, max(1, math.ceil(self.keep_ratio * m - 1e-9)))
        a = self.multiple_for(device, dtype)
        return min(m, -(-k // a) * a)

    def multiple_for(self, device="cpu", dtype=None) -> int:
        """a, the multiple k is rounded up to on (device, dtype): k_multiple, or the auto one."""
        return self.k_multiple if self.k_multiple is not None else k_multiple_for(device, dtype)


# The auto multiple of k per (device type, dtype class).
# CUDA 16-bit: 64 elements = 128 bytes, cuBLAS's tensor-core tile depth. The previous version's H200 run
#   (README, "On a GPU") found the kept-column GEMM at the paper's odd k far slower than at a multiple of 64.
# CUDA fp32 (and fp64): 16. 16 fp32 = 64 bytes keeps every row of the (N, k) gathered block 16-byte aligned,
#   which cuBLAS's vectorized and TF32 tensor-core kernels need, and is a multiple of TF32's k-step of 8;
#   it costs at most 15 extra columns. Not measured on a GPU yet (the gpu-targets suite's kernels section,
#   `celora-bench run gpu-targets --device cuda -k /kernels/`, times 1/8/16/64/128).
# CPU: 1. MKL has no alignment cliff like cuBLAS's: a multiple changed the kept-column product's time by
#   no more than run-to-run noise on a 2-core CPU, and rounding up only adds up to a-1 columns of work.
CUDA_HALF_MULTIPLE = 64
CUDA_FLOAT_MULTIPLE = 16
CPU_MULTIPLE = 1


def k_multiple_for(device="cpu", dtype=None) -> int:
    """The auto k multiple for a weight on device (torch.device or str) with dtype (None: fp32)."""
    kind = device.type if hasattr(device, "type") else str(device).split(":")[0]
    if kind != "cuda":
        return CPU_MULTIPLE
    half = dtype is not None and getattr(dtype, "itemsize", 4) == 2
    return CUDA_HALF_MULTIPLE if half else CUDA_FLOAT_MULTIPLE


# The default form of the sampled G_x per device type (CELoRAConfig.grad_x_form overrides it).
# cuda: "fused". The split form makes two extra passes over the (N, n) output (T·A0 and G_h·A added in
#   place); the fused GEMM takes the (N, r + r0) tail in its inner dimension instead (README, "Two forms
#   of G_x", gives the H200 estimate; `celora-bench run core-forms --device cuda` measures it).
# cpu: "split". The two forms measured side by side (`celora-bench run core-forms --quick`; the figures and
#   the file they come from are in the README, "Two forms of G_x") differ by no more than noise; the split
#   form keeps G_h·A in its own scope and is the reference, so it stays.
# Any other device type: "split" (the form every device runs correctly and the reference one).
GRAD_X_FORM = {"cuda": "fused", "cpu": "split"}


def grad_x_form_for(device="cpu") -> str:
    """The default G_x form of a sampled layer whose weight is on device (torch.device or str)."""
    kind = device.type if hasattr(device, "type") else str(device).split(":")[0]
    return GRAD_X_FORM.get(kind, "split")


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check(ok: bool, field: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"CELoRAConfig.{field}={value!r} is invalid; allowed: {allowed}")
