"""The end of `run`: the short answer (celora_bench.render.answer), read from the checks alone."""
import io
import os

from rich.console import Console

from celora_bench import results
from celora_bench.registry import checks_of
from celora_bench.render import answer
from celora_bench.suite import Check, CheckId

RUN = "results/readme/agreement/quick-1.json"      # a committed quick run of the README's first command


def _check(layer, p, value, status, question=CheckId("cut", "cut")):
    labels = (("model", "m"), ("layer", layer), ("provider", "celora"), ("p", p), ("r0", "0"), ("mode", "lean"))
    return Check(question, f"{layer} p={p}", "time ratio", value, "<= line", status, lo=value * 0.9,
                 hi=value * 1.1, labels=labels)


def test_a_grid_has_a_row_per_layer_and_a_column_per_configuration():
    checks = [_check("q", "0.25", 0.27, "PASS"), _check("q", "0.5", 0.52, "NOISE"),
              _check("k", "0.25", 0.31, "FAIL"), _check("k", "0.5", 0.55, "PASS")]
    row_key, headers, rows = answer.grid(checks)
    assert row_key == "layer" and headers == ["p=0.25", "p=0.5"]          # only labels that differ
    assert rows == [("q", ["0.27 ✓", "0.52 ~"]), ("k", ["0.31 ✗", "0.55 ✓"])]


def test_the_quick_run_ends_with_a_short_answer_that_fits_120_columns():
    run = results.load(RUN)
    buf = io.StringIO()
    answer.render(run, Console(file=buf, width=120, force_terminal=False))
    lines = buf.getvalue().rstrip().splitlines()
    assert len(lines) <= 45 and max(map(len, lines)) <= 120, "\n".join(lines)
    text = buf.getvalue()
    timed = [c for c in checks_of(run, "backward-breakdown") if c.kind == "measured"]
    assert timed, "nothing to check: the loop below would pass vacuously"
    for c in timed:                              # every timed check's value is in the answer, as in the verdict
        assert f"{c.value:.3g}" in text
    assert "verdict:" in text and f"show {RUN} --detail" in text


def test_the_verdict_figure_draws_exactly_the_verdicts_values_intervals_and_lines(tmp_path, monkeypatch):
    """backward-breakdown's speedup- figure (its CheckPlot, drawn by the harness): every error bar is a row of
    the verdict `show` prints (value and interval, under the run's recorded between-run sd), every row of the
    declared checks is a bar, and every line a judged row has is drawn as its dash."""
    import matplotlib.axes

    from celora_bench.render import figures
    from suites.backward_breakdown import plots

    bars, dashes = [], []
    real_bar, real_plot = matplotlib.axes.Axes.errorbar, matplotlib.axes.Axes.plot

    def errorbar(self, x, y, yerr=None, **kw):
        bars.append((round(y, 12), round(y - yerr[0][0], 12), round(y + yerr[1][0], 12)))
        return real_bar(self, x, y, yerr=yerr, **kw)

    def plot(self, *a, **kw):
        if len(a) >= 2 and isinstance(a[1], list) and len(a[1]) == 2 and a[1][0] == a[1][1]:
            dashes.append(round(a[1][0], 12))
        return real_plot(self, *a, **kw)
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", errorbar)
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    run = results.load(RUN)
    paths = figures.plot(run, str(tmp_path))
    assert any(os.path.basename(p).startswith(plots.SPEEDUP.prefix) for p in paths)
    rows = [c for c in checks_of(run, "backward-breakdown") if c.check in plots.SPEEDUP.checks]
    want = [(round(c.value, 12), round(c.lo if c.lo is not None else c.value, 12),
             round(c.hi if c.hi is not None else c.value, 12)) for c in rows]
    assert len(rows) == 40 and sorted(bars) == sorted(want)   # 4 layers x 4 configurations x 2 + 8 kept
    assert sorted(dashes) == sorted(round(c.line, 12) for c in rows if c.line is not None)


def test_the_readme_quotes_exactly_what_show_prints():
    """README's "What the first command prints" block is `show` of the committed run, line for line, so a
    change to a check, its order or the counts shows up there."""
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    start = readme.index("```\n" + os.path.basename(RUN))
    quoted = readme[start + 4:readme.index("```", start + 4)].rstrip().splitlines()
    buf = io.StringIO()
    answer.render(results.load(RUN), Console(file=buf, width=250, force_terminal=False))     # no wrapping
    assert [line.rstrip() for line in quoted] == [line.rstrip() for line in buf.getvalue().rstrip().splitlines()]


def test_the_breakdown_figure_draws_the_component_grids_medians(tmp_path, monkeypatch):
    """backward-breakdown's breakdown- figure: every bar it stacks is a median its component grid (`show
    --detail`, the report) prints for that provider and component, and every grid median of a drawn
    component is a bar."""
    import importlib
    import re

    import matplotlib.axes

    from celora_bench.render.tables import component_grids
    from suites import layer_bench

    plots = importlib.import_module("suites.backward_breakdown.plots")
    drawn = []
    real = matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", lambda self, x, h, *a, **kw: drawn.append(f"{h:.3f}")
                        or real(self, x, h, *a, **kw))
    rows = [r for r in results.load(RUN).rows if r.case.suite == "backward-breakdown"]
    (cases,) = layer_bench.layer_groups(rows).values()
    plots.breakdown(cases, "t", str(tmp_path / "b.png"))
    grids = component_grids([r for comps in cases.values() for r in comps.values()])
    printed = [re.match(r"([\d.]+)\*? ms", cell).group(1) for t in grids for row in t.rows if row[0] in plots.BWD
               for cell in row[1:] if cell != "—" and " ms" in cell]
    assert drawn and sorted(drawn) == sorted(printed)


def test_the_roofline_figure_draws_the_speed_of_light_tables_points(tmp_path, monkeypatch):
    """backward-breakdown's roofline- figure: every point it draws is a row of the speed-of-light table (`show
    --detail`) for the providers it shows (dense LoRA, CE-LoRA r0 = 0 lean) and every row a point: (FLOP/B,
    GFLOP/s) where the row has FLOPs, its GB/s on the bandwidth roof at the left edge (x = 0.15) where not."""
    import matplotlib.axes

    from celora_bench.render.tables import roofline_table
    from suites import layer_bench

    drawn = []
    real = matplotlib.axes.Axes.loglog
    monkeypatch.setattr(matplotlib.axes.Axes, "loglog", lambda self, x, y, *a, **kw: drawn.append(
        ("GB/s", f"{y / x:.1f}") if x == 0.15 else (f"{x:.1f}", f"{y:.1f}")) or real(self, x, y, *a, **kw))
    run = results.load(RUN)
    rows = [r for r in run.rows if r.case.suite == "backward-breakdown"]
    assert layer_bench.rooflines(rows, str(tmp_path), run.machine_info)
    shown = [r for r in rows if r.case.provider == "dense" or (r.case.provider == "celora" and r.case.svd_rank == 0
                                                               and not r.case.cache_rows)]
    table = roofline_table("t", shown, run.machine_info)
    cols = [c.name for c in table.columns]
    want = [(row[cols.index("FLOP/B")], row[cols.index("GFLOP/s")]) if float(row[cols.index("GFLOP")]) > 0
            else ("GB/s", row[cols.index("GB/s")]) for row in table.rows]
    assert drawn and sorted(drawn) == sorted(want)
