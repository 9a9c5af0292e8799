"""torchrun support: one process per rank, results written once, by rank 0, with per-rank timings.

Under torchrun (WORLD_SIZE > 1) the CLI joins the process group (gloo on CPU,
nccl on CUDA). Every rank runs the same cases in the same order; timing uses
a fixed number of samples so that every rank makes the same collective calls.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

_state = {"on": False}


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device: str) -> bool:
    """Joins the process group when launched by torchrun; returns whether it did."""
    if world_size_from_env() <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
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


def shutdown() -> None:
    if active():
        dist.destroy_process_group()
    _state["on"] = False
