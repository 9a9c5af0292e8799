"""torchrun support: one process per rank, results written once, by rank 0, with per-rank timings.

Under torchrun (WORLD_SIZE > 1) the CLI joins the process group: nccl on CUDA when the
machine has a GPU per rank (torch.cuda.device_count() >= WORLD_SIZE), gloo on the CPU otherwise
(two ranks on a one-GPU machine would both need their own device: rank 1 crashes on cuda:1; init refuses
CUDA there, device_for says which device ranks take). Every rank runs the same cases in the same order;
timing uses a fixed number of samples so that every rank makes the same collective calls.
``wrap`` is the one place a model gets its data parallelism: DDP (every rank
holds all of W0) or FSDP2 (``fully_shard``: each rank holds 1/world of it).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

_state = {"on": False}


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def gpu_per_rank(world: int) -> bool:
    """True when every one of `world` ranks can have its own CUDA device."""
    return torch.cuda.is_available() and torch.cuda.device_count() >= world


def backend_for(device: str, world: int) -> str:
    """nccl for CUDA ranks with a GPU each, gloo for everything else."""
    return "nccl" if device.startswith("cuda") and gpu_per_rank(world) else "gloo"


def device_for(world: int) -> str:
    """The device data-parallel ranks run on: "cuda" with a GPU per rank, else "cpu" (with gloo)."""
    return "cuda" if gpu_per_rank(world) else "cpu"


def init(device: str) -> bool:
    """Joins the process group when launched by torchrun; returns whether it did.

    Raises:
        ValueError: device is CUDA but the machine has fewer GPUs than ranks (run with --device cpu:
            the ranks then share the CPU over gloo).
    """
    world = world_size_from_env()
    if world <= 1:
        return False
    if device.startswith("cuda") and not gpu_per_rank(world):
        raise ValueError(f"device {device!r} under torchrun needs a CUDA GPU per rank: {world} ranks, "
                         f"{torch.cuda.device_count()} GPU(s); run with --device cpu (gloo)")
    if not dist.is_initialized():
        backend = backend_for(device, world)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    _state["on"] = True
    return True


def active() -> bool:
    return _state["on"] and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_writer() -> bool:
    return rank() == 0


def gather(obj) -> list:
    """Every rank's obj, on every rank."""
    if not active():
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def local_device(device: str) -> str:
    """cuda -> cuda:LOCAL_RANK under torchrun."""
    if active() and device == "cuda":
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


MODES = ("none", "ddp", "fsdp")


def local_bytes(tensors) -> int:
    """Bytes this rank holds of the tensors: a DTensor (FSDP2's shard) counts its local part only."""
    total = 0
    for t in tensors:
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated decoder blocks of a transformers model (its ``_no_split_modules`` classes).

    Raises:
        ValueError: no module of the model names such a class.
    """
    names = {n for m in model.modules() for n in (getattr(m, "_no_split_modules", None) or ())}
    out = [m for m in model.modules() if type(m).__name__ in names]
    if not out:
        raise ValueError(f"no decoder block found in {type(model).__name__} (looked for _no_split_modules "
                         f"classes {sorted(names)}); FSDP and activation checkpointing wrap one block at a time")
    return out


def wrap(model: nn.Module, mode: str, *, mixed_precision: bool = False, checkpoint: bool = False) -> nn.Module:
    """The model with its data parallelism; call it after ``core.convert``, before building the optimizer.

    mode: "none" (the model as it is), "ddp" (DistributedDataParallel: every rank holds all
    parameters) or "fsdp" (FSDP2: ``fully_shard`` on every decoder block, then on the root, so
    each rank holds 1/world of every parameter; the optimizer must see the sharded ones).
    mixed_precision (fsdp): gathered parameters in bf16, gradients reduced in fp32, CE-LoRA's
    B0/A0 cast to bf16 (``core.fsdp.cast_buffers``); the sharded parameters keep the model's
    dtype. checkpoint: activation checkpointing (non-reentrant) of every decoder block.

    Raises:
        ValueError: mode is not one of MODES, or "ddp"/"fsdp" outside a process group.
    """
    if mode not in MODES:
        raise ValueError(f"wrap mode {mode!r} is invalid; allowed: {', '.join(MODES)}")
    if mode != "none" and not dist.is_initialized():
        raise ValueError(f"wrap mode {mode!r} needs a process group (run under torchrun)")
    if checkpoint:
        from torch.distributed._composable import checkpoint as ac  # composes with fully_shard, keeps names
        for block in blocks(model):
            ac(block)
    if mode == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    if mode == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        import core.fsdp
        policy = MixedPrecisionPolicy()
        if mixed_precision:
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            core.fsdp.cast_buffers(model, torch.bfloat16)
        for block in blocks(model):
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
    return model


def shutdown() -> None:
    if active():
        dist.destroy_process_group()
    _state["on"] = False
