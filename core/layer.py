"""CELoRALinear: a LoRA linear layer whose frozen activation gradient can be approximated."""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from core import components as C
from core import selection
from core.config import CELoRAConfig, grad_x_form_for
from core.function import CELoRAFunction

SVDSplit = Callable[[Tensor, int], "tuple[Tensor | None, Tensor | None]"]   # (W0, r0) -> (B0, A0)


class CELoRALinear(nn.Module):
    """y = x W0ᵀ + b + (alpha / r) · (dropout(x) Aᵀ) Bᵀ, W0 and b frozen.

    The backward is exact for A, B and the LoRA part of G_x. The frozen part
    G_y W0 is dense when k (ceil(p·m) rounded up to the k multiple of the weight's
    device and the dtype the products run in, ``CELoRAConfig.kept``) equals m, and otherwise

        G_y W0 ≈ (G_y B0) A0 + G_y[:, I] R[I, :],    R = W0 − B0 A0
               = G_y[:, I] W0[I, :] + G_y[:, Ī] B0[Ī, :] A0,

    with I the top-k output features by the configured score, refreshed every
    ``tau`` steps (``core.step``), on the first backward, and when k changes
    (the layer was moved to another device or dtype, or runs under another autocast dtype).
    A sampled layer forms G_x in the "split" or "fused" form (``grad_x_form``; core.components).

    Under ``torch.autocast`` (fp32 weights, e.g. ``transformers.Trainer(bf16=True)``) the products
    run in the autocast dtype: x, A and B are cast with differentiable casts (so A and B keep fp32
    gradients and x gets a gradient in its own dtype, as nn.Linear under autocast gives), the frozen
    tensors are cast inside the Function (W0 again in the backward, not saved), and the selection
    scores stay fp32.

    Args:
        weight: frozen W0, (m, n); shared, not copied.
        bias: frozen bias (m,) or None.
        config: the CELoRAConfig.
        svd: the function giving the double-LoRA factors (B0, A0) of (W0, r0); None: selection.svd_split.
            ``core.convert`` passes one backed by its ``svd_cache``, so a model converted again reuses them.

    Raises:
        ValueError: the input's last dimension does not match W0, or (outside autocast) its dtype.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, config: CELoRAConfig, svd: SVDSplit | None = None):
        super().__init__()
        m, n = weight.shape
        self.config = config
        self.in_features, self.out_features = n, m
        self.scale = config.scale
        self._resolved: _Resolved | None = None         # k, form, layout: on first use, per device and dtype
        self._compute_dtype: torch.dtype | None = None  # the last forward's autocast dtype, if not the weight's
        sparse = config.min_kept(m) < m                 # sampled on some device
        self.r0 = config.resolved_svd_rank(m, n) if sparse else 0
        self.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        kw = dict(device=weight.device, dtype=weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(config.r, n, **kw))
        self.lora_B = nn.Parameter(torch.zeros(m, config.r, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as peft does
        B0, A0 = (svd or selection.svd_split)(self.weight, self.r0)
        self.register_buffer("B0", B0, persistent=False)
        self.register_buffer("A0", A0, persistent=False)
        res_sq = selection.residual_row_sq_norms(self.weight, B0, A0) if sparse else None
        self.register_buffer("res_sq", res_sq, persistent=False)
        self.register_buffer("idx", None, persistent=False)
        self.register_buffer("rows", None, persistent=False)       # cached: R[I, :], or the fused right operand
        self._rows_layout: C.FusedLayout | None = None              # the fused layout rows was built in, if any
        self.register_buffer("B0_out", None, persistent=False)    # lean: B0 with rows I zeroed
        self.steps = 0
        self.refreshed_at: int | None = None
        self.refresh_count = 0
        self._force_refresh = False
        self._generator = torch.Generator().manual_seed(config.seed)

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: CELoRAConfig, svd: SVDSplit | None = None) -> "CELoRALinear":
        """Wraps an existing nn.Linear (its weight is shared and frozen); svd as in the class."""
        return cls(linear.weight, linear.bias, config, svd)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the layer's products run in: the autocast dtype of the last forward, else the weight's."""
        return self._compute_dtype or self.weight.dtype

    def _resolve(self) -> _Resolved:
        """k, its multiple, the G_x form and the fused layout for the weight's device and the compute
        dtype. Cached: ``_apply`` (every ``.to()``/``.cuda()``/``.half()``) and a forward under another
        autocast dtype clear it; the backward reads it several times per call."""
        if self._resolved is None:
            w, c = self.weight, self.config
            dtype = self.compute_dtype
            k = c.kept(self.out_features, w.device, dtype)
            a = c.multiple_for(w.device, dtype)
            if k == self.out_features or c.dropout > 0:
                form = "split"
            else:
                form = c.grad_x_form or grad_x_form_for(w.device)
            self._resolved = _Resolved(k, a, form, C.fused_layout(k, c.r, self.r0, a))
        return self._resolved

    @property
    def k(self) -> int:
        """The number of kept features for the weight's device and the compute dtype (under autocast,
        the autocast dtype: 16-bit CUDA GEMMs want k a multiple of 64 even with fp32 weights)."""
        return (self._resolved or self._resolve()).k

    @property
    def k_multiple(self) -> int:
        """The multiple k is rounded up to on the weight's device and the compute dtype."""
        return (self._resolved or self._resolve()).k_multiple

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._resolved = None                   # device or dtype may have changed: resolve k again
        self._compute_dtype = None
        return out

    @property
    def grad_x_form(self) -> str:
        """"split" or "fused": how this layer's backward forms G_x (core.components). The config's
        grad_x_form, else its device type's default (core.config.GRAD_X_FORM); dense layers and
        dropout > 0 always run "split"."""
        return (self._resolved or self._resolve()).form

    def fused_layout(self) -> C.FusedLayout:
        """The blocks of the fused form's operands for the current k (core.components.FusedLayout)."""
        return (self._resolved or self._resolve()).layout

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
        """Selects I from G_y (N, m) and rebuilds the cached rows (in G_y's dtype) now."""
        reduce = _all_reduce_sum if self.config.sync_scores and _distributed() else None
        self.idx = selection.select(self.config.score, gy, self.res_sq, self.k, self._generator, reduce)
        self._build_rows(gy.dtype)
        self.refreshed_at = self.steps
        self.refresh_count += 1
        self._force_refresh = False

    def _build_rows(self, dtype: torch.dtype) -> None:
        """The index state for I: R[I, :] (cached; inside the fused right operand in the fused form),
        or B0 with rows I zeroed (lean), in dtype. R[I, :] is computed in the weight's dtype."""
        if self.config.cache_rows:
            rows = selection.residual_rows(self.weight, self.idx, self.B0, self.A0)     # (k, n)
            self._rows_layout = self.fused_layout() if self.grad_x_form == "fused" else None
            if self._rows_layout is None:
                self.rows = rows.to(dtype)
            else:
                self.rows = C.right_operand_cached(rows, self.A0, self._rows_layout, dtype)  # (K, n)
        elif self.B0 is not None:
            self.B0_out = selection.zero_rows(self.B0, self.idx).to(dtype)

    @property
    def kept_rows(self) -> Tensor | None:
        """R[I, :] (k, n) of the cached mode (a view into the fused right operand in the fused form)."""
        lay = self._rows_layout
        return self.rows if lay is None or self.rows is None else self.rows[lay.w:lay.w + lay.k]

    def skinny_operand(self) -> Tensor | None:
        """C with G_y·C fused into bwd.grad_h: B0 (cached rows), B0 with rows I zeroed (lean),
        or None (dense, or r0 = 0). Valid after the refresh of the current backward."""
        if self.dense or self.B0 is None:
            return None
        return self.B0 if self.config.cache_rows else self.B0_out

    def grad_x_frozen(self, gy: Tensor, t: Tensor | None = None) -> Tensor:
        """The frozen part of G_x for G_y (N, m): dense or double-LoRA + AMM, the split form's
        bwd.grad_x_frozen. Frozen tensors are cast to G_y's dtype (a no-op outside autocast).

        t: G_y·skinny_operand() (N, r0) when already computed (the Function fuses it
        into bwd.grad_h); None computes it here.
        """
        dtype = gy.dtype
        if self.dense:
            return C.grad_x_frozen_dense(gy, _as(self.weight, dtype))
        if self.refresh_due():        # the Function refreshes first; kept for direct callers
            self.refresh(gy)
        if t is None and self.B0 is not None:
            t = C.skinny(gy, _as(self.skinny_operand(), dtype))         # (N, m) @ (m, r0) -> (N, r0)
        if self.config.cache_rows:
            rows = _as(self.kept_rows, dtype)                            # (k, n)
        else:
            rows = _as(self.weight.index_select(0, self.idx), dtype)    # (m, n) -> (k, n)
        return C.grad_x_frozen_amm(gy, self.idx, rows, t, _as(self.A0, dtype))

    # ---- the fused form: what the Function runs when grad_x_form == "fused" --------

    def fused_grad_h(self, gy: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
        """(L, G_h): the fused form's bwd.grad_h. L (N, K) is the left operand of grad_x_fused, with
        G_y [s·B | 0 | C | 0] = [G_h | 0 | T | 0] in its first w columns; G_h = L[:, :r], a view.
        B: (m, r) in G_y's dtype. 2·N·m·w FLOPs. Valid after the refresh of the current backward."""
        lay = self.fused_layout()
        left = C.fused_left(gy, lay)                                             # (N, K)
        g_h, _ = C.grad_h_fused(gy, B, self.scale, self.skinny_operand(), out=left[:, :lay.w])
        return left, g_h

    def grad_x_fused(self, gy: Tensor, left: Tensor, A: Tensor) -> Tensor:
        """G_x = G_h A + T A0 + G_y[:, I] rows in one GEMM: the fused form's bwd.grad_x_frozen.

        left: L from fused_grad_h(gy, B) (its first w columns filled); A: (r, n) in G_y's dtype.
        Gathers G_y[:, I] into L, builds the right operand [A; 0; A0; 0; rows; 0] (lean: W0[I, :]
        gathered into it; cached: A copied into the one kept since the refresh) and multiplies:
        (N, K) @ (K, n) -> (N, n), 2·N·K·n FLOPs. Suites time the fused product alone with this.
        """
        lay = self.fused_layout()
        C.gather_into_left(left, gy, self.idx, lay)
        if self.config.cache_rows:
            if self._rows_layout != lay:          # built for another layout (device or dtype moved): same I
                self._build_rows(gy.dtype)
            right = _as(self.rows, gy.dtype)      # (K, n): itself, unless cast since (e.g. fsdp.cast_buffers)
            right[:lay.r].copy_(A.detach())       # the current A into its rows; A0 and the zeros stay
        else:
            right = C.right_operand_lean(self.weight, self.idx, A, self.A0, lay)
        return C.grad_x_fused(left, right)

    # ---- forward -----------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input last dimension {x.shape[-1]} does not match in_features "
                             f"{self.in_features} (input shape {tuple(x.shape)})")
        dtype = _autocast_dtype(x)                                # None outside autocast
        if dtype is None and x.dtype != self.weight.dtype:
            raise ValueError(f"input dtype {x.dtype} does not match the weight dtype {self.weight.dtype}")
        compute = dtype if dtype != self.weight.dtype else None
        if compute != self._compute_dtype:                        # k and the layout follow the compute dtype
            self._compute_dtype, self._resolved = compute, None
        if self.config.tau_unit == "forward_calls":
            self.steps += 1
        x2 = x.reshape(-1, self.in_features)                      # (..., n) -> (N, n)
        A, B = self.lora_A, self.lora_B
        if dtype is not None:         # differentiable casts: the grads reach x, A, B in their own dtypes
            x2, A, B = x2.to(dtype), A.to(dtype), B.to(dtype)
        mask_scale = None
        p = self.config.dropout
        if self.training and p > 0:
            mask_scale = torch.empty_like(x2).bernoulli_(1 - p).div_(1 - p)  # (N, n)
        y = CELoRAFunction.apply(x2, A, B, self, mask_scale, dtype)
        return y.reshape(*x.shape[:-1], self.out_features)       # (N, m) -> (..., m)

    def extra_repr(self) -> str:
        c = self.config
        return (f"in={self.in_features}, out={self.out_features}, r={c.r}, p={c.keep_ratio}, "
                f"k={self.k} (p_eff={self.effective_keep_ratio:.4f}), r0={self.r0}, tau={c.tau}, "
                f"score={c.score}, cache_rows={c.cache_rows}, grad_x_form={self.grad_x_form}")


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


class _Resolved(NamedTuple):
    """What a layer resolves from its device and compute dtype (CELoRALinear._resolve)."""

    k: int
    k_multiple: int
    form: str
    layout: C.FusedLayout


def _as(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """t in dtype: t itself when it already is (a cheaper no-op than t.to(dtype) on the backward's path)."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def _autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The autocast dtype for x's device type when autocast is enabled there, else None."""
    kind = x.device.type
    try:
        on = torch.is_autocast_enabled(kind)
    except RuntimeError:                          # a device type autocast does not know (e.g. meta)
        return None
    return torch.get_autocast_dtype(kind) if on else None


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
