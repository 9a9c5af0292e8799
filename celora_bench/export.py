"""Exports a run's rows through pandas. CSV and JSON keep every digit; md/latex/html are rendered."""
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


def export(run: Run, fmt: str) -> str:
    df = frame(run)
    if fmt == "csv":
        return df.to_csv(index=False)                      # full repr precision
    if fmt == "json":   # json.dumps writes repr floats; pandas' to_json rounds to 15 digits
        records = [{k: (None if v is pd.NA or (isinstance(v, float) and v != v) else
                        int(v) if hasattr(v, "item") and isinstance(v.item(), int) else v)
                    for k, v in rec.items()} for rec in df.to_dict(orient="records")]
        return json.dumps({"flops_convention": CONVENTION, "units": {"*_s": "seconds", "mem_bytes": "bytes"},
                           "rows": records}, indent=1)
    shown = _rendered(df)
    if fmt == "md":
        return f"FLOPs: {CONVENTION}; times in ms (4 significant digits)\n\n" + shown.to_markdown(index=False) + "\n"
    if fmt == "latex":
        return shown.to_latex(index=False, na_rep="--", caption=f"FLOPs: {CONVENTION}; times in ms")
    if fmt == "html":
        return shown.to_html(index=False, na_rep="—")
    raise ValueError(f"unknown export format {fmt!r}; allowed: csv, md, latex, json, html")
