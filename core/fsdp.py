"""CE-LoRA under FSDP2 (``torch.distributed.fsdp.fully_shard``): what a user must do, and why.

Order: ``core.convert`` first, then ``fully_shard`` (each decoder block, then the
root), then build the optimizer over the sharded parameters. Converting first
matters: B0, A0 and the residual row norms are computed at construction from the
full W0, and they are buffers, which FSDP2 does not shard, so every rank holds the
same full copies (m·r0 + r0·n + m values per layer; the index I and, with
``cache_rows``, the k·n cached rows are full on every rank too).

The backward reads W0 through the layer (``layer.weight``), not a saved tensor.
FSDP2 re-gathers a block's parameters in its pre-backward hook, before any
backward inside the block runs, so ``layer.weight`` is then the full, plain
(m, n) tensor, not a DTensor shard (tests/test_fsdp.py checks it).

Mixed precision (``MixedPrecisionPolicy(param_dtype=torch.bfloat16, ...)``) casts
the gathered parameters only; the buffers keep their dtype, and the backward's
G_y·B0 would mix bf16 with fp32. ``cast_buffers`` puts them in the compute dtype.
(Under ``torch.autocast`` with fp32 parameters nothing is needed: the layer casts its frozen
tensors to the autocast dtype itself.)
"""
from __future__ import annotations

import torch
from torch import nn

from core.layer import celora_modules

# Buffers the backward multiplies with G_y or W0 rows; res_sq stays fp32 (it scores, it is not multiplied).
COMPUTE_BUFFERS = ("B0", "A0", "rows", "B0_out")


def cast_buffers(model: nn.Module, dtype: torch.dtype) -> int:
    """Casts every CE-LoRA layer's compute buffers to dtype (the FSDP2 param_dtype); returns how many.

    Call once, before the first forward, when FSDP2's MixedPrecisionPolicy has a
    param_dtype different from the model's. The selection statistics stay fp32.
    """
    n = 0
    for layer in celora_modules(model):
        for name in COMPUTE_BUFFERS:
            t = getattr(layer, name, None)
            if t is not None and t.is_floating_point() and t.dtype != dtype:
                setattr(layer, name, t.to(dtype))
                n += 1
    return n


def replicated_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of CE-LoRA state that every rank holds in full (buffers are not sharded), by buffer name."""
    out: dict[str, int] = {}
    for layer in celora_modules(model):
        for name, t in layer.named_buffers(recurse=False):
            if t is not None:
                out[name] = out.get(name, 0) + t.numel() * t.element_size()
    return out
