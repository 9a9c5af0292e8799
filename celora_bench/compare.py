"""Compares two results files under regression rules such as ``time.median:10%``.

A rule is METRIC:THRESHOLD%[@FIELD=VALUE[|VALUE],...]:
    time.median, time.min  candidate slower than baseline by more than the threshold
    flops                  FLOPs (analytic and counted) changed by more than the threshold, either way
    memory                 bytes grew by more than the threshold
    check                  a check its suite marks gated (CheckId.gated: which way is better) worse than the
                           baseline's by more than the threshold, its whole interval beyond that line; the
                           checks are the suites' verdicts recomputed from each run's rows (what `show` prints)
FIELD is suite, provider, component, layer, model or case (a substring of the case id); on a check,
component is its id and the others its labels.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from celora_bench import registry
from celora_bench.cases import Row
from celora_bench.results import Run

METRICS = ("time.median", "time.min", "flops", "memory", "check")
FIELDS = ("suite", "provider", "component", "layer", "model", "case")
DEFAULT_COMPARE = ("time.median:10%", "flops:0%", "memory:5%")
DEFAULT_GATE = ("check:15%", "flops:0%", "memory:0%@component=state|step.alloc")


class RuleError(ValueError):
    pass


@dataclass(frozen=True)
class Gated:
    """One gated check of a run: its key ("suite/check id/label=value,..."), value and interval, which way is
    better, and the cases it was computed from (the gate measures those again)."""

    key: str
    suite: str
    check: str
    value: float
    lo: float | None
    hi: float | None
    better: str
    cases: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]
    slack: float = 1.0


@dataclass(frozen=True)
class Rule:
    metric: str
    threshold: float               # a fraction: 0.10 for 10%
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "Rule":
        head, _, where = spec.partition("@")
        metric, sep, thr = head.partition(":")
        if metric not in METRICS or not sep:
            raise RuleError(f"--fail-on {spec!r}: metric must be one of {', '.join(METRICS)}, "
                            f"as METRIC:N%[@FIELD=VALUE,...]")
        try:
            threshold = float(thr.rstrip("%")) / 100.0
        except ValueError:
            raise RuleError(f"--fail-on {spec!r}: threshold {thr!r} is not a percentage like 10%") from None
        if threshold < 0:
            raise RuleError(f"--fail-on {spec!r}: threshold must be >= 0%")
        filters = []
        for part in filter(None, where.split(",")):
            field, eq, value = part.partition("=")
            if field not in FIELDS or not eq or not value:
                raise RuleError(f"--fail-on {spec!r}: filter {part!r} must be FIELD=VALUE with FIELD in "
                                f"{', '.join(FIELDS)}")
            filters.append((field, tuple(value.split("|"))))
        return cls(metric, threshold, tuple(filters))

    def __str__(self) -> str:
        where = ",".join(f"{f}={'|'.join(v)}" for f, v in self.where)
        return f"{self.metric}:{self.threshold * 100:g}%" + (f"@{where}" if where else "")

    def selects(self, row: Row) -> bool:
        return self._holds(lambda field: row.case.id if field == "case" else row.component if field == "component"
                           else str(getattr(row.case, field)))

    def selects_check(self, g: Gated) -> bool:
        labels = dict(g.labels)
        return self._holds(lambda field: g.key if field == "case" else g.suite if field == "suite" else g.check
                           if field == "component" else labels.get(field, ""))

    def _holds(self, value_of) -> bool:
        for field, values in self.where:
            got = value_of(field)
            if not (any(v in got for v in values) if field == "case" else got in values):
                return False
        return True


@dataclass(frozen=True)
class Finding:
    rule: str
    case_id: str
    component: str
    baseline: float
    candidate: float
    base_spread: float | None      # IQR / median of each side, for time
    cand_spread: float | None
    regression: bool
    rechecks: tuple[float, ...] = ()   # the candidate value in each recheck of a time regression (gate)
    threshold: float = 0.0             # the fraction the candidate may be worse than the baseline by
    better: str = "lower"              # "higher" for a check whose larger values are better
    reads: tuple[str, ...] = ()        # the case ids a check was computed from

    @property
    def limit(self) -> float:
        """The worst candidate value that is not a regression (time and check rules)."""
        return self.baseline * (1 + self.threshold) if self.better == "lower" else self.baseline / (1 + self.threshold)

    def worse(self, value: float) -> bool:
        """Whether a candidate value is beyond the limit."""
        return value > self.limit if self.better == "lower" else value < self.limit

    @property
    def delta(self) -> float:
        return (self.candidate - self.baseline) / self.baseline if self.baseline else float("inf")


def _key(r: Row) -> tuple[str, str]:
    return r.case.id, r.component


def _spread(r: Row) -> float | None:
    t = r.time
    return t.iqr / t.median if t and t.median else None


def gated(run: Run) -> dict[str, Gated]:
    """Every gated check of the run with a value: the suites' verdicts over its rows, as `show` prints them."""
    out = {}
    for suite in sorted({r.case.suite for r in run.rows}):
        for c in registry.checks_of(run, suite):
            if c.check.gated and c.value is not None:
                key = f"{suite}/{c.check.id}/" + (",".join(f"{k}={v}" for k, v in c.labels) or c.scope)
                out[key] = Gated(key, suite, c.check.id, c.value, c.lo, c.hi, c.check.gated,
                                 tuple(dict.fromkeys(i for i, _ in c.reads)), c.labels, c.check.slack)
    return out


def baseline_checks(base: Run) -> dict[str, float]:
    """The baseline's value of each gated check: the per-check median over its source runs when it was made
    from several (``gate --update-baseline``), else the check's value in its one run."""
    stored = (base.run.get("baseline") or {}).get("checks")
    if stored is not None:
        return {item["key"]: item["median"] for item in stored}
    return {k: g.value for k, g in gated(base).items()}


def _check_findings(rule: Rule, base: Run, cand: Run) -> list[Finding]:
    """A gated check is a regression when its whole interval in the candidate lies beyond the limit (the
    baseline's value made worse by the threshold, times the check's slack): the interval carries the run's
    own noise."""
    vb, gc = baseline_checks(base), gated(cand)
    out = []
    for k in sorted(set(vb) & set(gc)):
        g = gc[k]
        if not rule.selects_check(g):
            continue
        label = str(rule) + (f" (×{g.slack:g})" if g.slack != 1 else "")
        f = Finding(label, k, g.check, vb[k], g.value, None, None, False, threshold=rule.threshold * g.slack,
                    better=g.better, reads=g.cases)
        edge = g.lo if g.better == "lower" else g.hi
        out.append(replace(f, regression=f.worse(g.value if edge is None else edge)))
    return out


def compare(base: Run, cand: Run, rules: list[Rule]) -> tuple[list[Finding], dict]:
    """Findings for every rule and row both runs have, and the case-set difference."""
    b = {_key(r): r for r in base.rows}
    c = {_key(r): r for r in cand.rows}
    common = sorted(set(b) & set(c))
    findings: list[Finding] = []
    for rule in rules:
        if rule.metric == "check":
            findings += _check_findings(rule, base, cand)
            continue
        for k in common:
            rb_, rc_ = b[k], c[k]
            if not rule.selects(rc_):
                continue
            if rule.metric.startswith("time.") and rb_.time and rc_.time:
                stat = rule.metric.split(".")[1]
                vb, vc = getattr(rb_.time, stat), getattr(rc_.time, stat)
                findings.append(Finding(str(rule), *k, vb, vc, _spread(rb_), _spread(rc_),
                                        vc > vb * (1 + rule.threshold), threshold=rule.threshold))
            elif rule.metric == "flops":
                for attr in ("flops_analytic", "flops_counted"):
                    vb, vc = getattr(rb_, attr), getattr(rc_, attr)
                    if vb is None or vc is None:
                        continue
                    changed = abs(vc - vb) > rule.threshold * abs(vb)
                    findings.append(Finding(f"{rule} ({attr.split('_')[1]})", *k, vb, vc, None, None, changed))
            elif rule.metric == "memory" and rb_.mem_bytes is not None and rc_.mem_bytes is not None:
                vb, vc = rb_.mem_bytes, rc_.mem_bytes
                findings.append(Finding(str(rule), *k, vb, vc, None, None, vc > vb * (1 + rule.threshold)))
    cases = {"missing": sorted({k[0] for k in b} - {k[0] for k in c}),
             "new": sorted({k[0] for k in c} - {k[0] for k in b}),
             "common": len({k[0] for k in common})}
    return findings, cases
