"""Prints the foundation's speed ratios (issue 2), measured side by side in one run, then the
CE-LoRA backward in its two G_x forms side by side (the measurement the CPU default of
``core.config.GRAD_X_FORM`` awaits).

LLaMA-3.2-1B shapes q 2048→2048, gate 2048→8192, down 8192→2048; N=2048 tokens;
r=16; fp32; CPU; index cached. Ratios are medians of the engine's samples
(celora_bench.rounds.time_rounds): the callables compared are measured together,
one block each per round in a random order, over --rounds rounds.

G_x forms (p=0.5, lean and cached, r0 = 0 and 14): "split" (the kept-column product, then T·A0 and
G_h·A added in two more passes over the (N, n) output) against "fused" (one GEMM
[G_h | T | G_y[:, I]] · [A; A0; W0[I] or R[I]]), each as the whole backward (autograd, what training
runs) and as its G_x part alone (split: bwd.grad_x_frozen + bwd.grad_x_lora; fused: bwd.grad_x_frozen),
the four callables of one case interleaved; fused/split < 1 means the fused form is faster.

    python scripts/bench_core.py [--threads 2] [--rounds 15] [--malloc tuned|default] [--forms-only]
    python scripts/bench_core.py --tiny        # tiny shapes, short budget: checks the logic in seconds
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch
from torch import nn

import core
from celora_bench import malloc
from celora_bench.cases import Case
from celora_bench.rounds import time_rounds
from celora_bench.timing import TimingBudget
from core import components as C
from core import gather
from suites import layer_bench

SHAPES = {"q_proj": (2048, 2048), "gate_proj": (8192, 2048), "down_proj": (2048, 8192)}
TINY_SHAPES = {"q_proj": (64, 64), "gate_proj": (192, 64), "down_proj": (64, 192)}
FORMS = ("split", "fused")


def case(layer, provider, p=1.0, cache_rows=False, tokens=2048, shapes=SHAPES):
    m, n = shapes[layer]
    return Case("bench-core", provider, "llama-3.2-1b", layer, m, n, tokens, 16, keep_ratio=p,
                svd_rank=0, cache_rows=cache_rows)


def interleaved(fns: dict, rounds: int, budget: TimingBudget, threads: int) -> dict[str, float]:
    """Median of each callable's samples, measured together by the engine: one block each per round,
    in a random order, over ``rounds`` rounds (after one unrecorded warm-up round)."""
    stats = time_rounds(list(fns.values()), "cpu", budget, threads, rounds=rounds)
    return {k: s.median for k, s in zip(fns, stats)}


def form_layers(m: int, n: int, cache_rows: bool, r0: int, p: float = 0.5) -> dict:
    """One CELoRALinear per G_x form over the same W0 (so the same SVD), A and B; r=16, tau never due."""
    lin = nn.Linear(n, m)
    layers = {f: core.CELoRALinear.from_linear(lin, core.CELoRAConfig(
        r=16, keep_ratio=p, svd_rank=r0, cache_rows=cache_rows, grad_x_form=f, tau=10**9)) for f in FORMS}
    with torch.no_grad():
        layers["split"].lora_B.normal_()
        for name in ("lora_A", "lora_B"):
            getattr(layers["fused"], name).copy_(getattr(layers["split"], name))
    return layers


def backward_parts(layer, x, gy) -> dict:
    """{"bwd": the layer's whole backward (autograd), "G_x": its G_x part alone, in the layer's form}."""
    xx = x.clone().requires_grad_(True)
    y = layer(xx)
    params = [xx, layer.lora_A, layer.lora_B]
    torch.autograd.grad(y, params, gy, retain_graph=True)          # the first backward selects I
    A, B = layer.lora_A.detach(), layer.lora_B.detach()
    if layer.grad_x_form == "fused":
        left, _ = layer.fused_grad_h(gy, B)                          # (N, K), its first w columns filled

        def g_x():
            return layer.grad_x_fused(gy, left, A)                   # gather into L, right operand, one GEMM
    else:
        g_h, t = C.grad_h_fused(gy, B, layer.scale, layer.skinny_operand())

        def g_x():
            return C.grad_x_lora(layer.grad_x_frozen(gy, t), g_h, A)
    return {"bwd": lambda: torch.autograd.grad(y, params, gy, retain_graph=True), "G_x": g_x}


def compare_forms(shapes: dict, tokens: int, rounds: int, budget: TimingBudget, threads: int) -> list[float]:
    """Prints split vs fused medians and fused/split per (layer, mode, r0); returns the bwd ratios."""
    print(f"G_x forms, p=0.5, r=16, N={tokens}: medians in ms over {rounds} engine rounds "
          f"(fused/split < 1: fused faster)")
    print(f"  {'layer':22s} {'mode':6s} {'r0':>3s} | {'bwd split':>9s} {'fused':>9s} {'ratio':>6s} | "
          f"{'G_x split':>9s} {'fused':>9s} {'ratio':>6s} | K")
    ratios = []
    for name, (m, n) in shapes.items():
        x, gy = torch.randn(tokens, n), torch.randn(tokens, m)
        for cache_rows in (False, True):
            for r0 in (0, 14):
                layers = form_layers(m, n, cache_rows, r0)
                assert [mod.grad_x_form for mod in layers.values()] == list(FORMS)
                parts = {f: backward_parts(mod, x, gy) for f, mod in layers.items()}
                fns = {f"{part}.{f}": parts[f][part] for part in ("bwd", "G_x") for f in FORMS}
                t = interleaved(fns, rounds, budget, threads)
                rb, rg = t["bwd.fused"] / t["bwd.split"], t["G_x.fused"] / t["G_x.split"]
                ratios.append(rb)
                print(f"  {f'{name} {m}x{n}':22s} {'cached' if cache_rows else 'lean':6s} {r0:3d} | "
                      f"{t['bwd.split']*1e3:9.3f} {t['bwd.fused']*1e3:9.3f} {rb:6.3f} | "
                      f"{t['G_x.split']*1e3:9.3f} {t['G_x.fused']*1e3:9.3f} {rg:6.3f} | "
                      f"{layers['fused'].fused_layout().K} (k={layers['fused'].k})")
    print(f"  whole-backward fused/split: median {statistics.median(ratios):.3f}, "
          f"range {min(ratios):.3f}-{max(ratios):.3f}; gather: {gather.methods_used()}")
    return ratios


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15, help="engine rounds per comparison (one sample each)")
    ap.add_argument("--malloc", choices=["tuned", "default"], default="tuned")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--forms-only", action="store_true", help="only the split vs fused G_x comparison")
    ap.add_argument("--tiny", action="store_true",
                    help="tiny shapes, N=32, two rounds, short blocks: checks the logic, measures nothing")
    args = ap.parse_args(argv)
    if args.malloc == "tuned":
        malloc.tune()
    torch.set_num_threads(args.threads)
    budget = TimingBudget(block_s=0.05)
    shapes = SHAPES
    if args.tiny:
        budget, shapes, args.tokens, args.rounds = TimingBudget(block_s=0.002), TINY_SHAPES, 32, 2
    print(f"torch {torch.__version__}, {args.threads} threads, malloc: {malloc.describe()}, "
          f"N={args.tokens}, r=16, fp32, medians over {args.rounds} engine rounds")
    if args.forms_only:
        compare_forms(shapes, args.tokens, args.rounds, budget, args.threads)
        return 0
    ok = True

    def check(label, value, target):
        nonlocal ok
        good = value >= target
        ok &= good
        print(f"  {label:58s} {value:6.3f}  (target >= {target:.3f})  {'PASS' if good else 'FAIL'}")

    for layer in shapes:
        cs = {"dense": case(layer, "dense", tokens=args.tokens, shapes=shapes),
              "peft": case(layer, "peft", tokens=args.tokens, shapes=shapes),
              "c50": case(layer, "celora", 0.5, True, args.tokens, shapes),
              "c25": case(layer, "celora", 0.25, True, args.tokens, shapes),
              "l50": case(layer, "celora", 0.5, False, args.tokens, shapes)}
        parts, whole = {}, {}
        for k, c in cs.items():
            t = layer_bench.setup(c)
            whole[k] = t.whole["fwd+bwd"]
            if k != "peft":
                parts[k] = t.parts
        comp = interleaved({**{k: p["bwd.grad_x_frozen"] for k, p in parts.items()},
                            "fwd.frozen": parts["dense"]["fwd.frozen"]}, args.rounds, budget, args.threads)
        sel = interleaved({k: parts[k]["selection"] for k in ("c50", "l50")}, 3, budget, args.threads)
        lay = interleaved(whole, args.rounds, budget, args.threads)
        share = comp["dense"] / lay["dense"]
        amdahl = 1 / (1 - share + share * 0.5)
        m, n = shapes[layer]
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
    compare_forms(shapes, args.tokens, args.rounds, budget, args.threads)
    print("ALL PASS" if ok else "SOME TARGETS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
