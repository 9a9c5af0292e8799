"""Per-rank bytes of state under FSDP2 vs DDP, and what CE-LoRA adds on every rank.

Measured (the "tiny" LLaMA shapes, fp32, 2 ranks): after two AdamW steps on each
rank, the bytes this rank holds of the parameters (frozen W0 and the rest, and the
LoRA factors), their gradients, the optimizer state, and CE-LoRA's buffers (B0, A0,
res_sq, the index, cached rows or lean's B0 with rows I zeroed), which FSDP2 does
not shard. Peak RSS is per process and mostly torch and transformers themselves.
Then the same accounting, analytic, for a named model (default llama-3.2-1b, bf16
W0, fp32 LoRA and Adam state) over --world ranks.

    python scripts/fsdp_memory.py                      # spawns 2 ranks: nccl on CUDA when the machine has a
                                                       # GPU per rank, else gloo on the CPU
    torchrun --nproc-per-node 2 scripts/fsdp_memory.py # the same under torchrun
    python scripts/fsdp_memory.py --analytic-only --model llama-3.1-8b --world 8

Not a registered suite: a study of one table, run by scripts/fsdp_memory.py (main here).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import socket
import sys

import torch

import core
import core.fsdp
from celora_bench import distributed, models
from core.config import balanced_rank

PROVIDERS = {"lora (dense)": ("dense", False), "celora-paper lean": ("paper", False),
             "celora-all lean": ("all", False), "celora-all cached": ("all", True)}
RANK, ALPHA, P_ALL = 16, 32.0, 0.5


def _measure(mode: str, plan: str, cached: bool, device: str) -> dict:
    model = models.build_model("tiny").to(device)
    model.config.use_cache = False
    core.convert(model, plan, r=RANK, alpha=ALPHA, keep_ratio=P_ALL, cache_rows=cached, sync_scores=True)
    model = distributed.wrap(model, mode)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    core.attach_optimizer(opt, model)
    g = torch.Generator().manual_seed(distributed.rank())
    for _ in range(2):
        ids = torch.randint(0, 512, (2, 64), generator=g).to(device)
        opt.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    frozen = [q for q in model.parameters() if not q.requires_grad]
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    return {"frozen params": distributed.local_bytes(frozen), "LoRA params": distributed.local_bytes(params),
            "LoRA grads": distributed.local_bytes(q.grad for q in params if q.grad is not None),
            "Adam state": distributed.local_bytes(state),
            **{f"CE-LoRA {k}": v for k, v in core.fsdp.replicated_bytes(model).items()}}


def _rank_main(rank: int, world: int, port: int | None, out: str | None) -> None:
    if port is not None:                        # spawned here: the environment torchrun would set
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                          WORLD_SIZE=str(world))
    kind = distributed.device_for(world)       # a GPU per rank or the CPU: never two ranks on one GPU
    distributed.init(kind)
    device = distributed.local_device(kind)
    torch.set_num_threads(1)
    rows = []
    for mode in ("ddp", "fsdp"):
        for name, (plan, cached) in PROVIDERS.items():
            rows.append({"mode": mode, "provider": name, **_measure(mode, plan, cached, device)})
    peak = distributed.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if distributed.is_writer():
        _print_measured(rows, distributed.world(), peak, device)
        if out:
            with open(out, "w") as f:
                json.dump({"world": distributed.world(), "device": device, "rows": rows, "peak_rss": peak}, f,
                          indent=1)
    distributed.shutdown()


def _mib(b: float) -> str:
    return f"{b / 2**20:8.3f}"


def _print_measured(rows: list[dict], world: int, peak: list[int], device: str) -> None:
    keys = sorted({k for r in rows for k in r} - {"mode", "provider"},
                  key=lambda k: (k.startswith("CE-LoRA"), k))
    print(f"measured: tiny (hidden 256, 4 blocks, vocab 512), fp32, {world} ranks on {device}; MiB per rank")
    print(f"{'mode':5s} {'provider':18s} " + " ".join(f"{k[:16]:>16s}" for k in keys) + f" {'total':>9s}")
    for r in rows:
        print(f"{r['mode']:5s} {r['provider']:18s} " + " ".join(f"{_mib(r.get(k, 0)):>16s}" for k in keys)
              + f" {_mib(sum(r.get(k, 0) for k in keys)):>9s}")
    print("DDP also keeps its gradient buckets, a second copy of the LoRA grads (gradient_as_bucket_view=False);")
    print("FSDP2 gathers one block's parameters at a time for its forward and backward (transient).")
    print("peak RSS per rank (MiB, whole process: torch, transformers and every model built here): "
          + ", ".join(f"{p / 2**20:.0f}" for p in peak))


def analytic(shape: models.ModelShape, world: int, plan: str = "paper", cached: bool = False,
             w_bytes: int = 2) -> dict:
    """Per-rank bytes, FSDP2 vs DDP, for shape: W0 in w_bytes, LoRA and Adam in fp32, CE-LoRA buffers."""
    cfgs = core.preset(plan, r=RANK, alpha=ALPHA, keep_ratio=P_ALL, cache_rows=cached)
    w0 = lora = buf = 0
    for proj, (m, n) in shape.layer_shapes().items():
        cfg = cfgs[f"*{proj}"]
        w0 += m * n
        lora += cfg.r * (m + n)
        if cfg.keep_ratio < 1:
            r0, k = cfg.resolved_svd_rank(m, n), cfg.kept(m)
            # B0, A0 (w_bytes), res_sq (fp32), idx (int64), rows k·n (cached) or B0 with rows I zeroed (lean)
            buf += (m * r0 + r0 * n) * w_bytes + 4 * m + 8 * k + (k * n if cached else m * r0) * w_bytes
    L = shape.layers
    other = 2 * shape.vocab * shape.hidden + (2 * L + 1) * shape.hidden     # embeddings, lm_head, norms
    frozen = (L * w0 + other) * w_bytes
    trainable = L * lora * 4 * (1 + 1 + 2)                                  # params, grads, Adam m and v
    return {"ddp": frozen + trainable, "fsdp": math.ceil((frozen + trainable) / world), "celora": L * buf}


def _print_analytic(name: str, world: int) -> None:
    shape = models.get(name)
    print(f"\nanalytic: {name}, W0 bf16, LoRA r={RANK} (r0=r={balanced_rank(RANK)} on sampled layers) with fp32 "
          f"grads and Adam, {world} ranks; GiB per rank")
    print(f"{'provider':18s} {'DDP':>8s} {'FSDP2':>8s} {'CE-LoRA buffers (every rank)':>30s} {'of FSDP2':>9s}")
    for label, (plan, cached) in PROVIDERS.items():
        a = analytic(shape, world, plan, cached)
        print(f"{label:18s} {a['ddp'] / 2**30:8.3f} {a['fsdp'] / 2**30:8.3f} {a['celora'] / 2**30:30.3f} "
              f"{a['celora'] / a['fsdp']:9.1%}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="llama-3.2-1b", help="named shapes for the analytic table")
    ap.add_argument("--world", type=int, default=8, help="ranks in the analytic table")
    ap.add_argument("--analytic-only", action="store_true")
    ap.add_argument("--out", default=None, help="JSON of the measured rows")
    args = ap.parse_args(argv)
    if args.model not in models.MODELS:
        print(f"fsdp_memory: error: --model {args.model!r} is unknown; known: {', '.join(models.MODELS)}",
              file=sys.stderr)
        return 2
    if args.world < 1:
        print(f"fsdp_memory: error: --world {args.world} is invalid; allowed: an integer >= 1", file=sys.stderr)
        return 2
    if not args.analytic_only:
        if distributed.world_size_from_env() > 1:
            _rank_main(int(os.environ["RANK"]), distributed.world_size_from_env(), None, args.out)
        else:
            import torch.multiprocessing as mp
            os.environ.setdefault("OMP_NUM_THREADS", "1")
            mp.spawn(_rank_main, args=(2, _free_port(), args.out), nprocs=2, join=True)
    if distributed.world_size_from_env() <= 1 or int(os.environ.get("RANK", "0")) == 0:
        _print_analytic(args.model, args.world)
    return 0
