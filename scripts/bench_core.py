"""Prints the foundation's speed ratios (issue 2), measured side by side in one run.

LLaMA-3.2-1B shapes q 2048→2048, gate 2048→8192, down 8192→2048; N=2048 tokens;
r=16; fp32; CPU; index cached. Ratios are medians of torch.utils.benchmark
samples; baseline and candidate are interleaved (A B A B) round by round.

    python scripts/bench_core.py [--threads 2] [--rounds 3] [--malloc tuned|default]
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from celora_bench import malloc
from celora_bench.cases import Case
from celora_bench.timing import TimingBudget, time_interleaved
from suites import layer_bench

SHAPES = {"q_proj": (2048, 2048), "gate_proj": (8192, 2048), "down_proj": (2048, 8192)}


def case(layer, provider, p=1.0, cache_rows=False, tokens=2048):
    m, n = SHAPES[layer]
    return Case("bench-core", provider, "llama-3.2-1b", layer, m, n, tokens, 16, keep_ratio=p,
                svd_rank=0, cache_rows=cache_rows)


def interleaved(fns: dict, rounds: int, budget: TimingBudget, threads: int) -> dict[str, float]:
    """Median over rounds of each callable's median, timed block by block A B A B by the engine."""
    got = {k: [] for k in fns}
    for _ in range(rounds):
        for k, stats in zip(fns, time_interleaved(list(fns.values()), "cpu", budget, threads)):
            got[k].append(stats.median)
    return {k: statistics.median(v) for k, v in got.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--malloc", choices=["tuned", "default"], default="tuned")
    ap.add_argument("--tokens", type=int, default=2048)
    args = ap.parse_args(argv)
    if args.malloc == "tuned":
        malloc.tune()
    torch.set_num_threads(args.threads)
    budget = TimingBudget(min_s=0.3, max_s=1.5)
    print(f"torch {torch.__version__}, {args.threads} threads, malloc: {malloc.describe()}, "
          f"N={args.tokens}, r=16, fp32, medians over {args.rounds} interleaved rounds")
    ok = True

    def check(label, value, target):
        nonlocal ok
        good = value >= target
        ok &= good
        print(f"  {label:58s} {value:6.3f}  (target >= {target:.3f})  {'PASS' if good else 'FAIL'}")

    for layer in SHAPES:
        cs = {"dense": case(layer, "dense", tokens=args.tokens),
              "peft": case(layer, "peft", tokens=args.tokens),
              "c50": case(layer, "celora", 0.5, True, args.tokens),
              "c25": case(layer, "celora", 0.25, True, args.tokens),
              "l50": case(layer, "celora", 0.5, False, args.tokens)}
        parts, whole = {}, {}
        for k, c in cs.items():
            t = layer_bench.setup(c)
            whole[k] = t.whole["fwd+bwd"]
            if k != "peft":
                parts[k] = t.parts
        comp = interleaved({**{k: p["bwd.grad_x_frozen"] for k, p in parts.items()},
                            "fwd.frozen": parts["dense"]["fwd.frozen"]}, args.rounds, budget, args.threads)
        sel = interleaved({k: parts[k]["selection"] for k in ("c50", "l50")}, 1, budget, args.threads)
        lay = interleaved(whole, args.rounds, budget, args.threads)
        share = comp["dense"] / lay["dense"]
        amdahl = 1 / (1 - share + share * 0.5)
        m, n = SHAPES[layer]
        print(f"{layer} {m}x{n}: dense G_y·W0 {comp['dense']*1e3:.1f} ms, layer fwd+bwd "
              f"{lay['dense']*1e3:.1f} ms (share {share:.3f}), peft {lay['peft']*1e3:.1f} ms")
        check("G_y·W0 speed-up p=0.5 cached / ideal 2", comp["dense"] / comp["c50"] / 2, 0.95)
        check("G_y·W0 speed-up p=0.25 cached / ideal 4", comp["dense"] / comp["c25"] / 4, 0.90)
        check(f"layer speed-up p=0.5 cached / Amdahl bound {amdahl:.3f}", lay["dense"] / lay["c50"] / amdahl, 1.0)
        # What no LoRA layer can beat: the two frozen products alone (x W0ᵀ and G_y·W0, or its p-part).
        gemms = comp["fwd.frozen"] + comp["dense"]
        print(f"  ceiling: peft / (x W0ᵀ + G_y·W0 alone) = {lay['peft'] / gemms:.3f}; "
              f"peft / (x W0ᵀ + p=0.5 G_y·W0 alone) = {lay['peft'] / (comp['fwd.frozen'] + comp['c50']):.3f}"
              f"  (a layer that were nothing but its frozen products)")
        check("layer: peft / ours dense (p=1)", lay["peft"] / lay["dense"], 1.10)
        check("layer: peft / ours CE-LoRA p=0.5 cached", lay["peft"] / lay["c50"], 1.40)
        check("layer: peft / ours CE-LoRA p=0.5 lean (default)", lay["peft"] / lay["l50"], 1.40)
        check("lean / cached layer time at p=0.5 (within 5%)", lay["c50"] / lay["l50"], 1 / 1.05)
        for k in ("c50", "l50"):
            frac = sel[k] / 200 / comp["dense"]
            good = frac < 0.005
            ok &= good
            print(f"  refresh ({'cached' if k == 'c50' else 'lean'}) {sel[k]*1e3:.2f} ms, over tau=200: "
                  f"{frac*100:.3f}% of dense G_y·W0 (target < 0.5%)  {'PASS' if good else 'FAIL'}")
    print("ALL PASS" if ok else "SOME TARGETS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
