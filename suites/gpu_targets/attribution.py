"""attribution: the device time the harness counts (celora_bench.timing.kernel_times, every thread) against the
CUDA-event time of one 8B layer (14336×4096, N = 8192) fwd+bwd, ours dense and CE-LoRA p = 0.5 r0 = 0 cached: a
count that missed the backward's kernels (autograd runs them on its own thread) would read about 1/3. Judged
both ways: at least 0.70 (nothing missed) and at most 1.05 (kernels on one stream cannot outlast the events
around them: a count above that double-counts). Beside it, one profile of each call counted two ways
(timing.kernel_counts): the device-side kernel events in the call's window (what the harness reports, Triton
kernels with no host op included) against the part the profiler links to the call's host ops (bookkeeping
excluded) plus the part linked to none: an exact check that the two agree within 3% (a kernel of another call
in the window, or one of this call outside it, breaks it).
On the CPU: op time (kernel_times of as many calls, after the rounds, so compared unpaired) against wall time:
the check's logic, not a measurement."""
from __future__ import annotations

from dataclasses import replace

from celora_bench import intervals as I
from celora_bench import timing
from celora_bench.cases import Case, Row
from celora_bench.suite import Check, CheckId, Context
from celora_bench.timing import TimeStats
from suites.gpu_targets import common

ATTRIBUTION_CHECK = CheckId("attribution", "attribution: device time / CUDA-event time")
CROSS_TOLERANCE = 0.03     # |window - (linked + unlinked)| / window, at most


def run(case: Case, ctx: Context) -> list[Row]:
    base, x, gy = common.layer_inputs(case, case.m, case.n, case.tokens)
    mods = {"dense": common.ours(base, 1.0, 0),
            f"p={common.ALL_P} r0=0 cached": common.ours(base, common.ALL_P, 0, cache_rows=True)}
    fns = {f"fwd+bwd {k}": common.fwd_bwd(v, x, gy) for k, v in mods.items()}
    for fn in fns.values():                                    # first backward: CE-LoRA selects I
        fn()
    forward = {f"fwd+bwd {k}": {"forward_kernel_s": TimeStats(timing.kernel_samples(
        lambda mod=mod: mod(x), case.device, reps=3)).median} for k, mod in mods.items()}
    rows = common.timed(case, fns, "layer", ctx.threads, forward)
    if not common.cuda(case):                                  # the sampler profiles on CUDA only
        rows = [replace(r, extra={**r.extra, "kernel_samples": timing.kernel_times([fns[r.component]] * len(
            r.samples), case.device)}) for r in rows]        # taken after the rounds: no rounds of their own
    out = []
    for r in rows:                                             # the cross-check: one profile, counted two ways
        counts = timing.kernel_counts([fns[r.component]] * 3, case.device)
        device_s, host_s = sum(c.seconds for c in counts), sum(c.host_s for c in counts)
        unlinked = sum(c.unlinked_s for c in counts)
        out.append(replace(r, extra={**r.extra, "cross_device_s": device_s, "cross_host_s": host_s,
                                     "cross_unlinked_s": unlinked}))
        out.append(common.fact(case, f"{r.component}: device-side kernel events in the window = linked to its host "
                                     f"ops + linked to none (within {CROSS_TOLERANCE:.0%})",
                               all(c.agrees(CROSS_TOLERANCE) for c in counts),
                               f"3 calls: device-side {device_s * 1e3:.3f} ms, host-linked {host_s * 1e3:.3f} ms, "
                               f"linked to no host op {unlinked * 1e3:.3f} ms"))
    return out


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
        detail = (f"events {common.ms(r):.3f} ms, kernels {TimeStats(kernel.samples).median * 1e3:.3f} ms; the "
                  f"forward's kernels alone {fwd:.3f} of the events (what a count blind to the backward would read)")
        scope = f"{case.layer} {case.m}x{case.n} N={case.tokens} {r.component}"
        for key, above in (("attribution", True), ("attribution_max", False)):
            out.append(common.target_check(ATTRIBUTION_CHECK, scope, what, iv, key, above, detail,
                                           reads=((case.id, r.component),)))
    return [c for c in out if c is not None]
