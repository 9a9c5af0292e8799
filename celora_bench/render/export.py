"""`celora-bench export`: a run's rows, verdict or speed-of-light figures as one table, through pandas.
CSV and JSON keep every digit; md/latex/html are formatted (html: a complete page with that table; the
report with verdict and plots is celora_bench.render.page)."""
from __future__ import annotations

import json

import pandas as pd

from celora_bench.cases import Case
from celora_bench.flops import CONVENTION
from celora_bench.results import Run

CASE_COLUMNS = [f for f in Case.__dataclass_fields__ if f != "params"]


def frame(run: Run) -> pd.DataFrame:
    """One line per (case, component). Units: seconds, FLOPs (2·m·n·k), bytes."""
    records = []
    for r in run.rows:
        d = r.to_json()                                  # the file's own fields, stats derived once
        rec = {"case_id": d["case_id"], **{k: getattr(r.case, k) for k in CASE_COLUMNS},
               "params": json.dumps(dict(r.case.params), sort_keys=True), "component": r.component}
        rec.update({f"{k}_s": d[k] for k in ("median", "iqr", "min")})
        rec.update({k: d[k] for k in ("count", "spread", "flops_analytic", "flops_counted", "mem_bytes",
                                      "mem_what", "note")})
        rec["samples_s"] = json.dumps(d["samples"])
        rec["extra"] = json.dumps(d["extra"], sort_keys=True)
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    for col in ("flops_analytic", "flops_counted", "mem_bytes"):
        if col in df:
            df[col] = df[col].astype("Int64")   # integers stay integers, missing stays missing
    return df


def _rendered(df: pd.DataFrame) -> pd.DataFrame:
    """For human formats: milliseconds with 4 significant digits, no raw samples."""
    out = df.drop(columns=["samples_s", "case_id", "extra"], errors="ignore").copy()
    for col in ("median_s", "iqr_s", "min_s"):
        if col in out:
            out[col.replace("_s", "_ms")] = out.pop(col).map(lambda v: None if pd.isna(v) else float(f"{v * 1e3:.4g}"))
    return out


def verdict_frame(run: Run) -> pd.DataFrame:
    """One line per verdict check, recomputed from the rows: its id and title, value with its interval [lo, hi],
    the scope's fields (Check.labels: layer, p, r0, mode, ...) each in its own column."""
    from celora_bench.render.view import checks_of, suites_of

    checks = [(s, c) for s in suites_of(run) for c in checks_of(run, s)]
    labels = list(dict.fromkeys(k for _, c in checks for k, _ in c.labels))     # the scope's fields, as columns
    records = [{"suite": s, **{k: v for k, v in c.to_json().items() if k not in ("reads", "labels")},
                **dict(c.labels)} for s, c in checks]
    cols = ["suite", "check", "title", "scope", *labels, "metric", "value", "lo", "hi", "target", "status", "kind",
            "rounds", "detail"]
    return pd.DataFrame.from_records(records, columns=cols)


def roofline_frame(run: Run) -> pd.DataFrame:
    """One line per timed component with analytic FLOPs and bytes: where it sits against the run's peaks.
    Raw inputs (FLOPs, bytes, seconds, the peaks) are columns, so every figure can be recomputed."""
    from celora_bench import roofline

    peaks = roofline.peaks_in(run.rows, run.machine_info)
    cols = ["case_id", "layer", "provider", "component", "flops", "bytes", "seconds", "intensity_flop_per_byte",
            "flops_per_s", "bytes_per_s", "roof", "sol", "peak_flops_per_s", "peak_bytes_per_s"]
    if peaks is None:
        return pd.DataFrame(columns=cols)
    records = [{"case_id": r.case.id, "layer": r.case.layer, "provider": r.case.provider, "component": r.component,
                "flops": p.flops, "bytes": p.bytes, "seconds": p.seconds, "intensity_flop_per_byte": p.intensity,
                "flops_per_s": p.flops_per_s, "bytes_per_s": p.bytes_per_s, "roof": p.roof, "sol": p.sol,
                "peak_flops_per_s": peaks.flops_per_s, "peak_bytes_per_s": peaks.bytes_per_s}
               for r, p in roofline.points(run.rows, peaks)]
    return pd.DataFrame.from_records(records, columns=cols)


TABLES = {"rows": (frame, "one line per (case, component)"),
          "verdict": (lambda run: verdict_frame(run), "one line per verdict check, value [lo, hi]"),
          "roofline": (lambda run: roofline_frame(run), "one line per timed component against the measured peaks")}


def export(run: Run, fmt: str, table: str = "rows") -> str:
    """table "rows": one line per (case, component); "verdict": one line per check with its interval;
    "roofline": one line per timed component with its speed-of-light figures."""
    make, what = TABLES[table]
    df = make(run)
    if fmt == "csv":
        return df.to_csv(index=False)                      # full repr precision
    if fmt == "json":   # json.dumps writes repr floats; pandas' to_json rounds to 15 digits
        records = [{k: (None if v is pd.NA or v is None or (isinstance(v, float) and v != v) else
                        int(v) if hasattr(v, "item") and isinstance(v.item(), int) else v)
                    for k, v in rec.items()} for rec in df.to_dict(orient="records")]
        return json.dumps({"flops_convention": CONVENTION, "units": {"*_s": "seconds", "mem_bytes": "bytes"},
                           table: records}, indent=1)
    shown = _rendered(df) if table == "rows" else df.astype(object).where(df.notna(), None)
    note = f"{CONVENTION}; " + {"rows": "times in ms (4 significant digits)",
                                "verdict": "values unitless ratios/shares, [lo, hi] a 95.5% interval between worker "
                                           "processes (celora_bench.intervals)",
                                "roofline": "seconds (median; kernel time on CUDA), bytes analytic, SOL = achieved "
                                            "/ the roof at the component's intensity"}[table]
    if fmt == "md":
        return f"{note}\n\n" + shown.to_markdown(index=False) + "\n"
    if fmt == "latex":
        return shown.to_latex(index=False, na_rep="--", caption=note)
    if fmt == "html":     # a complete, titled page (the report with verdict and plots: celora-bench report)
        from celora_bench.render.html import esc, page
        title = f"celora-bench {table}: {run.path}"
        return page(title, f"<h1>{esc(title)}</h1>\n<p class=\"note\">{esc(note)}; {what}</p>\n<div class=\"scroll\">"
                           + shown.to_html(index=False, na_rep="—", border=0) + "</div>")
    raise ValueError(f"unknown export format {fmt!r}; allowed: csv, md, latex, json, html")
