"""CELoRAConfig: every knob of a CE-LoRA layer, validated once."""
from __future__ import annotations

import math
from dataclasses import dataclass

SCORES = ("product", "residual_norm", "random")
TAU_UNITS = ("optimizer_steps", "forward_calls")


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

    def kept(self, m: int) -> int:
        """k = ceil(p * m), the number of kept output features."""
        return min(m, max(1, math.ceil(self.keep_ratio * m - 1e-9)))


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check(ok: bool, field: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"CELoRAConfig.{field}={value!r} is invalid; allowed: {allowed}")
