"""model-step's tables and plots: one line per provider's step (speed-ups against peft and our dense LoRA,
memory, FLOPs, G_y·W0's profiled share), and each provider's step as forward | backward | optimizer."""
from __future__ import annotations

from collections import defaultdict

from celora_bench.cases import Case, Row
from celora_bench.flops import CONVENTION
from celora_bench.render.figures import plt, save
from celora_bench.render.tables import Table, by_case
from core.scopes import GRAD_X_FROZEN
from suites.causal_lm import time_share
from suites.model_step.checks import PROVIDERS, _by, _group


def bwd_s(comps: dict[str, Row]) -> float | None:
    """The backward's median seconds, for the table and the figure alike: fwd+bwd minus fwd (both timed in the
    same rounds), or the backward timed alone in files from before fwd+bwd was."""
    whole, fwd, alone = comps.get("fwd+bwd"), comps.get("fwd"), comps.get("bwd")
    if whole is not None and fwd is not None and whole.samples and fwd.samples:
        return whole.time.median - fwd.time.median
    return alone.time.median if alone is not None and alone.samples else None

def summary_table(rows: list[Row]):
    t = Table(title="model-step: one training step",
              caption=f"times: median ms (* IQR/median > 10%; bwd: fwd+bwd minus fwd, or timed alone in older "
              f"files); × peft / × dense: step speed-up against peft as users get it and against our dense LoRA "
              f"(FLOP-predicted in brackets); memory MiB (peak RSS/CUDA over the step); G_y·W0 share: of one "
              f"profiled step's kernel time (CUDA) or op time (CPU); {CONVENTION}")
    for col in ("model", "tokens", "provider", "fwd ms", "bwd ms", "optimizer ms", "step ms", "× peft",
                "× dense (pred.)", "step peak MiB", "GFLOP step (counted)", "GFLOP G_y·W0", "G_y·W0 time share",
                "trainable MiB"):
        t.add_column(col, justify="left" if col in ("model", "provider") else "right")
    by = _by(rows)
    groups: dict[tuple, dict[str, Case]] = {}
    for r in rows:
        groups.setdefault(_group(r.case), {})[r.case.provider] = r.case
    for case in sorted({r.case for r in rows}, key=lambda c: (c.model, c.tokens, PROVIDERS.index(c.provider)
                                                               if c.provider in PROVIDERS else 9)):
        def ms(comp):
            r = by.get((case, comp))
            return "—" if r is None or r.time is None else f"{r.time.median * 1e3:.1f}{'*' if r.time.spread else ''}"

        def bwd(case):
            b = bwd_s({comp: r for (c, comp), r in by.items() if c == case})
            return "—" if b is None else f"{b * 1e3:.1f}"

        def gf(comp, attr="flops_counted"):
            r = by.get((case, comp))
            v = None if r is None else getattr(r, attr)
            return "—" if v is None else f"{v / 1e9:.2f}"

        def vs(other: str, flops: bool = False) -> str:
            o = groups[_group(case)].get(other)
            mine, theirs = by.get((case, "step")), by.get((o, "step")) if o else None
            if mine is None or theirs is None or not mine.samples or not theirs.samples:
                return "—"
            text = f"{theirs.time.median / mine.time.median:.3f}"
            if flops and mine.flops_counted and theirs.flops_counted:
                text += f" ({theirs.flops_counted / mine.flops_counted:.3f})"
            return text
        step = by.get((case, "step"))
        state = by.get((case, "state"))
        share, _ = time_share(by.get((case, "step.alloc")))
        t.add_row(case.model, str(case.tokens), case.provider, ms("fwd"), bwd(case), ms("optimizer"), ms("step"),
                  vs("peft"), vs("dense", flops=True),
                  "—" if step is None or step.mem_bytes is None else f"{step.mem_bytes / 2**20:.0f}",
                  gf("step"), gf(GRAD_X_FROZEN), "—" if share is None else f"{share:.3f}",
                  "—" if state is None else f"{state.mem_bytes / 2**20:.1f}")
    return t


def step_phases(rows, out_dir: str) -> list[str]:
    """model-step: per model and token count, each provider's step as forward | backward | optimizer (median ms)."""
    groups = defaultdict(dict)
    for case, comps in by_case(rows).items():
        if all(c in comps and comps[c].time for c in ("fwd", "optimizer")) and (
                "fwd+bwd" in comps or "bwd" in comps):
            groups[(case.model, case.tokens)][case.provider] = comps
    if not groups:
        return []
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 3.2), squeeze=False)
    for ax, (model, tokens) in zip(axes.flat, sorted(groups)):
        provs = sorted(groups[(model, tokens)], key=lambda p: PROVIDERS.index(p) if p in PROVIDERS else 99)
        for yi, prov in enumerate(provs):
            left = 0.0
            comps = groups[(model, tokens)][prov]
            phases = (("fwd", comps["fwd"].time.median), ("bwd", bwd_s(comps)),
                      ("optimizer", comps["optimizer"].time.median))
            for ci, (phase, w) in enumerate((name, v * 1e3) for name, v in phases):
                ax.barh(yi, w, left=left, color=f"C{ci}", label=phase if yi == 0 else None)
                left += w
            ax.text(left, yi, f" {left:.1f}", va="center", fontsize=8)
        ax.set_yticks(range(len(provs)), provs)
        ax.invert_yaxis()
        ax.set_xlabel("median ms per step (phases timed separately)")
        ax.set_title(f"{model}, {tokens} tokens", fontsize=10)
        ax.margins(x=0.15)
    h = [plt.Rectangle((0, 0), 1, 1, color=f"C{i}") for i in range(3)]
    fig.legend(h, ["forward", "backward", "optimizer"], loc="upper center", ncol=3, fontsize=8)
    return [save(fig, out_dir, "step-phases.png", rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))]


def tables(rows: list[Row]) -> list[Table]:
    return [summary_table(rows)]


def plots(rows: list[Row], out_dir: str, machine: dict | None = None) -> list[str]:
    return step_phases(rows, out_dir)
