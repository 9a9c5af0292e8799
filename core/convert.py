"""Applies CE-LoRA to a transformers model (or a peft LoRA model) and saves peft-loadable adapters."""
from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, replace

import torch
from torch import nn

from core import selection
from core.config import CELoRAConfig, balanced_rank
from core.layer import CELoRALinear, SVDSplit

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The reference code's keep ratios; q, k and gate keep a dense backward.
PAPER_RATIOS = {"v_proj": 0.55, "o_proj": 0.55, "up_proj": 0.65, "down_proj": 0.65}
PRESETS = ("paper", "all", "dense")


@dataclass(frozen=True)
class Converted:
    """One converted module: name, (out, in) shape, keep ratio, LoRA rank, SVD rank, cache mode, and
    k, the kept features on the device and dtype the module had when converted (effective p = k / m)."""

    module: str
    shape: tuple[int, int]
    keep_ratio: float
    r: int
    r0: int
    cache_rows: bool
    k: int | None = None

    @property
    def effective_keep_ratio(self) -> float:
        """k / m, the keep ratio the layer runs at (k rounded up to the device's multiple)."""
        return self.keep_ratio if self.k is None else self.k / self.shape[0]


class Conversion(list):
    """The summary convert() returns: a list of Converted with a plain-text table."""

    def __str__(self) -> str:
        lines = [f"{'module':60s} {'shape':>12s} {'p':>5s} {'k':>6s} {'p_eff':>6s} {'r':>3s} {'r0':>3s}"]
        for c in self:
            lines.append(f"{c.module:60s} {f'{c.shape[0]}x{c.shape[1]}':>12s} {c.keep_ratio:5.2f} "
                         f"{c.k if c.k is not None else c.shape[0]:6d} {c.effective_keep_ratio:6.4f} "
                         f"{c.r:3d} {c.r0:3d}")
        return "\n".join(lines)


def preset(name: str, r: int = 16, alpha: float = 32.0, dropout: float = 0.0, keep_ratio: float = 0.5,
           **kw) -> dict[str, CELoRAConfig]:
    """A named plan: pattern -> config.

    paper: v, o at 0.55 and up, down at 0.65, LoRA rank and r0 both floor(7r/8)
    (the reference's balanced rank; with svd_rank given, LoRA rank r - floor(r0/7));
    q, k, gate dense LoRA of rank r. all: every projection at keep_ratio with r0
    balanced. dense: LoRA everywhere, no sampling.
    """
    base = CELoRAConfig(r=r, alpha=alpha, dropout=dropout, **kw)
    if name == "dense":
        return {f"*{p}": replace(base, keep_ratio=1.0, svd_rank=0) for p in PROJECTIONS}
    if name == "all":
        return {f"*{p}": _sampled(base, keep_ratio) for p in PROJECTIONS}
    if name == "paper":
        return {f"*{p}": _sampled(base, PAPER_RATIOS[p]) if p in PAPER_RATIOS else
                replace(base, keep_ratio=1.0, svd_rank=0) for p in PROJECTIONS}
    raise ValueError(f"unknown plan preset {name!r}; allowed: {', '.join(PRESETS)} or a mapping "
                     f"pattern -> CELoRAConfig")


def _sampled(base: CELoRAConfig, p: float) -> CELoRAConfig:
    if base.svd_rank is None:
        r = max(1, balanced_rank(base.r))              # balanced: LoRA rank = r0 = floor(7r/8)
        return replace(base, r=r, keep_ratio=p, svd_rank=r)
    return replace(base, r=max(1, base.r - base.svd_rank // 7), keep_ratio=p)


def _match(name: str, plan: dict[str, CELoRAConfig]) -> CELoRAConfig | None:
    for pattern, cfg in plan.items():
        if fnmatch.fnmatchcase(name, pattern):
            return cfg
    return None


def _peft_lora(module: nn.Module):
    """(base Linear, A, B, scale, dropout p) of a peft LoRA Linear with one active adapter, else None."""
    if not (hasattr(module, "base_layer") and hasattr(module, "lora_A") and isinstance(module.lora_A, nn.ModuleDict)):
        return None
    names = list(module.lora_A.keys())
    if len(names) != 1:
        raise ValueError(f"peft module with adapters {names}: convert one adapter at a time")
    a = names[0]
    drop = module.lora_dropout[a]
    return (module.base_layer, module.lora_A[a].weight, module.lora_B[a].weight, module.scaling[a],
            drop.p if isinstance(drop, nn.Dropout) else 0.0)


def convert(model: nn.Module, plan="paper", *, svd_cache: dict | None = None, svd: SVDSplit | None = None,
            **preset_kw) -> Conversion:
    """Replaces matching linear layers (and peft LoRA layers) with CELoRALinear, in place.

    plan: a preset name ("paper", "all", "dense"; preset_kw go to ``preset``) or a
    mapping from fnmatch patterns over module names (e.g. "*v_proj") to CELoRAConfig.
    A peft LoRA layer keeps its trained lora_A and lora_B and its alpha/r scale; the
    plan sets p, r0, tau and score. lm_head is never converted.

    svd_cache: a dict that convert fills with each layer's double-LoRA factors, (module name, r0,
    (m, n)) -> (B0, A0, a strided sample of W0), and reads before computing an SVD: converting the
    same model again (the same weights under the same names, e.g. a benchmark that builds the seed-0
    model once per preset) computes no SVD for a key already there. The factors are shared between
    the layers, not copied. Raises ValueError when a weight differs (values, device or dtype) from
    the one its cached factors were computed from.

    svd: the function giving a layer's double-LoRA factors (B0, A0) of (W0, r0), default
    selection.svd_split; with svd_cache it runs only for keys not there. A benchmark that times
    shapes only may pass one that computes one SVD per shape (suites/gpu_targets/common.py), or one
    that counts its calls.
    """
    if isinstance(plan, str):
        plan = preset(plan, **preset_kw)
    summary = Conversion()
    for name, module in list(model.named_modules()):
        if name.endswith("lm_head") or any(name.startswith(c.module + ".") for c in summary):
            continue                   # the lm_head, and the insides of a layer just converted
        peft_parts = _peft_lora(module)
        if peft_parts is None and not isinstance(module, nn.Linear):
            continue
        cfg = _match(name.replace(".base_layer", ""), plan)
        if cfg is None:
            continue
        if peft_parts is not None:
            base, A, B, scale, p_drop = peft_parts
            cfg = replace(cfg, r=A.shape[0], alpha=scale * A.shape[0], dropout=p_drop)
            new = CELoRALinear.from_linear(base, cfg, _svd_for(svd_cache, name, svd))
            with torch.no_grad():
                new.lora_A.copy_(A)
                new.lora_B.copy_(B)
        else:
            new = CELoRALinear.from_linear(module, cfg, _svd_for(svd_cache, name, svd))
        _set(model, name, new)
        summary.append(Converted(name, (new.out_features, new.in_features), cfg.keep_ratio, cfg.r, new.r0,
                                 cfg.cache_rows, new.k))
    if not summary:
        raise ValueError("convert: no module matched the plan; patterns: " + ", ".join(plan))
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, CELoRALinear):
            m.lora_A.requires_grad_(True)
            m.lora_B.requires_grad_(True)
    return summary


# Entries of W0 compared to tell whether cached factors belong to a weight: a strided sample, far
# cheaper than the SVD it guards (a full comparison would keep a copy of every W0).
FINGERPRINT = 64


def _fingerprint(W0: torch.Tensor) -> torch.Tensor:
    flat = W0.detach().reshape(-1)                                      # (m·n,)
    return flat[::max(1, flat.numel() // FINGERPRINT)][:FINGERPRINT].clone()


def _svd_for(cache: dict | None, name: str, svd: SVDSplit | None = None) -> SVDSplit | None:
    """The layer's SVD function (svd, None: selection.svd_split) backed by cache (None: no cache)."""
    if cache is None:
        return svd

    def split(W0: torch.Tensor, r0: int):
        if r0 == 0:
            return None, None
        key, mark = (name, r0, tuple(W0.shape)), _fingerprint(W0)
        if key in cache:
            B0, A0, seen = cache[key]
            if seen.device != mark.device or seen.dtype != mark.dtype or not torch.equal(seen, mark):
                raise ValueError(f"convert: svd_cache holds factors for {name} (r0={r0}, shape "
                                 f"{tuple(W0.shape)}) of another weight ({seen.dtype} on {seen.device}; this one "
                                 f"{mark.dtype} on {mark.device}); pass one cache per model (same weights, "
                                 f"device and dtype)")
            return B0, A0
        B0, A0 = (svd or selection.svd_split)(W0, r0)
        cache[key] = (B0, A0, mark)
        return B0, A0
    return split


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


# ---- adapters ----------------------------------------------------------------

def _peft_name(name: str) -> str:
    name = name.removeprefix("base_model.model.")
    return f"base_model.model.{name}"


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """lora_A / lora_B of every CE-LoRA layer under peft's key names."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, CELoRALinear):
            out[f"{_peft_name(name)}.lora_A.weight"] = m.lora_A.detach().contiguous().cpu()
            out[f"{_peft_name(name)}.lora_B.weight"] = m.lora_B.detach().contiguous().cpu()
    return out


def save_adapter(model: nn.Module, path: str, base_model_name_or_path: str | None = None) -> None:
    """Writes adapter_config.json and adapter_model.safetensors that peft.PeftModel.from_pretrained loads.

    Per-module ranks (the paper preset's balanced ranks) go to rank_pattern and
    alpha_pattern, so every module keeps its alpha / r scale.
    """
    from safetensors.torch import save_file

    layers = {n.removeprefix("base_model.model."): m for n, m in model.named_modules()
              if isinstance(m, CELoRALinear)}
    if not layers:
        raise ValueError("save_adapter: the model has no CE-LoRA layer")
    first = next(iter(layers.values())).config
    r, alpha = first.r, first.alpha
    os.makedirs(path, exist_ok=True)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name_or_path,
        "r": r, "lora_alpha": alpha, "lora_dropout": first.dropout, "bias": "none",
        "target_modules": sorted({n.split(".")[-1] for n in layers}),
        "rank_pattern": {n: m.config.r for n, m in layers.items() if m.config.r != r},
        "alpha_pattern": {n: m.config.alpha for n, m in layers.items() if m.config.alpha != alpha},
        "inference_mode": True, "fan_in_fan_out": False, "init_lora_weights": True,
    }
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    save_file(adapter_state_dict(model), os.path.join(path, "adapter_model.safetensors"))
