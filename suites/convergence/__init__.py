"""convergence: LoRA vs CE-LoRA loss curves on real text, with the paper's ablations, over seeds.

A pretrained model (suites/text_task.py) is LoRA fine-tuned on held-in text
and evaluated on held-out text. Every arm sees the same seeds and the same
data order. Arms: LoRA; CE-LoRA preset "paper" (tau 200); every projection
sampled at p=0.5; No-Sample-K and No-Sample-V (K or V left dense, as in the
paper); svd_rank 0 (no double-LoRA); tau 1 and 50 (tiny-byte) or 50 and 1000
(real weights); score residual_norm.

--model smollm2-135m: SmolLM2-135M-Instruct (real weights, Q4_1 dequantized to
fp32) on two tasks: "lm", held-out pydoc topics (eval loss), and "arith", the
generated word problems of suites/arith_task.py (exact-match accuracy of greedy
answers on held-out problems). Full mode (sized for a GPU; a CPU overnight):
3 seeds, 300 steps, 8 x 128 tokens (lm) or 16 problems (arith) per step, LoRA on
all 30 blocks, 500 test problems. Quick mode is a smoke run for a 2-core CPU:
1 seed, 4 steps of 2 x 64 tokens or 4 problems, LoRA on blocks 28 and 29 only,
one eval batch, 16 test problems: it shows that every arm runs, not how they compare.

--medium (with --model smollm2-135m: the accuracy claim on real weights, decided on a 2-core CPU in about
an hour): the "arith" task only, LoRA on all 30 blocks, arms LoRA, paper, all (every projection at p=0.5)
and svd0 (paper without double-LoRA); 4 seeds, a seed's arms one after another (same LoRA init where the
shapes agree, the same problems in the same order); 45 optimizer steps of 16 problems (720 of the 5000
training problems); the held-out answer loss (arith_task.heldout_loss) of the first 100 held-out problems at
steps 0, 15, 30 and 45 (the curve), and at steps 0 and 45 the loss and the exact-match accuracy on all 300;
each step's wall-clock time. The verdict is the equivalence test fixed in suites/convergence/medium.py
before the committed run. Sizing, measured on this 2-core CPU (fp32, 2 threads) before choosing, in two
quiet windows (14:14 and 15:15 UTC, 2026-12-06; other windows were shared with test runs and discarded): a
training step of 16 problems (padded to 38 tokens) took 2.68 / 2.16 s with LoRA and 2.39 / 2.02 s with paper
(median of steps 2-5; the first step, 3.6-6 s, warms up); the accuracy on 300 problems (greedy, 6 new tokens)
32 / 23 s; the held-out loss on 300 problems 47 s while it computed every column's logits (a 49152-word
vocabulary), 17 s once heldout_loss computed the answer columns' only (one trunk forward of 300 x 38 tokens),
so a look at the curve reads 100 problems (~6 s) and only the last reads all 300. The paper preset's SVDs
take 6 s per run. Choices: 16 problems per step (8 took 1.30 s and 24 took 3.24 s, measured in a busier
window: a larger batch is somewhat cheaper per problem, but in a fixed hour it means fewer optimizer steps,
30 at 24); 4 seeds rather than 3 (the paired 90% interval's half-width t·sd/√n is 1.43x narrower at 4, for a
third more time); 45 steps. A run (arm, seed) then costs ~4 + 45 x (2.0-2.7) + 2 x 7 + (17-24) + (23-32) =
150-200 s, 16 runs 40-53 min, plus ~1.5 min of loading, calibration and the shared step-0 evaluation:
41-55 min predicted, ~47 central (ceiling: 75 min). paper was faster than LoRA in both quiet
windows; all (1.79 s) and svd0 (1.94 s) were measured only while test runs shared the machine, where they
were at times 5-20x slower (LoRA: 5x), so the 2.7 s bound is an assumption for them: run it alone.
LoRA's train loss fell from 1.8 to 1.2 in 4 steps, so 45 steps move the held-out metrics well past the
margins; the verdict's check 0 reports at which look it happened. The run prints its progress and time left
after every look (medium.Progress).

Verdict per arm (quick and full; --medium: medium.py): Δ = arm - LoRA of the final metric, paired by seed
(same seed, same data), mean ± t(0.975, n-1)·SE over seeds. PASS when the whole interval lies
within ±tolerance (1% of LoRA's eval loss; 1 accuracy point), FAIL when it lies
wholly outside, NOISE otherwise; one seed gives no interval (INFO, smoke run).
The step-0 evaluation is shared by the arms of a seed: LoRA's B starts at zero, so
every arm's model equals the pretrained one there.
"""
from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import replace

import torch

import core
from celora_bench import distributed, pretrained
from celora_bench.cases import Case, Row
from celora_bench.suite import Context, Options, Suite
from suites import arith_task, corpora, text_task
from suites.convergence import checks, medium, render
from suites.convergence.checks import ARMS, TASKS
from suites.text_task import ALPHA, BATCH, LR, RANK, SEQ, weights_label

NAME = "convergence"
DISTRIBUTED = True             # runs under torchrun with DDP: each rank its own data, losses averaged
FSDP = True                    # or, with --fsdp, sharded by FSDP2 (distributed.wrap)
DESCRIPTION = "Train/eval loss curves of LoRA vs CE-LoRA and ablations on real text, several seeds"
QUESTION = "Does fine-tuning with CE-LoRA reach LoRA's held-out loss, and what does each ablation change?"
PLOT_CAPTIONS = {"convergence-tradeoff": "each arm's final accuracy and held-out loss against its step time",
                 "convergence": "loss curves, band = ±1 sd over seeds"}
P_ALL = 0.5
TINY_ARMS = tuple(a for a in ARMS if a != "tau1000")
REAL_ARMS = tuple(a for a in ARMS if a != "tau1")       # tau in {50, 200 (paper), 1000}
ARITH_POOL = 5000        # training problems drawn from (seeded order per seed)
MEDIUM_ARMS = ("lora", "paper", "all", "svd0")
MEDIUM_SEEDS = (0, 1, 2, 3)
MEDIUM_STEPS, MEDIUM_EVAL_EVERY, MEDIUM_BATCH, MEDIUM_TEST_N = 45, 15, 16, 300     # sizing: the docstring


def _sizes(mode: str, model: str = "tiny-byte"):
    real = model in pretrained.PRETRAINED
    if mode == "medium":                # the arithmetic task on any model: see the module docstring
        return dict(steps=MEDIUM_STEPS, eval_every=MEDIUM_EVAL_EVERY, eval_batches=1, seeds=MEDIUM_SEEDS,
                    layers="all", arith_batch=MEDIUM_BATCH, test_n=MEDIUM_TEST_N, size="medium")
    if mode == "quick" and real:        # smoke run on a 2-core CPU: see the module docstring
        return dict(steps=4, eval_every=4, eval_batches=1, seeds=(0,), batch=2, seq=64, layers="28,29",
                    arith_batch=4, test_n=16)
    if real:
        return dict(steps=300, eval_every=25, eval_batches=8, seeds=(0, 1, 2), batch=BATCH, seq=SEQ, layers="all",
                    arith_batch=16, test_n=500)
    if mode == "quick":
        return dict(steps=60, eval_every=15, eval_batches=4, seeds=(0, 1, 2))
    return dict(steps=300, eval_every=25, eval_batches=8, seeds=(0, 1, 2, 3, 4))


def plan(arm: str) -> dict:
    """The conversion plan of an arm: pattern -> CELoRAConfig."""
    kw = dict(r=RANK, alpha=ALPHA)
    if arm == "lora":
        return core.preset("dense", **kw)
    if arm in ("all", "no-sample-k", "no-sample-v"):
        p = core.preset("all", keep_ratio=P_ALL, **kw)
        dense = core.preset("dense", **kw)
        for proj in {"no-sample-k": ("k_proj",), "no-sample-v": ("v_proj",)}.get(arm, ()):
            p[f"*{proj}"] = dense[f"*{proj}"]
        return p
    if arm == "svd0":
        return core.preset("paper", svd_rank=0, **kw)
    p = core.preset("paper", **kw)
    if arm in ("tau1", "tau50", "tau1000"):
        return {k: replace(v, tau=int(arm[3:])) for k, v in p.items()}
    if arm == "residual_norm":
        return {k: replace(v, score="residual_norm") for k, v in p.items()}
    if arm == "paper":
        return p
    raise ValueError(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}")


def cases(opts: Options) -> list[Case]:
    model = text_task.model_of(opts)
    sz = _sizes(opts.mode, model)
    real = model in pretrained.PRETRAINED
    is_medium = opts.mode == "medium"
    if is_medium and opts.data:
        raise ValueError("--medium runs the arithmetic task (suites/arith_task.py); --data is not used there")
    extra = tuple((k, v) for k, v in (("data", opts.data), ("path", opts.model_path)) if v)
    extra += tuple((k, sz[k]) for k in ("batch", "seq", "layers", "size") if k in sz)
    extra += (("fsdp", True),) if opts.fsdp else ()
    base = (("seed", None), ("steps", sz["steps"]), ("eval_every", sz["eval_every"]),
            ("eval_batches", sz["eval_batches"]))
    out = []
    for task in (("arith",) if is_medium else TASKS if real and not opts.data else ("lm",)):
        t_extra = (("task", task),) if real or is_medium else ()
        if task == "arith":
            t_extra += (("arith_batch", sz["arith_batch"]), ("test_n", sz["test_n"]))
        tokens = sz["arith_batch"] if task == "arith" else sz.get("batch", BATCH) * sz.get("seq", SEQ)
        for seed in sz["seeds"]:
            for arm in (MEDIUM_ARMS if is_medium else REAL_ARMS if real else TINY_ARMS):
                params = tuple((k, seed if k == "seed" else v) for k, v in base) + extra + t_extra
                out.append(Case(NAME, arm, model, "all", 0, 0, tokens, RANK, dtype=opts.dtype, device=opts.device,
                                params=tuple(sorted(params))))
    return out


def _mean_over_ranks(loss: torch.Tensor) -> float:
    if distributed.active():
        loss = loss.clone()
        torch.distributed.all_reduce(loss)
        loss /= distributed.world()
    return loss.item()


def _eval(model, batches) -> float:
    model.eval()
    with torch.no_grad():
        loss = statistics.fmean(model(input_ids=b, labels=b).loss.item() for b in batches)
    model.train()
    return loss


_STEP0: dict[tuple, float] = {}
_POOL: list = []


def _task(case: Case):
    p = dict(case.params)
    return text_task.task(p.get("path"), p.get("data"),
                          model=case.model if case.model in pretrained.PRETRAINED else None)


def _batches(case: Case, t, device):
    """Training batches as model(**kwargs): random text windows (lm) or arithmetic problems (arith), in an
    order fixed by the seed (the same in every arm); each data-parallel rank its own stream."""
    p = dict(case.params)
    if p.get("task", "lm") == "arith":
        if not _POOL:
            _POOL.extend(arith_task.problems("train", ARITH_POOL, seed=0))
        rng = random.Random(p["seed"] * 1000 + distributed.rank())
        tokenizer = arith_task.tokenizer_of(t.tokens)
        while True:
            ids, mask, labels = arith_task.batch(tokenizer, rng.sample(_POOL, p["arith_batch"]))
            yield dict(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
    g = torch.Generator().manual_seed(p["seed"] * 1000 + distributed.rank())
    while True:
        x = corpora.windows(t.train, p.get("batch", BATCH), p.get("seq", SEQ), g).to(device)
        yield dict(input_ids=x, labels=x)


def _evaluate(case: Case, t, model, device, final: bool = False) -> dict[str, float]:
    """metric -> value: held-out eval loss (lm); exact-match accuracy in % of greedy answers to held-out
    problems (arith); medium size: the held-out answer loss (arith_task.heldout_loss) of the first medium.CURVE_N
    test problems at every look (the curve), and at step 0 and the last step (final) also the loss and the
    accuracy on all of them."""
    p = dict(case.params)
    if p.get("task", "lm") == "arith":
        tests, tok = arith_task.problems("test", p["test_n"], seed=0), arith_task.tokenizer_of(t.tokens)
        bare = getattr(model, "module", model)
        if p.get("size") != "medium":
            return {"accuracy": 100.0 * arith_task.accuracy(bare, tok, tests)}
        if not final:               # the curve's looks: the first CURVE_N problems only
            return {"eval_loss_curve": arith_task.heldout_loss(bare, tok, tests[:medium.CURVE_N])}
        per = arith_task.heldout_losses(bare, tok, tests)
        return {"eval_loss_curve": arith_task.pooled(per[:medium.CURVE_N]), "eval_loss": arith_task.pooled(per),
                "accuracy": 100.0 * arith_task.accuracy(bare, tok, tests)}
    evals = [b.to(device) for b in t.eval_batches(p.get("batch", BATCH), p.get("seq", SEQ), p["eval_batches"])]
    return {"eval_loss": _eval(model, evals)}


def run_case(case: Case, ctx: Context) -> list[Row]:
    p = dict(case.params)
    t = _task(case)
    task = p.get("task", "lm")
    device = distributed.local_device(case.device)
    t_case = time.perf_counter()
    torch.manual_seed(p["seed"])                       # the LoRA init (the same on every rank)
    model = t.model().to(device)
    core.convert(model, text_task.on_layers(plan(case.provider), p.get("layers", "all")))
    if distributed.active():                           # before the optimizer: FSDP2 replaces the parameters
        model = distributed.wrap(model, "fsdp" if p.get("fsdp") else "ddp")
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR)
    core.attach_optimizer(opt, model)
    batches = _batches(case, t, device)
    key = (case.model, p.get("path"), p.get("data"), task, p.get("batch"), p.get("seq"), p["eval_batches"],
           p.get("test_n"), p.get("size"), case.device, case.dtype)
    if key not in _STEP0:                              # B = 0 at step 0: every arm is the pretrained model
        _STEP0[key] = _evaluate(case, t, model, device, final=True)
    curves = {k: ([0], [v]) for k, v in _STEP0[key].items()}
    train_steps, train_loss, step_s = [], [], []
    progress = medium.Progress(case, cases(ctx.options), t_case) if p.get("size") == "medium" else None
    model.train()
    for step in range(1, p["steps"] + 1):
        batch = next(batches)
        t0 = time.perf_counter()
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_s.append(time.perf_counter() - t0)
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"{case.provider} seed {p['seed']}: loss is {loss.item()} at step {step}")
        train_steps.append(step)
        train_loss.append(_mean_over_ranks(loss.detach()))
        if step % p["eval_every"] == 0 or step == p["steps"]:
            for k, v in _evaluate(case, t, model, device, final=step == p["steps"]).items():
                curves[k][0].append(step)
                curves[k][1].append(v)
            if progress:
                progress.say(step, step_s, {k: c[1][-1] for k, c in curves.items()})
    refreshes = sum(m.refresh_count for m in core.celora_modules(model))   # DDP's .module is found too
    metric = "accuracy" if task == "arith" else "eval_loss"
    note = weights_label(case)
    finals = {k: c[1][-1] for k, c in curves.items()}
    return [
        Row(case, "train_loss", note=note, extra={"steps": train_steps, "values": train_loss}),
        *[Row(case, {"accuracy": "eval_accuracy"}.get(k, k), note=note,
              extra={"steps": c[0], "values": c[1]}) for k, c in curves.items()],
        Row(case, "step", tuple(step_s), note="seconds per training step (forward, backward, optimizer)"),
        Row(case, "final", note=note, extra={"task": task, "metric": metric, **finals,
                                             "train_loss": statistics.fmean(train_loss[-10:]),
                                             "refreshes": refreshes,
                                             **({"case_s": time.perf_counter() - t_case} if progress else {})}),
    ]




SUITE = Suite(NAME=NAME, DESCRIPTION=DESCRIPTION, QUESTION=QUESTION, cases=cases, run_case=run_case,
              verdict=checks.verdict, CHECKS=checks.CHECKS, plots=render.plots, tables=render.tables,
              PLOT_CAPTIONS=PLOT_CAPTIONS, DISTRIBUTED=DISTRIBUTED, FSDP=FSDP)
