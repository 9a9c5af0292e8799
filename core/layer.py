"""CELoRALinear: a LoRA linear layer whose frozen activation gradient can be approximated."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from core import components as C
from core import selection
from core.config import CELoRAConfig
from core.function import CELoRAFunction


class CELoRALinear(nn.Module):
    """y = x W0ᵀ + b + (alpha / r) · (dropout(x) Aᵀ) Bᵀ, W0 and b frozen.

    The backward is exact for A, B and the LoRA part of G_x. The frozen part
    G_y W0 is dense when k (ceil(p·m) rounded up to the k multiple of the weight's
    device and dtype, ``CELoRAConfig.kept``) equals m, and otherwise

        G_y W0 ≈ (G_y B0) A0 + G_y[:, I] R[I, :],    R = W0 − B0 A0
               = G_y[:, I] W0[I, :] + G_y[:, Ī] B0[Ī, :] A0,

    with I the top-k output features by the configured score, refreshed every
    ``tau`` steps (``core.step``), on the first backward, and when k changes
    (the layer was moved to another device or dtype).

    Args:
        weight: frozen W0, (m, n); shared, not copied.
        bias: frozen bias (m,) or None.
        config: the CELoRAConfig.

    Raises:
        ValueError: the input's last dimension or dtype does not match W0.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, config: CELoRAConfig):
        super().__init__()
        m, n = weight.shape
        self.config = config
        self.in_features, self.out_features = n, m
        self.scale = config.scale
        self._k: int | None = None                      # resolved on first use, per device and dtype
        sparse = config.min_kept(m) < m                 # sampled on some device
        self.r0 = config.resolved_svd_rank(m, n) if sparse else 0
        self.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        kw = dict(device=weight.device, dtype=weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(config.r, n, **kw))
        self.lora_B = nn.Parameter(torch.zeros(m, config.r, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as peft does
        B0, A0 = selection.svd_split(self.weight, self.r0)
        self.register_buffer("B0", B0, persistent=False)
        self.register_buffer("A0", A0, persistent=False)
        res_sq = selection.residual_row_sq_norms(self.weight, B0, A0) if sparse else None
        self.register_buffer("res_sq", res_sq, persistent=False)
        self.register_buffer("idx", None, persistent=False)
        self.register_buffer("rows", None, persistent=False)
        self.register_buffer("B0_out", None, persistent=False)    # lean: B0 with rows I zeroed
        self.steps = 0
        self.refreshed_at: int | None = None
        self.refresh_count = 0
        self._force_refresh = False
        self._generator = torch.Generator().manual_seed(config.seed)

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: CELoRAConfig) -> "CELoRALinear":
        """Wraps an existing nn.Linear (its weight is shared and frozen)."""
        return cls(linear.weight, linear.bias, config)

    @property
    def k(self) -> int:
        """The number of kept features for the weight's current device and dtype (cached; ``_apply``,
        which every ``.to()``/``.cuda()``/``.half()`` goes through, clears the cache)."""
        if self._k is None:
            w = self.weight
            self._k = self.config.kept(self.out_features, w.device, w.dtype)
        return self._k

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._k = None                          # device or dtype may have changed: resolve k again
        return out

    @property
    def effective_keep_ratio(self) -> float:
        """k / m: the keep ratio the layer actually runs at (>= the configured p)."""
        return self.k / self.out_features

    @property
    def dense(self) -> bool:
        return self.k == self.out_features

    # ---- index state -------------------------------------------------------

    def step(self) -> None:
        """Advances the optimizer-step counter (a no-op when tau counts forward calls)."""
        if self.config.tau_unit == "optimizer_steps":
            self.steps += 1

    def refresh_index(self) -> None:
        """Forces a refresh of I (and R[I, :]) at the next backward."""
        self._force_refresh = True

    def refresh_due(self) -> bool:
        if self.dense:
            return False
        return (self.idx is None or self._force_refresh or self.idx.numel() != self.k
                or self.steps - self.refreshed_at >= self.config.tau)

    def refresh(self, gy: Tensor) -> None:
        """Selects I from G_y (N, m) and rebuilds the cached rows now."""
        reduce = _all_reduce_sum if self.config.sync_scores and _distributed() else None
        self.idx = selection.select(self.config.score, gy, self.res_sq, self.k, self._generator, reduce)
        if self.config.cache_rows:
            self.rows = selection.residual_rows(self.weight, self.idx, self.B0, self.A0)
        elif self.B0 is not None:
            self.B0_out = selection.zero_rows(self.B0, self.idx)
        self.refreshed_at = self.steps
        self.refresh_count += 1
        self._force_refresh = False

    def skinny_operand(self) -> Tensor | None:
        """C with G_y·C fused into bwd.grad_h: B0 (cached rows), B0 with rows I zeroed (lean),
        or None (dense, or r0 = 0). Valid after the refresh of the current backward."""
        if self.dense or self.B0 is None:
            return None
        return self.B0 if self.config.cache_rows else self.B0_out

    def grad_x_frozen(self, gy: Tensor, t: Tensor | None = None) -> Tensor:
        """The frozen part of G_x for G_y (N, m): dense or double-LoRA + AMM.

        t: G_y·skinny_operand() (N, r0) when already computed (the Function fuses it
        into bwd.grad_h); None computes it here.
        """
        if self.dense:
            return C.grad_x_frozen_dense(gy, self.weight)
        if self.refresh_due():        # the Function refreshes first; kept for direct callers
            self.refresh(gy)
        if t is None and self.B0 is not None:
            t = C.skinny(gy, self.skinny_operand())              # (N, m) @ (m, r0) -> (N, r0)
        rows = self.rows if self.config.cache_rows else self.weight.index_select(0, self.idx)  # (k, n)
        return C.grad_x_frozen_amm(gy, self.idx, rows, t, self.A0)

    # ---- forward -----------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input last dimension {x.shape[-1]} does not match in_features "
                             f"{self.in_features} (input shape {tuple(x.shape)})")
        if x.dtype != self.weight.dtype:
            raise ValueError(f"input dtype {x.dtype} does not match the weight dtype {self.weight.dtype}")
        if self.config.tau_unit == "forward_calls":
            self.steps += 1
        x2 = x.reshape(-1, self.in_features)                      # (..., n) -> (N, n)
        mask_scale = None
        p = self.config.dropout
        if self.training and p > 0:
            mask_scale = torch.empty_like(x2).bernoulli_(1 - p).div_(1 - p)  # (N, n)
        y = CELoRAFunction.apply(x2, self.lora_A, self.lora_B, self, mask_scale)
        return y.reshape(*x.shape[:-1], self.out_features)       # (N, m) -> (..., m)

    def extra_repr(self) -> str:
        c = self.config
        return (f"in={self.in_features}, out={self.out_features}, r={c.r}, p={c.keep_ratio}, "
                f"k={self.k} (p_eff={self.effective_keep_ratio:.4f}), r0={self.r0}, tau={c.tau}, "
                f"score={c.score}, cache_rows={c.cache_rows}")


class LoRALinear(CELoRALinear):
    """Dense LoRA with the same decomposed backward: keep_ratio 1, svd_rank 0."""

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: CELoRAConfig | None = None, *,
                    r: int = 16, alpha: float = 32.0, dropout: float = 0.0) -> "LoRALinear":
        if config is None:
            config = CELoRAConfig(r=r, alpha=alpha, dropout=dropout)
        if config.keep_ratio != 1.0 or config.svd_rank not in (None, 0):
            raise ValueError(f"LoRALinear is dense: keep_ratio must be 1 and svd_rank 0 or None, "
                             f"got keep_ratio={config.keep_ratio}, svd_rank={config.svd_rank}")
        return cls(linear.weight, linear.bias, config)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduce_sum(t: Tensor) -> None:
    """Sums the (m,) score statistic over data-parallel ranks (every rank refreshes at the same step)."""
    torch.distributed.all_reduce(t)


def celora_modules(model: nn.Module):
    """Every CELoRALinear inside model."""
    return [m for m in model.modules() if isinstance(m, CELoRALinear)]


def step(model: nn.Module) -> None:
    """Advances the optimizer-step counter of every CE-LoRA layer in model.

    Call once per optimizer step (not per micro-batch), or let
    ``attach_optimizer`` do it.
    """
    for m in celora_modules(model):
        m.step()


def attach_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Calls ``step(model)`` after every ``optimizer.step()``; returns the hook handle."""
    return optimizer.register_step_post_hook(lambda *_: step(model))
