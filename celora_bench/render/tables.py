"""Generic tables of a run's rows, format-neutral: every number is formatted here and nowhere else
(exports of the raw rows keep full precision, celora_bench.render.export).

A Table has the small API suites already know (add_column, add_row); back-ends read title, columns,
rows and caption. A cell is text; a newline inside a cell is a line break in every back-end."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from celora_bench import roofline
from celora_bench.cases import Case, Row
from celora_bench.flops import CONVENTION
from celora_bench.models import layer_order

PARTS_PREFIX = ("fwd.", "bwd.")
LAUNCH_MARK = "⚑ launch-bound"
ROOFLINE_CAPTION = ("speed of light: analytic bytes (each operand read once, each result written once), "
                    "intensity = FLOPs/byte, achieved = FLOPs (bytes) over the median time, roof = the one that "
                    "binds at that intensity, SOL = achieved / roof; peaks calibrated at the start of the run")


@dataclass
class Column:
    name: str
    numeric: bool = False          # right-aligned


@dataclass
class Table:
    """A titled grid of text cells with a caption; built once, then only read by the back-ends."""

    title: str = ""
    caption: str = ""
    columns: list[Column] = field(default_factory=list)
    rows: list[tuple[str, ...]] = field(default_factory=list)

    def add_column(self, name: str, justify: str = "left") -> None:
        self.columns.append(Column(name, justify == "right"))

    def add_row(self, *cells) -> None:
        self.rows.append(tuple("" if c is None else str(c) for c in cells))


def table(title: str, columns: list[str], left: tuple[str, ...], caption: str = "") -> Table:
    """A Table whose columns are numeric (right-aligned) except those named in left."""
    return Table(title, caption, [Column(c, c not in left) for c in columns])


def ms(row: Row | None) -> str:
    """Median ms, "*" when IQR/median > 10%."""
    if row is None or row.time is None:
        return "—"
    return f"{row.time.median * 1e3:.2f}{'*' if row.time.spread else ''}"


def mib(v: int | None) -> str:
    return "—" if v is None else f"{v / 2**20:.1f}"


def by_case(rows: list[Row]) -> dict[Case, dict[str, Row]]:
    out: dict[Case, dict[str, Row]] = defaultdict(dict)
    for r in rows:
        out[r.case][r.component] = r
    return out


def parts_sum(comps: dict[str, Row]) -> float | None:
    parts = [r.time.median for name, r in comps.items() if name.startswith(PARTS_PREFIX) and r.time]
    return sum(parts) if parts else None


def launch_bound(row: Row) -> bool:
    return bool(row.extra.get("launch_bound"))


def detail_table(case: Case, comps: dict[str, Row]) -> Table:
    """Every component of one case: time statistics, FLOPs analytic and counted, memory, notes."""
    t = table(case.id, ["component", "median ms", "IQR %", "min ms", "n", "FLOPs analytic", "FLOPs counted",
                        "memory bytes", "what / note"], ("component", "what / note"),
              f"{CONVENTION}; memory: see 'what' per row")
    for name, r in comps.items():
        tm = r.time
        t.add_row(name, f"{tm.median * 1e3:.3f}" if tm else "—",
                  f"{tm.iqr / tm.median * 100:.1f}" if tm and tm.median else "—",
                  f"{tm.min * 1e3:.3f}" if tm else "—", str(tm.count) if tm else "0",
                  "—" if r.flops_analytic is None else f"{r.flops_analytic:,}",
                  "—" if r.flops_counted is None else f"{r.flops_counted:,}",
                  "—" if r.mem_bytes is None else f"{r.mem_bytes:,}",
                  "; ".join(x for x in (r.note, r.mem_what) if x))
    return t


def _cell(r: Row | None) -> str:
    """One component of one provider: median (IQR, n), kernel time, GFLOP analytic / counted, MiB, marks."""
    if r is None:
        return "—"
    lines, t = [], r.time
    if t is not None:
        iqr = f"{t.iqr / t.median * 100:.1f}" if t.median else "—"
        lines.append(f"{t.median * 1e3:.3f}{'*' if t.spread else ''} ms (IQR {iqr}%, n={t.count})")
    if r.extra.get("kernel_s") is not None:
        lines.append(f"kernel {float(r.extra['kernel_s']) * 1e3:.3f} ms")
    if r.flops_analytic is not None or r.flops_counted is not None:
        fa = "—" if r.flops_analytic is None else f"{r.flops_analytic / 1e9:.3f}"
        fc = "—" if r.flops_counted is None else f"{r.flops_counted / 1e9:.3f}"
        lines.append(f"{fa} / {fc} GF")
    if r.mem_bytes is not None:
        lines.append(f"{r.mem_bytes / 2**20:.2f} MiB")
    if launch_bound(r):
        lines.append(LAUNCH_MARK)
    return "\n".join(lines) or "—"


GRID_CAPTION = (f"each cell: median ms over the raw samples (* = IQR/median > 10%), IQR % and n samples; GFLOP "
                f"analytic / counted ({CONVENTION}); memory MiB; {LAUNCH_MARK}: the device time is launch "
                f"overhead, not the kernel")


def component_grids(rows: list[Row]) -> list[Table]:
    """Per layer (model, N, r, dtype, device, layer): components × providers, block order."""
    cases = by_case(rows)
    layers: dict[tuple, list[Case]] = defaultdict(list)
    for c in cases:
        layers[(c.model, c.tokens, c.rank, c.dtype, c.device, c.layer)].append(c)
    out = []
    for key in sorted(layers, key=lambda k: (k[:5], layer_order(k[5]), k[5])):
        cs = sorted(layers[key], key=lambda c: c.order)
        model, tokens, rank, dtype, device, layer = key
        t = table(f"{layer} {cs[0].m}x{cs[0].n} · {model} · N={tokens} · r={rank} · {dtype} · {device}",
                  ["component"] + [c.label for c in cs], ("component",), GRID_CAPTION)
        for name in dict.fromkeys(name for c in cs for name in cases[c]):
            t.add_row(name, *(_cell(cases[c].get(name)) for c in cs))
        out.append(t)
    return out


def peaks_text(peaks) -> str:
    return (f"peaks {peaks.flops_per_s / 1e9:.1f} GFLOP/s, {peaks.bytes_per_s / 1e9:.1f} GB/s (ridge "
            f"{roofline.ridge(peaks):.1f} FLOP/B; {peaks.device} {peaks.dtype}, {peaks.threads} threads)")


def roofline_table(title: str, rows: list[Row], machine_info: dict) -> Table | None:
    """Every timed component against the machine's measured roofs (celora_bench.roofline); None without
    peaks or without a component that has analytic FLOPs and bytes."""
    peaks = roofline.peaks_in(rows, machine_info)
    if peaks is None:
        return None
    t = table(f"{title}: {peaks_text(peaks)}", ["layer", "provider", "component", "GFLOP", "MB", "FLOP/B",
                                                "GFLOP/s", "GB/s", "roof", "SOL %"],
              ("layer", "provider", "component", "roof"), ROOFLINE_CAPTION)
    for r, p in roofline.points(rows, peaks):
        t.add_row(f"{r.case.layer} {r.case.m}x{r.case.n}", r.case.label, r.component, f"{p.flops / 1e9:.3f}",
                  f"{p.bytes / 1e6:.2f}", f"{p.intensity:.1f}", f"{p.flops_per_s / 1e9:.1f}",
                  f"{p.bytes_per_s / 1e9:.1f}", p.roof, f"{p.sol * 100:.0f}")
    return t if t.rows else None
