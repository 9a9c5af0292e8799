"""attribution: the device time the harness counts (celora_bench.timing.kernel_times, every thread) against the
CUDA-event time of one 8B layer (14336×4096, N = 8192) fwd+bwd, ours dense and CE-LoRA p = 0.5 r0 = 0 cached: a
count that missed the backward's kernels (autograd runs them on its own thread) would read about 1/3. On the
CPU: op time (kernel_times of as many calls, after the rounds, so compared unpaired) against wall time:
the check's logic, not a measurement."""
from __future__ import annotations

from dataclasses import replace

from celora_bench import intervals as I
from celora_bench import timing
from celora_bench.cases import Case, Row
from celora_bench.suite import Check, Context
from celora_bench.timing import TimeStats
from suites.gpu_targets import common

ATTRIBUTION_CHECK = "4. attribution: device time / CUDA-event time"


def run(case: Case, ctx: Context) -> list[Row]:
    base, x, gy = common.layer_inputs(case, case.m, case.n, case.tokens)
    mods = {"dense": common.ours(base, 1.0, 0),
            f"p={common.ALL_P} r0=0 cached": common.ours(base, common.ALL_P, 0, cache_rows=True)}
    fns = {f"fwd+bwd {k}": common.fwd_bwd(v, x, gy) for k, v in mods.items()}
    for fn in fns.values():                                    # first backward: CE-LoRA selects I
        fn()
    forward = {f"fwd+bwd {k}": {"forward_kernel_s": TimeStats(timing.kernel_samples(
        lambda mod=mod: mod(x), case.device, reps=3)).median} for k, mod in mods.items()}
    rows = common.timed(case, fns, "layers", ctx.threads, forward)
    if not common.cuda(case):                                  # the sampler profiles on CUDA only
        rows = [replace(r, extra={**r.extra, "kernel_samples": timing.kernel_times([fns[r.component]] * len(
            r.samples), case.device)}) for r in rows]        # taken after the rounds: no rounds of their own
    return rows


def verdict(case: Case, rows: list[Row]) -> list[Check]:
    what = "kernel time / CUDA-event time" if common.cuda(case) else "CPU op time / wall time"
    out = []
    for r in rows:
        kernel = r.kernel_series()
        if kernel is None:
            continue
        # CUDA: each round's profiled call beside its events, paired; CPU: taken apart, compared unpaired
        iv = I.paired_ratio(kernel, r.series) if kernel.rounds else I.unpaired_ratio(kernel, r.series)
        fwd = r.extra["forward_kernel_s"] / r.time.median
        out.append(common.target_check(
            ATTRIBUTION_CHECK, f"{case.layer} {case.m}x{case.n} N={case.tokens} {r.component}", what, iv,
            "attribution", True, f"events {common.ms(r):.3f} ms, kernels {TimeStats(kernel.samples).median * 1e3:.3f}"
            f" ms; the forward's kernels alone {fwd:.3f} of the events (what a count blind to the backward "
            f"would read)", reads=((case.id, r.component),)))
    return [c for c in out if c is not None]
