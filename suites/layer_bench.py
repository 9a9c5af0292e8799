"""setup(case) for one linear layer: dense LoRA, peft LoRA or CE-LoRA, as a measure.Target.

Shared by every layer-level suite: the same setup feeds timing, FLOPs and memory.
"""
from __future__ import annotations

import functools
import os

import torch
from torch import nn

import core
from celora_bench.cases import Case, Row
from celora_bench.flops import CONVENTION, fvcore_forward
from celora_bench.measure import Target
from celora_bench.memory import tensor_bytes
from celora_bench.render.tables import Table, by_case, mib, ms, parts_sum, table
from core import components as C
from core import gather
from core.flops import COMPONENTS, layer_flops, module_flops
from core.scopes import FWD_FROZEN, FWD_LORA, GRAD_A, GRAD_B, GRAD_H, GRAD_X_FROZEN, GRAD_X_LORA, SELECTION
from core.traffic import layer_bytes, module_bytes
from suites import factors

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}
ALPHA_PER_RANK = 2.0   # alpha = 2r, as the reference's r=16, alpha=32
STATE_WHAT = "persistent bytes beyond W0: lora_A, lora_B, B0, A0, residual norms, I, cached rows"


class _Wrap(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.lin = linear

    def forward(self, x):
        return self.lin(x)


def peft_linear(base: nn.Linear, rank: int, alpha: float, autocast: bool = True):
    """HF peft's LoRA Linear over base's W0 (shared, not copied). autocast=True is peft as users get it
    (adapters upcast to fp32); False keeps them in the weight's dtype."""
    import peft
    lin = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
    lin.weight, lin.bias = base.weight, base.bias          # a fresh module over the same W0: base can be wrapped again
    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=["lin"])
    return peft.get_peft_model(_Wrap(lin), cfg, autocast_adapter_dtype=autocast).base_model.model.lin


@functools.cache
def _data(m: int, n: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W0, x and G_y of one shape in fp32 on the CPU, drawn once per process (seed 0): every provider of the
    shape gets its own copy of the same values."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(m, n, generator=g) / n ** 0.5
    x = torch.randn(tokens, n, generator=g)
    # heavy-tailed per-feature gradient scales, as real G_y has (the brief's lognormal)
    scale = torch.exp(torch.randn(m, generator=g))
    gy = torch.randn(tokens, m, generator=g) * scale
    return w, x, gy


def config_of(case: Case) -> core.CELoRAConfig:
    """The layer's config; params lora_rank overrides the LoRA rank (the reference setting: r0 = r = 56
    against a dense r = 64), alpha staying 2r; params grad_x_form picks the G_x form (default: the
    device's)."""
    r = case.param("lora_rank", case.rank)
    return core.CELoRAConfig(r=r, alpha=ALPHA_PER_RANK * r, keep_ratio=case.keep_ratio,
                             svd_rank=case.svd_rank, tau=case.tau, score=case.score,
                             cache_rows=case.cache_rows, grad_x_form=case.param("grad_x_form"))


def build(case: Case):
    """(module, x, gy): the layer under test and a realistic input and output gradient."""
    dtype, device = DTYPES[case.dtype], torch.device(case.device)
    w, x0, gy0 = _data(case.m, case.n, case.tokens)
    base = nn.Linear(case.n, case.m, bias=False, device="meta")
    base.weight = nn.Parameter(w.to(device=device, dtype=dtype, copy=True), requires_grad=False)
    x = x0.to(device=device, dtype=dtype, copy=True).requires_grad_(True)
    gy = gy0.to(device=device, dtype=dtype, copy=True)
    if case.provider == "peft":
        module = peft_linear(base, case.rank, ALPHA_PER_RANK * case.rank)
        lora_B = module.lora_B["default"].weight
    else:
        # cheap double-LoRA factors: time and FLOPs depend on their shapes, not their values (the exact SVD of
        # a 2048x8192 W0 took 7.7 s on 2 cores, once per case and worker); accuracy suites keep svd_split
        module = core.CELoRALinear.from_linear(base, config_of(case), factors.lowrank_split)
        lora_B = module.lora_B
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # peft and we both init B to zeros; a trained B is not zero
        lora_B.copy_(torch.randn(lora_B.shape, generator=g).to(lora_B) * 0.01)
    return module, x, gy


def _lora_params(module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.requires_grad]


def setup(case: Case) -> Target:
    module, x, gy = build(case)
    params = [x] + _lora_params(module)
    y_kept = module(x)

    def fwd():
        return module(x)

    def bwd():
        return torch.autograd.grad(y_kept, params, gy, retain_graph=True)

    def fwd_bwd():
        return torch.autograd.grad(module(x), params, gy)

    def count():                         # a steady-state step: the index is already cached
        module(x).backward(gy)
        for p in params:
            p.grad = None

    dense = layer_flops(case.tokens, case.m, case.n, case.rank)
    analytic = {"fwd+bwd": sum(dense[c] for c in COMPONENTS)}
    dense_bytes = layer_bytes(case.tokens, case.m, case.n, case.rank, b=x.element_size())
    target = Target(whole={"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd_bwd}, count=count,
                    scopes=COMPONENTS + (SELECTION,), analytic=analytic,
                    state_bytes=tensor_bytes(*_lora_params(module)), state_what=STATE_WHAT,
                    bytes={"fwd+bwd": sum(dense_bytes[c] for c in COMPONENTS)})
    target.notes["fwd"] = lambda: _fvcore_note(module, x)        # a jit trace: made once, by prepare
    if case.provider == "peft":
        target.notes["fwd+bwd"] = "peft: autograd's backward, not split into components"
        return target
    _add_components(case, module, x, gy, y_kept, target)
    if case.provider == "dense":
        _add_roofs(case, module, gy, target)
    return target


def _fvcore_note(module, x) -> str:
    fv, note = fvcore_forward(module, (x.detach(),))
    return f"fvcore: {fv} FLOPs ({note})" if fv is not None else note


STREAM_BYTES = 64 << 20     # per array: far above this machine's last-level cache


@functools.cache
def _stream_arrays(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    n = STREAM_BYTES // 4
    return torch.ones(n, device=device), torch.empty(n, device=device)


def _add_roofs(case: Case, layer, gy, target: Target) -> None:
    """The machine's roofs measured in the rounds, like every component (celora_bench.roofline.peaks_in):
    a plain GEMM at G_y·W0's own shape, (N, m)·(m, n), and a STREAM copy; their best sample over the run
    is the peak the speed-of-light rows are judged against."""
    out = torch.empty(case.tokens, case.n, device=gy.device, dtype=gy.dtype)
    src, dst = _stream_arrays(case.device)
    W0 = layer.weight
    target.parts["roof.gemm"] = lambda: torch.mm(gy, W0, out=out)
    target.parts["roof.stream"] = lambda: dst.copy_(src)
    target.analytic.update({"roof.gemm": 2 * case.tokens * case.m * case.n, "roof.stream": 0})
    size = gy.element_size()
    target.bytes.update({"roof.gemm": size * (case.tokens * case.m + case.m * case.n + case.tokens * case.n),
                         "roof.stream": 2 * STREAM_BYTES})


def _add_components(case: Case, layer: core.CELoRALinear, x, gy, y_kept, target: Target) -> None:
    """Each component alone, on the tensors saved by the real forward above."""
    node = y_kept.grad_fn
    while "CELoRAFunction" not in type(node).__name__:
        node = node.next_functions[0][0]
    xd, h, A, B, _ = node.saved_tensors
    x2 = x.detach().reshape(-1, case.n)                  # (N, n)
    s, W0, bias = layer.scale, layer.weight, layer.bias
    torch.autograd.grad(y_kept, [x] + _lora_params(layer), gy, retain_graph=True)  # first refresh
    g_h, t = C.grad_h_fused(gy, B, s, layer.skinny_operand())   # (N, r), (N, r0) or None: as the Function
    y_buf = y_kept.detach().clone()                      # in-place targets, reused
    gx_buf = torch.zeros_like(x2)
    target.parts = {
        FWD_FROZEN: lambda: C.fwd_frozen(x2, W0, bias),
        FWD_LORA: lambda: C.fwd_lora(y_buf, xd, A, B, s),
        GRAD_H: lambda: C.grad_h_fused(gy, B, s, layer.skinny_operand()),
        GRAD_B: lambda: C.grad_B(gy, h, s),
        GRAD_A: lambda: C.grad_A(g_h, xd),
        GRAD_X_LORA: lambda: C.grad_x_lora(gx_buf, g_h, A),
        GRAD_X_FROZEN: lambda: layer.grad_x_frozen(gy, t),
    }
    form = layer.grad_x_form
    if form == "fused":              # what the Function runs: G_h·A inside the one GEMM, no grad_x_lora
        left, _ = layer.fused_grad_h(gy, B)
        del target.parts[GRAD_X_LORA]
        target.parts[GRAD_H] = lambda: layer.fused_grad_h(gy, B)
        target.parts[GRAD_X_FROZEN] = lambda: layer.grad_x_fused(gy, left, A)
        target.notes[GRAD_X_FROZEN] = "fused form: G_y[:, I]·rows + T·A0 + G_h·A in one GEMM"
    counts = module_flops(layer, case.tokens)
    target.analytic.update({c: v for c, v in counts.items() if c in target.parts or c == SELECTION})
    target.analytic["fwd+bwd"] = sum(counts[c] for c in COMPONENTS)
    target.extra[GRAD_X_FROZEN] = {"k": layer.k, "k_multiple": layer.k_multiple, "p_eff": layer.k / case.m,
                                         "r0": layer.r0, "grad_x_form": form,
                                         "gather": gather.methods_used().get(W0.device.type, "")}
    traffic = module_bytes(layer, case.tokens, gy.element_size())
    if not layer.dense and layer.r0 == 0 and not case.cache_rows:
        # the kept-column product's two halves alone, for the roofline: the gather is memory-bound, the
        # product compute-bound, so cutting FLOPs by p does not cut time by p
        rows = W0.index_select(0, layer.idx)                                  # (k, n)
        kept = gather.gather_columns(gy, layer.idx)                           # (N, k)
        target.parts["detail.gather"] = lambda: gather.gather_columns(gy, layer.idx)
        target.parts["detail.kept_product"] = lambda: torch.mm(kept, rows)
        target.analytic.update({"detail.gather": 0, "detail.kept_product": 2 * case.tokens * layer.k * case.n})
    target.bytes = {c: v for c, v in traffic.items() if c in target.parts or c == SELECTION}
    target.bytes["fwd+bwd"] = sum(traffic[c] for c in COMPONENTS)
    if not layer.dense:
        target.parts[SELECTION] = lambda: layer.refresh(gy)
        target.amortized["selection.amortized"] = (SELECTION, case.tau)
    target.state_bytes = tensor_bytes(layer.lora_A, layer.lora_B, layer.B0, layer.A0, layer.res_sq,
                                      layer.idx, layer.rows)


def tables(rows: list[Row]) -> list[Table]:
    """The layer suites' per-case table: one line per case: the whole fwd+bwd, the sum of its parts, G_y·W0,
    selection, memory."""
    if not rows:
        return []
    t = table(f"{rows[0].case.suite}: per case",
              ["model / layer", "N", "r", "provider", "fwd+bwd ms", "Σparts ms", "gap %", "G_y·W0 ms",
               "G_y·W0 GFLOP", "sel. amort. ms", "fwd peak MiB", "bwd peak MiB", "state MiB"],
              ("model / layer", "provider"),
              f"times: median ms over raw samples (* = IQR/median > 10%); memory MiB; {CONVENTION}")
    cases = by_case(rows)
    for case in sorted(cases, key=lambda c: (c.model, c.tokens, c.rank, c.layer, c.provider != "dense",
                                             c.provider != "peft", c.keep_ratio, c.svd_rank, c.cache_rows)):
        comps = cases[case]
        whole, ps, gx = comps.get("fwd+bwd"), parts_sum(comps), comps.get(GRAD_X_FROZEN)
        gap = (f"{(whole.time.median - ps) / whole.time.median * 100:+.1f}"
               if ps and whole is not None and whole.time else "—")
        t.add_row(f"{case.model} {case.layer} {case.m}x{case.n}", case.tokens, case.rank, case.label,
                  ms(whole), f"{ps * 1e3:.2f}" if ps else "—", gap, ms(gx),
                  f"{gx.flops_analytic / 1e9:.3f}" if gx and gx.flops_analytic is not None else "—",
                  ms(comps.get("selection.amortized")), *(mib(comps[k].mem_bytes) if k in comps else "—"
                                                          for k in ("fwd", "bwd", "state")))
    return [t]


ROOFLINE_CAPTION = ("roofline from the run's calibrated peaks: each component of dense LoRA and of CE-LoRA "
                    "(r0 = 0, lean) at its arithmetic intensity; the distance below the roof is 1 - SOL")


def layer_groups(rows: list[Row]) -> dict:
    """(model, N, r, dtype, device) -> {case: {component: Row}} for layer-level cases of dense LoRA and
    CE-LoRA (a timed G_y·W0 and fwd+bwd; whole-model rows have neither)."""
    out: dict = {}
    for case, comps in by_case(rows).items():
        if case.provider in ("dense", "celora") and GRAD_X_FROZEN in comps and "fwd+bwd" in comps:
            out.setdefault((case.model, case.tokens, case.rank, case.dtype, case.device), {})[case] = comps
    return out


def rooflines(rows: list[Row], out_dir: str, machine: dict | None = None) -> list[str]:
    """One roofline per layer group from the run's peaks (none without a calibration): dense LoRA and CE-LoRA
    r0 = 0 lean, each component a point."""
    from celora_bench import roofline
    from celora_bench.render.figures import roofline_plot

    peaks = roofline.peaks_in(rows, machine or {})
    if peaks is None:
        return []
    paths = []
    for (model, N, r, dtype, device), cases in sorted(layer_groups(rows).items()):
        shown = [row for comps in cases.values() for row in comps.values()
                 if row.case.provider == "dense" or (row.case.svd_rank == 0 and not row.case.cache_rows)]
        got = roofline_plot(shown, peaks, f"roofline: {model}, N={N}, r={r}, {dtype}, {device}",
                            os.path.join(out_dir, f"roofline-{model}-N{N}-r{r}-{dtype}-{device}.png"))
        if got:
            paths.append(got)
    return paths
