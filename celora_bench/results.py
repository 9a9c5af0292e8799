"""The results file: a versioned JSON envelope, written atomically after every case.

    {"schema": "celora-bench/results", "version": 1,
     "machine_info": {...}, "commit_info": {...}, "datetime": "...",
     "run": {"suites": [...], "mode": ..., "device": ..., "dtype": ..., "filter": ..., "argv": [...]},
     "status": "running" | "complete" | "complete-with-errors" | "interrupted" (Ctrl-C) | "partial" (SIGTERM),
     "flops_convention": "...", "rows": [Row...], "errors": [...], "verdicts": {suite: [...]}}
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

from celora_bench import env
from celora_bench.cases import Row
from celora_bench.flops import CONVENTION

SCHEMA = "celora-bench/results"
VERSION = 1


class ResultsError(Exception):
    """A results file that cannot be used; the message is one line for the user."""


@dataclass
class Run:
    """A results file in memory. ``save`` rewrites it atomically."""

    path: str
    run: dict
    machine_info: dict = field(default_factory=env.machine_info)
    commit_info: dict = field(default_factory=env.commit_info)
    datetime: str = field(default_factory=env.now)
    status: str = "running"
    rows: list[Row] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    verdicts: dict = field(default_factory=dict)
    writer: bool = True            # under torchrun only rank 0 writes

    def done_case_ids(self) -> set[str]:
        return {r.case.id for r in self.rows}

    def drop_partial(self) -> None:
        """Forgets the cases a stopped run had not finished measuring, so that a resume measures them anew."""
        partial = set(self.run.pop("partial_cases", []))
        self.rows = [r for r in self.rows if r.case.id not in partial]

    def add(self, rows: list[Row]) -> None:
        self.rows.extend(rows)
        self.save()

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "version": VERSION, "machine_info": self.machine_info,
                "commit_info": self.commit_info, "datetime": self.datetime, "run": self.run,
                "status": self.status, "flops_convention": CONVENTION,
                "rows": [r.to_json() for r in self.rows], "errors": self.errors,
                "verdicts": self.verdicts}

    def save(self) -> None:
        if not self.writer:
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_json(), f, indent=1, allow_nan=True)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; a results file is for sharing
        os.replace(tmp, self.path)      # readers see the old file or the new one, never half


def load(path: str) -> Run:
    """Reads a results file; any problem is a ResultsError with one clear line."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ResultsError(f"cannot read results file {path!r}: {e.strerror}") from None
    if not raw.strip():
        raise ResultsError(f"{path!r} is not a results file: it is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ResultsError(f"{path!r} is not a results file: not UTF-8 text (byte {e.start})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path!r} is not a results file: invalid or truncated JSON "
                           f"(line {e.lineno}, column {e.colno})") from None
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise ResultsError(f"{path!r} is not a celora-bench results file (no schema {SCHEMA!r})")
    if d.get("version") != VERSION:
        raise ResultsError(f"{path!r} has results schema version {d.get('version')!r}; "
                           f"this celora-bench reads version {VERSION}")
    try:
        rows = [Row.from_json(r) for r in d["rows"]]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ResultsError(f"{path!r} has a malformed row ({type(e).__name__}: {e})") from None
    return Run(path=path, run=d.get("run", {}), machine_info=d.get("machine_info", {}),
               commit_info=d.get("commit_info", {}), datetime=d.get("datetime", ""),
               status=d.get("status", "unknown"), rows=rows, errors=d.get("errors", []),
               verdicts=d.get("verdicts", {}))
