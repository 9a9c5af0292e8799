"""Compares two results files under regression rules such as ``time.median:10%``.

A rule is METRIC:THRESHOLD%[@FIELD=VALUE[|VALUE],...]:
    time.median, time.min  candidate slower than baseline by more than the threshold
    flops                  FLOPs (analytic and counted) changed by more than the threshold, either way
    memory                 bytes grew by more than the threshold
    ratio                  ratios measured in the same run (interleaved; the trimmed mean of the per-round
                           ratios) grew by more than
                           the threshold: CE-LoRA / dense per component, per layer (2× the threshold
                           where dense takes < 10 ms) and per block (sums over the layers of one
                           configuration); per block, selection / dense G_y·W0 and dense / peft fwd+bwd
FIELD is suite, provider, component, layer, model or case (a substring of the case id).
"""
from __future__ import annotations

from dataclasses import dataclass

from celora_bench import intervals as I
from celora_bench.cases import Case, Row
from celora_bench.results import Run

METRICS = ("time.median", "time.min", "flops", "memory", "ratio")
FIELDS = ("suite", "provider", "component", "layer", "model", "case")
RATIO_COMPONENTS = ("bwd.grad_x_frozen", "fwd+bwd")
DEFAULT_COMPARE = ("time.median:10%", "flops:0%", "memory:5%")
DEFAULT_GATE = ("ratio:15%", "flops:0%", "memory:0%@component=state|step.alloc")


class RuleError(ValueError):
    pass


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
        for field, values in self.where:
            if field == "case":
                if not any(v in row.case.id for v in values):
                    return False
            elif field == "component":
                if row.component not in values:
                    return False
            elif str(getattr(row.case, field)) not in values:
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
    threshold: float = 0.0             # the fraction the candidate may exceed the baseline by

    @property
    def limit(self) -> float:
        """The largest candidate value that is not a regression (time and ratio rules)."""
        return self.baseline * (1 + self.threshold)

    @property
    def delta(self) -> float:
        return (self.candidate - self.baseline) / self.baseline if self.baseline else float("inf")


def _key(r: Row) -> tuple[str, str]:
    return r.case.id, r.component


def _spread(r: Row) -> float | None:
    t = r.time
    return t.iqr / t.median if t and t.median else None


def group_of(c: Case) -> tuple:
    return (c.suite, c.model, c.layer, c.m, c.n, c.tokens, c.rank, c.dtype, c.device, c.params)


def block_id(c: Case) -> str:
    """The id of the case's configuration over every layer: its layer replaced by "*"."""
    return c.id.replace(f"/{c.layer}/", "/*/")


RATIO_MIN_S = 0.010     # per-layer ratios where dense takes < 10 ms are gated at SMALL_FACTOR × the threshold
SMALL_FACTOR = 2.0      # (k_proj, v_proj: a 3.6 ms component moved 16-20% between runs with nothing changed)
SELECTION_FACTOR = 10.0  # selection / dense G_y·W0 per block at 10x the threshold (+150%): one refresh is short
                         # and its time bimodal (the same tiny layer's ratio at 0.11 or 0.30 in two rechecks of
                         # one run); a 10x slower refresh (+900%) still shows


def _ratio(num: list[Row], den: list[Row]) -> float:
    """Σnum / Σden of one run, from the rounds every row shares (celora_bench.intervals, paired by round):
    the trimmed mean of the per-round ratios; rows without a shared round fall back to medians."""
    series = [r.series for r in num + den]
    n = len(num)
    try:
        iv = I.over_rounds(lambda *v: sum(v[:n]) / sum(v[n:]), series)
    except I.Unpaired:                  # a baseline from before rounds: medians, as it was gated then
        iv = None
    if iv is not None:
        return iv.value
    return sum(r.time.median for r in num) / sum(r.time.median for r in den)


def ratios(rows: list[Row]) -> dict[tuple[str, str], tuple[float, Row, float]]:
    """(case id, component) -> (ratio, the row it is reported on, threshold scale), all from one run.

    - CE-LoRA / dense of G_y·W0 and of fwd+bwd, per layer (scale SMALL_FACTOR where the dense
      side is under RATIO_MIN_S) and per block (sums over every layer of one configuration, id with
      the layer as "*");
    - per block, the refresh ("selection") over dense G_y·W0, so a slower selection is gated;
    - per block, our dense fwd+bwd over peft's, so a slowdown in code that dense LoRA and CE-LoRA
      share (which leaves CE-LoRA/dense unchanged) is gated too, and peft's time with it.
    Each ratio is paired by round (the rows were timed interleaved in the same rounds).
    """
    dense: dict[tuple, Row] = {}
    peft: dict[tuple, Row] = {}
    for r in rows:
        if r.time and r.component in RATIO_COMPONENTS:
            if r.case.provider == "dense":
                dense[(group_of(r.case), r.component)] = r
            elif r.case.provider == "peft":
                peft[(group_of(r.case), r.component)] = r
    out = {}
    block: dict[tuple[str, str], tuple[list[Row], list[Row]]] = {}

    def add(bkey, num: Row, den: Row):
        acc = block.setdefault(bkey, ([], []))
        acc[0].append(num)
        acc[1].append(den)

    for r in rows:
        if r.case.provider != "celora" or not r.time:
            continue
        if r.component == "selection":
            d = dense.get((group_of(r.case), "bwd.grad_x_frozen"))
            if d:
                add((block_id(r.case), "selection"), r, d)
            continue
        if r.component not in RATIO_COMPONENTS:
            continue
        d = dense.get((group_of(r.case), r.component))
        if not d:
            continue
        out[_key(r)] = (_ratio([r], [d]), r, 1.0 if d.time.median >= RATIO_MIN_S else SMALL_FACTOR)
        add((block_id(r.case), r.component), r, d)
    for (g, comp), d in dense.items():
        if comp == "fwd+bwd" and (g, comp) in peft:
            add((block_id(d.case), "fwd+bwd vs peft"), d, peft[(g, comp)])
    for bkey, (num, den) in block.items():
        out[bkey] = (_ratio(num, den), num[0], SELECTION_FACTOR if bkey[1] == "selection" else 1.0)
    return out


def baseline_ratios(base: Run) -> dict[tuple[str, str], tuple[float, Row, float]]:
    """The baseline's ratios: the per-ratio medians over its source runs when it was made from several
    (``gate --update-baseline``), else the ratios of its one run."""
    own = ratios(base.rows)
    stored = (base.run.get("baseline") or {}).get("ratios")
    if not stored:
        return own
    out = {}
    for item in stored:
        k = (item["case_id"], item["component"])
        if k in own:
            out[k] = (item["median"], own[k][1], own[k][2])
    return out


def compare(base: Run, cand: Run, rules: list[Rule]) -> tuple[list[Finding], dict]:
    """Findings for every rule and row both runs have, and the case-set difference."""
    b = {_key(r): r for r in base.rows}
    c = {_key(r): r for r in cand.rows}
    common = sorted(set(b) & set(c))
    findings: list[Finding] = []
    if any(rule.metric == "ratio" for rule in rules):
        rb, rc = baseline_ratios(base), ratios(cand.rows)
    for rule in rules:
        if rule.metric == "ratio":
            for k in sorted(set(rb) & set(rc)):
                if not rule.selects(rc[k][1]):
                    continue
                vb, vc, scale = rb[k][0], rc[k][0], rc[k][2]
                thr = rule.threshold * scale
                findings.append(Finding(str(rule) + (f" (×{scale:g})" if scale != 1 else ""),
                                        k[0], k[1], vb, vc, None, None, vc > vb * (1 + thr), threshold=thr))
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
