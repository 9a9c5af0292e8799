"""The reference code's latency setting, on a CUDA GPU.

One 4096x4096 bf16 layer, 16x8192 tokens; CE-LoRA at keep ratio 1/16 with
SVD rank 56 (LoRA rank 64 - floor(56/7) = 56, as the reference's balanced
rule) against dense LoRA r=64; forward+backward timed together with CUDA
events after warm-up, interleaved. Writes a JSON with raw samples.

    python scripts/reference_latency.py [--steps 500] [--warmup 10] [--out results/gpu/reference-latency.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch import nn

import core
from celora_bench import env
from celora_bench.timing import TimingBudget, time_interleaved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", default=os.path.join("results", "gpu", "reference-latency.json"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("reference_latency: error: no CUDA device is available", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    dev, dt, n, tokens = "cuda", torch.bfloat16, 4096, 16 * 8192
    base = nn.Linear(n, n, bias=False).to(dev, dt)
    providers = {
        "lora r=64 (dense)": core.CELoRALinear.from_linear(base, core.CELoRAConfig(r=64, alpha=128)),
        "celora p=1/16 r0=56 r=56 lean": core.CELoRALinear.from_linear(base, core.CELoRAConfig(
            r=56, alpha=128, keep_ratio=1 / 16, svd_rank=56)),
        "celora p=1/16 r0=56 r=56 cached": core.CELoRALinear.from_linear(base, core.CELoRAConfig(
            r=56, alpha=128, keep_ratio=1 / 16, svd_rank=56, cache_rows=True)),
    }
    x = torch.randn(tokens, n, device=dev, dtype=dt, requires_grad=True)
    gy = torch.randn(tokens, n, device=dev, dtype=dt)
    fns = {}
    for name, layer in providers.items():
        params = [x, layer.lora_A, layer.lora_B]
        fns[name] = (lambda layer=layer, params=params: torch.autograd.grad(layer(x), params, gy))
    stats = time_interleaved(list(fns.values()), dev, TimingBudget(cuda_warmup=args.warmup, cuda_reps=args.steps), 1)
    res = {name: {"median_s": s.median, "iqr_s": s.iqr, "min_s": s.min, "samples_s": list(s.samples)}
           for name, s in zip(fns, stats)}
    dense = res["lora r=64 (dense)"]["median_s"]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {tokens} tokens x {n}x{n} bf16, "
          f"fwd+bwd median of {args.steps} (CUDA events, {args.warmup} warm-up)")
    for name, r in res.items():
        r["speedup_vs_dense"] = dense / r["median_s"]
        print(f"  {name:34s} {r['median_s'] * 1e3:9.3f} ms  IQR {r['iqr_s'] * 1e3:7.3f} ms  "
              f"speed-up {r['speedup_vs_dense']:.3f}x")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine_info": env.machine_info(), "setting": {"n": n, "tokens": tokens, "dtype": "bfloat16",
                   "steps": args.steps, "warmup": args.warmup}, "results": res}, f, indent=1)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
