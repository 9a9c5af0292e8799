"""Speed of light: the machine's measured peaks, and each component against them (the roofline model of
Williams, Waterman and Patterson, CACM 2009).

Calibration (a few seconds at the start of every run, in the run's device, dtype and thread count), as the
Empirical Roofline Toolkit and STREAM measure: the compute roof is the median over several blocks of a
large square GEMM (2·n³ FLOPs), the memory roof the better of STREAM's copy (a[:] = b: one read, one write)
and triad (a = b + s·c: two reads, one write) over arrays far larger than the last-level cache. On CUDA,
events time the blocks and the device's published peaks are stored beside the measured ones.

For a component with F FLOPs (2·m·n·k per matmul) and B bytes (the analytic minimum: every operand read
once, every result written once; core.traffic) taking t seconds: intensity I = F/B, the roof at I is
min(peak FLOP/s, I · peak bytes/s), and SOL = (F/t) / roof, i.e. the time it would take at the roof over
the time it took. A component without FLOPs (a gather) is judged on its bytes alone: SOL = (B/t) / peak B/s.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch

from celora_bench import timing

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}
# Published dense peaks of the GPUs this project has run on: FLOP/s per dtype and HBM bytes/s.
PUBLISHED = {
    "H200": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12, "tf32": 494e12, "bytes_per_s": 4.8e12},
    "H100": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12, "tf32": 494e12, "bytes_per_s": 3.35e12},
}


@dataclass(frozen=True)
class Peaks:
    """The measured roofs of one device/dtype/thread setting, with their raw samples."""

    device: str
    dtype: str
    threads: int
    flops_per_s: float
    bytes_per_s: float
    gemm_n: int
    gemm_samples_s: tuple[float, ...]
    copy_bytes: int
    copy_samples_s: tuple[float, ...]
    triad_samples_s: tuple[float, ...]
    published: dict | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Peaks":
        known = set(cls.__dataclass_fields__)
        d = {k: v for k, v in d.items() if k in known}
        for k in ("gemm_samples_s", "copy_samples_s", "triad_samples_s"):
            d[k] = tuple(d.get(k) or ())
        return cls(**d)


def calibrate(device: str = "cpu", dtype: str = "float32", threads: int | None = None,
              gemm_n: int | None = None, stream_bytes: int | None = None, reps: int = 5) -> Peaks:
    """Peak GEMM FLOP/s and memory bytes/s of this device in this dtype and thread count (a few seconds)."""
    cuda = device.startswith("cuda")
    dt = DTYPES[dtype]
    gemm_n = gemm_n or (8192 if cuda else 2048)
    stream_bytes = stream_bytes or ((2 << 30) if cuda else (256 << 20))   # per array, >> last-level cache
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        def clock(fn) -> float:
            return timing.call_seconds(fn, device)
        gemm = _gemm(clock, gemm_n, device, dt, reps)
        n = stream_bytes // torch.tensor([], dtype=dt).element_size()
        copy, triad = _stream(clock, n, device, dt, reps)
    finally:
        torch.set_num_threads(old)
    nbytes = n * torch.tensor([], dtype=dt).element_size()
    flops = 2 * gemm_n ** 3 / statistics.median(gemm)
    bw = max(2 * nbytes / statistics.median(copy), 3 * nbytes / statistics.median(triad))
    return Peaks(device, dtype, threads or old, flops, bw, gemm_n, gemm, nbytes, copy, triad,
                 published_peaks(device, dtype) if cuda else None)


def _gemm(clock, n: int, device: str, dt, reps: int) -> tuple[float, ...]:
    """Seconds of reps (n, n) @ (n, n) products after one warm-up (threads, caches)."""
    a = torch.randn(n, n, device=device).to(dt)
    b = torch.randn(n, n, device=device).to(dt)
    c = torch.empty(n, n, device=device, dtype=dt)
    torch.mm(a, b, out=c)
    return tuple(clock(lambda: torch.mm(a, b, out=c)) for _ in range(reps))


def _stream(clock, n: int, device: str, dt, reps: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Seconds of reps STREAM copies (z = x) and triads (z = x + 2·y) over n elements, after one of each."""
    x = torch.ones(n, device=device, dtype=dt)
    y = torch.ones(n, device=device, dtype=dt)
    z = torch.empty(n, device=device, dtype=dt)
    z.copy_(x)
    torch.add(x, y, alpha=2.0, out=z)
    copy = tuple(clock(lambda: z.copy_(x)) for _ in range(reps))
    triad = tuple(clock(lambda: torch.add(x, y, alpha=2.0, out=z)) for _ in range(reps))
    return copy, triad


def published_peaks(device: str, dtype: str) -> dict | None:
    """The device's published peak FLOP/s in dtype and bytes/s, where this project knows them."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    for key, peaks in PUBLISHED.items():
        if key in name:
            return {"name": name, "flops_per_s": peaks.get(dtype), "bytes_per_s": peaks["bytes_per_s"]}
    return {"name": name, "flops_per_s": None, "bytes_per_s": None}


@dataclass(frozen=True)
class Point:
    """One component on the roofline."""

    flops: int
    bytes: int
    seconds: float
    intensity: float          # FLOPs per byte (0 for a FLOP-free component)
    flops_per_s: float
    bytes_per_s: float
    roof: str                 # "compute" or "memory": the roof that binds at this intensity
    sol: float                # achieved over the roof at this intensity


def point(flops: int, nbytes: int, seconds: float, peaks: Peaks) -> Point:
    """Where a component of flops and nbytes that took seconds sits against the peaks."""
    intensity = flops / nbytes if nbytes else float("inf")
    fps, bps = flops / seconds, nbytes / seconds
    if flops == 0:
        return Point(flops, nbytes, seconds, 0.0, fps, bps, "memory", bps / peaks.bytes_per_s)
    memory_roof = intensity * peaks.bytes_per_s
    if memory_roof < peaks.flops_per_s:
        return Point(flops, nbytes, seconds, intensity, fps, bps, "memory", fps / memory_roof)
    return Point(flops, nbytes, seconds, intensity, fps, bps, "compute", fps / peaks.flops_per_s)


def amdahl_bound(share, p):
    """The speed-up bound when a part that takes `share` of the time is cut to p of it: 1 / (1 − s + s·p)
    (Amdahl's law). Works on floats and on numpy arrays alike."""
    return 1 / (1 - share + share * p)


def ridge(peaks: Peaks) -> float:
    """The intensity (FLOPs/byte) where the two roofs meet."""
    return peaks.flops_per_s / peaks.bytes_per_s


ROOF_GEMM, ROOF_STREAM = "roof.gemm", "roof.stream"     # rows a suite times in its rounds (suites/layer_bench)
OVER_ROOF = 1.05        # a compute-bound component above this SOL means the roof was measured too low


def peaks_in(rows, machine_info: dict | None = None) -> Peaks | None:
    """The roofs measured in the run's rounds: the best sample over the whole run (every worker process) of
    the GEMM timed at each layer's G_y·W0 shape, and of the STREAM copy; the start calibration
    (peaks_of) where the rows have none (files from before roofs were timed in rounds)."""
    gemm = [(r.flops_analytic / min(r.samples), r) for r in rows
            if r.component == ROOF_GEMM and r.samples and r.flops_analytic]
    stream = [(r.extra["bytes_analytic"] / min(r.samples), r) for r in rows
              if r.component == ROOF_STREAM and r.samples and r.extra.get("bytes_analytic")]
    if not gemm or not stream:
        return peaks_of(machine_info or {})
    flops, g = max(gemm, key=lambda x: x[0])
    bw, c = max(stream, key=lambda x: x[0])
    case = g.case
    return Peaks(case.device, case.dtype, (machine_info or {}).get("threads", 0), flops, bw, case.m,
                 tuple(g.samples), c.extra["bytes_analytic"] // 2, tuple(c.samples), ())


def peaks_of(machine_info: dict) -> Peaks | None:
    """The run's calibrated peaks from its machine record (None: a run from before calibration, or it failed)."""
    d = (machine_info or {}).get("roofline")
    if not d or "error" in d:
        return None
    return Peaks.from_json(d)


def row_point(row, peaks: Peaks) -> Point | None:
    """A timed row with analytic FLOPs and bytes (extra["bytes_analytic"]) on the roofline; kernel time where
    the row has it (CUDA), else its median wall time."""
    nbytes = row.extra.get("bytes_analytic")
    if not row.samples or row.flops_analytic is None or not nbytes:
        return None
    seconds = statistics.median(row.kernel or row.samples)
    return point(row.flops_analytic, nbytes, seconds, peaks) if seconds > 0 else None


def points(rows, peaks: Peaks) -> list[tuple[object, Point]]:
    """(row, Point) for every row that can be placed on the roofline, in row order."""
    out = []
    for r in rows:
        p = row_point(r, peaks)
        if p is not None:
            out.append((r, p))
    return out
