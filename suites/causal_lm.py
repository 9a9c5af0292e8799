"""A whole causal LM for the step suites (model-step, gpu-targets): built on the device it runs on, in the
dtype it runs in; and G_y·W0's share of one profiled step."""
from __future__ import annotations

import contextlib

import torch

from celora_bench import models
from celora_bench.cases import Row


@contextlib.contextmanager
def building_on(device, dtype: torch.dtype):
    """Tensors created inside land on device, floating-point ones in dtype: a model built here is built
    where it runs, in the dtype it runs in."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def build(name: str, device, dtype: torch.dtype, path: str | None = None, layers: int | None = None):
    """The model on the device in dtype. A random-init model is built there, in dtype (built in fp32 on
    the CPU and then moved, an 8B model would take 32 GB of host memory and a copy per tensor), with
    `layers` decoder layers when given; a checkpoint (a path, or the registry's real weights) is loaded,
    then moved."""
    from celora_bench import pretrained
    if path is not None or name in pretrained.PRETRAINED:
        return models.build_model(name, dtype=dtype, path=path).to(device)
    with building_on(device, dtype):
        model = models.build_model(name, layers=layers)
    return model.to(dtype)                    # a no-op where the build already gave dtype everywhere


def time_share(prof: Row | None) -> tuple[float | None, str]:
    """G_y·W0's share of one profiled step: by kernel (device) time on CUDA, by CPU op time on the CPU."""
    if prof is None:
        return None, ""
    secs = prof.extra.get("seconds_by_scope", {}).get("bwd.grad_x_frozen")
    total = prof.extra.get("profiled_device_s") or prof.extra.get("profiled_wall_s")
    basis = "kernel time" if prof.extra.get("profiled_device_s") else "profiler, CPU"
    return (secs / total if secs and total else None), basis
