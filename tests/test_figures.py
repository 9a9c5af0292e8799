"""Figures drawn from rows show their table's numbers: each drawn value, formatted as its table prints it, is a
cell of that table (backward-breakdown's figures: tests/test_answer.py)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.axes  # noqa: E402

from celora_bench import results  # noqa: E402
from suites.approx_error import render as approx_render  # noqa: E402
from suites.model_step import render as step_render  # noqa: E402


def _column(table, name):
    i = [c.name for c in table.columns].index(name)
    return [row[i] for row in table.rows]


def test_the_step_phases_figure_draws_the_step_tables_phase_medians(tmp_path, monkeypatch):
    """model-step's step-phases: per provider its forward, backward and optimizer bars are the table's "fwd ms",
    "bwd ms" and "optimizer ms" of that provider (the backward: fwd+bwd − fwd, or timed alone in older files)."""
    drawn = []
    real = matplotlib.axes.Axes.barh
    monkeypatch.setattr(matplotlib.axes.Axes, "barh", lambda self, y, w, *a, **kw: drawn.append(f"{w:.1f}")
                        or real(self, y, w, *a, **kw))
    rows = results.load("results/readme/model-step-full.json").rows
    assert step_render.step_phases(rows, str(tmp_path))
    t = step_render.summary_table(rows)
    cells = [c.rstrip("*") for name in ("fwd ms", "bwd ms", "optimizer ms") for c in _column(t, name)
             if c != "—"]
    assert drawn and sorted(drawn) == sorted(cells)


def test_the_error_figure_draws_the_approx_error_tables_means(tmp_path, monkeypatch):
    """approx-error's figure: every point of its curves (G_x error against p, and against the index's age) is a
    "mean rel. error" of the summary table's gx rows."""
    drawn = []
    real = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, x, y, *a, **kw: drawn.extend(
        f"{v:.4f}" for v in y) or real(self, x, y, *a, **kw))
    rows = results.load("results/readme/approx-error-smollm2-quick.json").rows
    drawn.clear()
    monkeypatch.setattr(approx_render, "spectrum_plot", lambda rows, out_dir: [])    # its own figure, not this
    assert approx_render.plot(rows, str(tmp_path))
    t = approx_render.summary_table(rows)
    gx = {e for kind, e in zip(_column(t, "kind"), _column(t, "mean rel. error")) if kind == "gx"}
    assert drawn and set(drawn) <= gx


def test_the_convergence_figure_ends_each_held_out_curve_at_the_tables_final_mean(tmp_path, monkeypatch):
    """convergence's loss figure: each arm's held-out curve (mean over seeds) ends at the "final" mean of the
    summary table for that task and arm."""
    from suites.convergence import render as conv_render

    drawn = []
    real = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, x, y, *a, **kw: drawn.append(
        (self, kw.get("label"), f"{y[-1]:.4f}")) or real(self, x, y, *a, **kw))
    rows = results.load("results/readme/convergence-quick.json").rows
    assert conv_render.plot(rows, str(tmp_path))
    held_out = {(arm, end) for ax, arm, end in drawn if ax.get_title().startswith("held-out")}
    t = conv_render.summary_table(rows)
    table = {(arm, final.split(" ± ")[0]) for arm, final in zip(_column(t, "arm"), _column(t, "final"))}
    assert len(held_out) == len(table) > 1 and held_out == table


def test_the_medium_trade_off_figure_draws_the_medium_tables_step_times_and_means(tmp_path, monkeypatch):
    """convergence --medium's trade-off figure: each arm's point is its table row's step ms (x) and its accuracy
    or held-out loss mean (y), the y bar that row's sd."""
    from suites.convergence import render as conv_render

    drawn = []
    real = matplotlib.axes.Axes.errorbar
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", lambda self, x, y, *a, **kw: drawn.append(
        (kw.get("label"), f"{x[0]:.1f}", f"{y[0]:.4f} ± {kw['yerr'][0]:.4f}")) or real(self, x, y, *a, **kw))
    rows = results.load("results/readme/convergence-smollm2-medium.json").rows
    assert len(conv_render.medium_plots(rows, str(tmp_path))) == 2
    t = conv_render.medium_table(rows)
    table = {(arm, ms.split(" [")[0], v) for arm, ms, acc, loss in zip(
        _column(t, "arm"), _column(t, "step ms [95%]"), _column(t, "accuracy %"), _column(t, "held-out loss"))
        for v in (acc, loss)}
    assert drawn and set(drawn) == table
