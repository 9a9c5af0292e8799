"""Issue 11's GPU figures in one run (< 4 min on one H200): CUDA events, interleaved rounds, medians.

1. Per Llama-3.1-8B projection, N=8192 tokens, bf16, r=16, lean: dense LoRA (ours), peft (default:
   adapters autocast to fp32; and autocast_adapter_dtype=False), CE-LoRA at p=0.5 and at the paper's
   ratio (v, o 0.55; up, down 0.65), r0 = 0 and 14. Printed: the G_y-side cost ratio / p
   ((fused grad_h + grad_x_frozen − dense grad_h) / dense G_y·W0, the component whose time p cuts),
   the kept-column product G_y[:, I]·W0[I] / dense at p=0.5, fused vs unfused skinny products,
   layer fwd+bwd speed-up against its Amdahl bound 1/(1 − s + s·p_eff) from the measured share s,
   and ours vs peft.
2. One AdamW training step on LoRA params (r=16, all 7 projections), random init, bf16:
   Llama-3.2-1B shapes at 4×2048 tokens and Llama-3.1-8B shapes (8 of 32 layers) at 2×2048:
   peft default, peft bf16 adapters, ours dense, `paper`, `all` p=0.5.
3. The kept-column product per k multiple (1, 8, 16, 64, 128) at the paper's ratios, bf16 and fp32,
   and the gather alone / gather + GEMM with index_select against the Triton kernel (per tile).

The issue's targets are printed with PASS/FAIL beside each figure; --out writes every raw sample.
The double-LoRA SVD of the step models is computed once per weight shape and shared by every
layer of that shape (random-init weights: the timing depends on shapes only; --exact-svd turns it off).

    python scripts/bench_gpu.py --out results/gpu/bench_gpu.json
    python scripts/bench_gpu.py --smoke --out /tmp/b.json      # tiny sizes, CPU, checks the logic
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import signal
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

sys.path.insert(0, __file__.rsplit("/scripts/", 1)[0])

import core  # noqa: E402
from core import components as C  # noqa: E402
from core import gather, selection  # noqa: E402
from core.convert import PAPER_RATIOS, PROJECTIONS  # noqa: E402

R, ALPHA, R0 = 16, 32.0, 14
LLAMA_8B = dict(hidden=4096, inter=14336, heads=32, kv_heads=8, layers=32, vocab=128256)
LLAMA_1B = dict(hidden=2048, inter=8192, heads=32, kv_heads=8, layers=16, vocab=128256)
SMOKE = dict(hidden=64, inter=160, heads=4, kv_heads=2, layers=2, vocab=128)

TARGETS = {"amdahl_r0_0": 0.90, "amdahl_r0_14": 0.85, "kept_over_p": 1.25,
           "all_vs_dense": 1.12, "paper_vs_dense": 1.04, "dense_vs_peft_bf16": 1.05, "dense_vs_peft": 1.40}


def shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    """(out, in) of each projection (two of them in the smoke run)."""
    h, i, hd = cfg["hidden"], cfg["inter"], cfg["hidden"] // cfg["heads"]
    kv = cfg["kv_heads"] * hd
    out = {"q_proj": (h, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, h),
           "gate_proj": (i, h), "up_proj": (i, h), "down_proj": (h, i)}
    return {k: out[k] for k in ("v_proj", "up_proj")} if cfg is SMOKE else out


# ---- timing ------------------------------------------------------------------

@dataclass
class Timer:
    device: str
    rounds: int
    reps: int
    warmup: int

    def run(self, fns: dict) -> dict[str, list[float]]:
        """Seconds per call: per round, each callable `reps` times back to back, A B C A B C...;
        CUDA events around each block, one sync per round. Returns every round's sample."""
        cuda = self.device.startswith("cuda")
        for f in fns.values():
            for _ in range(self.warmup):
                f()
        self.sync()
        out = {k: [] for k in fns}
        for _ in range(self.rounds):
            marks = []
            for k, f in fns.items():
                if cuda:
                    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    s.record()
                    for _ in range(self.reps):
                        f()
                    e.record()
                    marks.append((k, s, e))
                else:
                    t0 = time.perf_counter()
                    for _ in range(self.reps):
                        f()
                    out[k].append((time.perf_counter() - t0) / self.reps)
            self.sync()
            for k, s, e in marks:
                out[k].append(s.elapsed_time(e) / 1e3 / self.reps)
        return out

    def sync(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


def med(samples: list[float]) -> float:
    return statistics.median(samples)


def verdict(value: float, target: float, at_least: bool = True) -> str:
    ok = value >= target if at_least else value <= target
    return f"(target {'>=' if at_least else '<='} {target:.2f}) {'PASS' if ok else 'FAIL'}"


# ---- 1. layers -----------------------------------------------------------------

class _Wrap(nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        return self.lin(x)


def peft_layer(base: nn.Linear, autocast: bool):
    import peft
    cfg = peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["lin"])
    lin = nn.Linear(base.in_features, base.out_features, bias=False, device=base.weight.device,
                    dtype=base.weight.dtype)
    lin.weight = base.weight                                   # shared W0
    mod = peft.get_peft_model(_Wrap(lin), cfg, autocast_adapter_dtype=autocast).base_model.model.lin
    with torch.no_grad():
        mod.lora_B["default"].weight.normal_(std=0.01)
    return mod


def ours(base: nn.Linear, p: float, r0: int, **kw):
    layer = core.CELoRALinear.from_linear(base, core.CELoRAConfig(r=R, alpha=ALPHA, keep_ratio=p,
                                                                 svd_rank=r0 if p < 1 else 0, **kw))
    with torch.no_grad():
        layer.lora_B.normal_(std=0.01)
    return layer


def bench_layers(args, timer: Timer, dev, dtype, log: dict) -> list[str]:
    lines, fails = [], []
    cfg = SMOKE if args.smoke else LLAMA_8B
    N = 64 if args.smoke else 8192
    g = torch.Generator(device=dev).manual_seed(0)
    for name, (m, n) in shapes(cfg).items():
        base = nn.Linear(n, m, bias=False, device=dev, dtype=dtype)
        with torch.no_grad():
            base.weight.copy_(torch.randn(m, n, generator=g, device=dev, dtype=dtype) / n ** 0.5)
        x = torch.randn(N, n, generator=g, device=dev, dtype=dtype).requires_grad_(True)
        gy = torch.randn(N, m, generator=g, device=dev, dtype=dtype) * torch.exp(
            torch.randn(m, generator=g, device=dev)).to(dtype)
        ps = [0.5] + ([PAPER_RATIOS[name]] if name in PAPER_RATIOS else [])
        mods = {"dense": ours(base, 1.0, 0), "peft": peft_layer(base, True), "peft_bf16": peft_layer(base, False)}
        with shared_svd(True):                                 # one W0 per shape here: exact
            for p in ps:
                for r0 in (0, R0):
                    mods[f"ce{p}_r0{r0}"] = ours(base, p, r0)

        def fwd_bwd(mod):
            params = [x] + [q for q in mod.parameters() if q.requires_grad]
            return lambda: torch.autograd.grad(mod(x), params, gy)

        for mod in mods.values():                              # first backward: selects I
            fwd_bwd(mod)()
        fns = {f"layer.{k}": fwd_bwd(v) for k, v in mods.items()}
        d = mods["dense"]
        B = d.lora_B.detach()
        fns["dense.grad_h"] = lambda: C.grad_h(gy, B, d.scale)
        fns["dense.G_y·W0"] = lambda: C.grad_x_frozen_dense(gy, d.weight)
        for k, mod in mods.items():
            if not k.startswith("ce") or mod.dense:
                continue
            Bm = mod.lora_B.detach()

            def side(mod=mod, Bm=Bm):                          # what the Function runs on G_y's side
                g_h, t = C.grad_h_fused(gy, Bm, mod.scale, mod.skinny_operand())
                return mod.grad_x_frozen(gy, t)
            fns[f"side.{k}"] = side
            if mod.r0:
                fns[f"unfused.{k}"] = (lambda mod=mod, Bm=Bm: (C.grad_h(gy, Bm, mod.scale),
                                       C.grad_x_frozen_lean(gy, mod.idx, mod.weight, mod.B0, mod.A0)))
            if k == "ce0.5_r00":
                rows = mod.weight.index_select(0, mod.idx)
                idx = mod.idx
                fns["kept.p0.5"] = lambda idx=idx, rows=rows: torch.mm(gather.gather_columns(gy, idx), rows)
                fns["kept.p0.5.index_select"] = lambda idx=idx, rows=rows: torch.mm(gy.index_select(1, idx), rows)
        samples = timer.run(fns)
        t = {k: med(v) for k, v in samples.items()}
        log["layers"].append({"layer": name, "m": m, "n": n, "N": N, "samples": samples,
                              "k": {k: v.k for k, v in mods.items() if isinstance(v, core.CELoRALinear)}})
        dense_frozen, dense_layer, dense_h = t["dense.G_y·W0"], t["layer.dense"], t["dense.grad_h"]
        s = dense_frozen / dense_layer
        lines.append(f"{name} {m}x{n} N={N}: dense G_y·W0 {dense_frozen*1e3:.3f} ms, layer {dense_layer*1e3:.3f} ms "
                     f"(share {s:.3f}); peft {t['layer.peft']*1e3:.3f} ms = {t['layer.peft']/dense_layer:.2f}x ours "
                     f"dense, peft bf16 adapters {t['layer.peft_bf16']*1e3:.3f} ms = "
                     f"{t['layer.peft_bf16']/dense_layer:.2f}x")
        for k, mod in mods.items():
            if not k.startswith("ce"):
                continue
            pe = mod.effective_keep_ratio
            bound = 1 / (1 - s + s * pe)
            sp = dense_layer / t[f"layer.{k}"]
            tgt = TARGETS["amdahl_r0_0"] if mod.r0 == 0 else TARGETS["amdahl_r0_14"]
            side_txt = ""
            if f"side.{k}" in t:
                ratio = (t[f"side.{k}"] - dense_h) / dense_frozen
                side_txt = f"G_y-side ratio {ratio:.3f} ({ratio/pe:.3f}·p)"
                if f"unfused.{k}" in t:
                    side_txt += f", unfused {(t[f'unfused.{k}'] - dense_h) / dense_frozen / pe:.3f}·p"
            v = verdict(sp / bound, tgt)
            if "FAIL" in v:
                fails.append(f"{name} {k}")
            lines.append(f"  {k:10s} k={mod.k:5d} p_eff={pe:.4f}  {side_txt};  layer {sp:.3f}x / bound {bound:.3f} "
                         f"= {sp/bound:.3f} {v}; vs peft {t['layer.peft']/t[f'layer.{k}']:.2f}x, "
                         f"vs peft bf16 {t['layer.peft_bf16']/t[f'layer.{k}']:.2f}x")
        if "kept.p0.5" in t:
            r = t["kept.p0.5"] / dense_frozen / 0.5
            lines.append(f"  kept-column product p=0.5: {r:.3f}·p {verdict(r, TARGETS['kept_over_p'], False)} "
                         f"(index_select + mm {t['kept.p0.5.index_select'] / dense_frozen / 0.5:.3f}·p)")
        del mods, fns                                          # x, gy, base: rebound next layer
        free(dev)
    return lines + ([f"layer targets missed: {', '.join(fails)}"] if fails else ["layer targets: all PASS"])


# ---- 3. k multiples and gather methods ---------------------------------------------

def bench_kernels(args, timer: Timer, dev, log: dict) -> list[str]:
    lines = []
    cfg = SMOKE if args.smoke else LLAMA_8B
    N = 64 if args.smoke else 8192
    dtypes = [torch.bfloat16, torch.float32]
    for name, (m, n) in shapes(cfg).items():
        if name not in PAPER_RATIOS:
            continue
        p = PAPER_RATIOS[name]
        for dtype in dtypes if name == "up_proj" else dtypes[:1]:
            G = torch.randn(N, m, device=dev, dtype=dtype)
            W = torch.randn(m, n, device=dev, dtype=dtype)
            fns = {"dense": lambda G=G, W=W: torch.mm(G, W)}
            base = math.ceil(p * m)
            for a in (1, 8, 16, 64, 128):
                k = min(m, -(-base // a) * a)
                idx = torch.randperm(m, device=dev)[:k].sort().values
                rows = W.index_select(0, idx)
                fns[f"a{a}.k{k}"] = lambda G=G, idx=idx, rows=rows: torch.mm(G.index_select(1, idx), rows)
            samples = timer.run(fns)
            t = {k: med(v) for k, v in samples.items()}
            log["k_multiples"].append({"layer": name, "dtype": str(dtype), "p": p, "samples": samples})
            lines.append(f"{name} {m}x{n} {str(dtype)[6:]} p={p}: gather+GEMM / dense: " + "  ".join(
                f"{k} {v / t['dense']:.3f}" for k, v in t.items() if k != "dense"))
    # gather methods: index_select vs the Triton kernel per tile, alone and followed by the GEMM
    tri = gather.triton_gather if dev.type == "cuda" else None
    if tri is not None:
        from core import triton_gather as T
        if not T.available():
            tri = None
    for name, (m, n) in shapes(cfg).items():
        for p in sorted({0.5, PAPER_RATIOS.get(name, 0.5)}):
            G = torch.randn(N, m, device=dev, dtype=torch.bfloat16)
            W = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
            k = core.CELoRAConfig(keep_ratio=p).kept(m, dev, torch.bfloat16)
            idx = torch.randperm(m, device=dev)[:k].sort().values
            rows = W.index_select(0, idx)
            fns = {"dense": lambda: torch.mm(G, W), "index_select": lambda: G.index_select(1, idx),
                   "index_select+mm": lambda: torch.mm(G.index_select(1, idx), rows),
                   "torch.gather": lambda: gather.torch_gather(G, idx)}
            if tri is not None:
                for tile in ((8, 256), (16, 128), (32, 64), (4, 512), (8, 128)):
                    fns[f"triton{tile}"] = lambda tile=tile: T.gather_columns(G, idx, tile)
                fns["triton+mm"] = lambda: torch.mm(T.gather_columns(G, idx), rows)
            samples = timer.run(fns)
            t = {kk: med(v) for kk, v in samples.items()}
            log["gathers"].append({"layer": name, "p": p, "k": k, "samples": samples})
            lines.append(f"{name} p={p} k={k}: dense {t['dense']*1e3:.3f} ms; " + ", ".join(
                f"{kk} {v*1e3:.3f}" for kk, v in t.items() if kk != "dense") + " ms")
        free(dev)
    return lines


# ---- 2. training steps ---------------------------------------------------------

@contextlib.contextmanager
def shared_svd(enabled: bool):
    """selection.svd_split computed once per (shape, r0) and reused (timing depends on shapes only)."""
    if not enabled:
        yield
        return
    real, memo = selection.svd_split, {}

    def split(W0, r0):
        key = (tuple(W0.shape), r0, W0.dtype, W0.device)
        if key not in memo:
            memo[key] = real(W0, r0)
        return memo[key]
    selection.svd_split = split
    try:
        yield
    finally:
        selection.svd_split = real


def build_model(cfg: dict, layers: int, dev, dtype, provider: str, exact_svd: bool):
    from transformers import LlamaConfig, LlamaForCausalLM
    lc = LlamaConfig(vocab_size=cfg["vocab"], hidden_size=cfg["hidden"], intermediate_size=cfg["inter"],
                     num_hidden_layers=layers, num_attention_heads=cfg["heads"],
                     num_key_value_heads=cfg["kv_heads"], max_position_embeddings=4096)
    lc._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(dev):
        model = LlamaForCausalLM(lc).to(dtype)
    targets = list(PROJECTIONS)
    if provider.startswith("peft"):
        import peft
        model = peft.get_peft_model(model, peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=targets),
                                    autocast_adapter_dtype=provider == "peft")
    else:
        plan = {"ours-dense": "dense", "paper": "paper", "all": "all"}[provider]
        with shared_svd(not exact_svd):
            core.convert(model, plan, r=R, alpha=ALPHA, keep_ratio=0.5)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    if not provider.startswith("peft"):
        core.attach_optimizer(opt, model)
    return model, opt


def bench_steps(args, timer: Timer, dev, dtype, log: dict) -> list[str]:
    lines = []
    runs = [("llama-3.2-1b", SMOKE if args.smoke else LLAMA_1B, None, (2, 32) if args.smoke else (4, 2048)),
            ("llama-3.1-8b (8 of 32 layers)", SMOKE if args.smoke else LLAMA_8B, 1 if args.smoke else 8,
             (2, 32) if args.smoke else (2, 2048))]
    providers = ["peft", "peft-bf16", "ours-dense", "paper", "all"]
    for label, cfg, layers, (batch, seq) in runs:
        g = torch.Generator(device=dev).manual_seed(0)
        ids = torch.randint(0, cfg["vocab"], (batch, seq), generator=g, device=dev)
        fns = {}
        for prov in providers:
            model, opt = build_model(cfg, layers or cfg["layers"], dev, dtype, prov, args.exact_svd)

            def step(model=model, opt=opt):
                opt.zero_grad(set_to_none=True)
                model(input_ids=ids, labels=ids).loss.backward()
                opt.step()
            fns[prov] = step
        samples = timer.run(fns)
        t = {k: med(v) for k, v in samples.items()}
        log["steps"].append({"model": label, "batch": batch, "seq": seq, "samples": samples})
        d = t["ours-dense"]
        lines.append(f"{label}, {batch}x{seq} tokens, {str(dtype)[6:]}, AdamW on LoRA r={R}: " + ", ".join(
            f"{k} {v*1e3:.1f} ms" for k, v in t.items()))
        checks = [("`all` p=0.5 / ours dense", d / t["all"], "all_vs_dense"),
                  ("`paper` / ours dense", d / t["paper"], "paper_vs_dense"),
                  ("ours dense vs peft bf16 adapters", t["peft-bf16"] / d, "dense_vs_peft_bf16"),
                  ("ours dense vs peft default", t["peft"] / d, "dense_vs_peft")]
        for what, v, key in checks:
            tag = verdict(v, TARGETS[key]) if label.startswith("llama-3.2") else "(reported beside the 1B target)"
            lines.append(f"  {what:34s} {v:.3f}x {tag}")
        del fns
        free(dev)
    return lines


def free(dev):
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file for every raw sample")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (checks the logic)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--exact-svd", action="store_true", help="one SVD per weight in the step models")
    ap.add_argument("--only", choices=["layers", "kernels", "steps"], action="append")
    args = ap.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        print(f"bench_gpu: --rounds {args.rounds} is invalid; allowed: an integer >= 1", file=sys.stderr)
        return 2
    if args.smoke:
        dev, dtype = torch.device("cpu"), torch.float32
        timer = Timer("cpu", args.rounds or 2, 1, 0)
        step_timer = timer
    else:
        if not torch.cuda.is_available():
            print("bench_gpu: needs a CUDA GPU (or --smoke for the CPU logic check)", file=sys.stderr)
            return 2
        dev, dtype = torch.device("cuda"), torch.bfloat16
        timer = Timer("cuda", args.rounds or 7, 5, 3)
        step_timer = Timer("cuda", args.rounds or 5, 2, 2)
    log = {"smoke": args.smoke, "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
           "torch": torch.__version__, "dtype": str(dtype), "targets": TARGETS,
           "layers": [], "k_multiples": [], "gathers": [], "steps": []}
    sections = args.only or ["layers", "kernels", "steps"]
    t0 = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))    # a time limit still writes what was measured
    print(f"bench_gpu: {log['device']}, torch {torch.__version__}, {str(dtype)[6:]}, medians of "
          f"{timer.rounds} interleaved rounds", flush=True)
    try:
        if "layers" in sections:
            print("== 1. layers (Llama-3.1-8B projections)", flush=True)
            for line in bench_layers(args, timer, dev, dtype, log):
                print(line, flush=True)
        if "steps" in sections:
            print("== 2. training steps", flush=True)
            for line in bench_steps(args, step_timer, dev, dtype, log):
                print(line, flush=True)
        if "kernels" in sections:
            print("== 3. k multiples and gathers", flush=True)
            for line in bench_kernels(args, timer, dev, log):
                print(line, flush=True)
    finally:
        log["wall_s"] = time.perf_counter() - t0
        with open(args.out, "w") as f:
            json.dump(log, f)
        print(f"bench_gpu: {log['wall_s']:.1f} s; raw samples in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
