"""`celora-bench report`: one self-contained HTML page per run(s), checked with the stdlib parser.

The page must parse (every tag closed in order), hold every verdict row and every plot, reference
nothing outside itself, escape every string from the results file, and show the same numbers as
`celora-bench show`. Fixtures: the committed runs in results/readme/ (nothing is measured here).
"""
import base64
import dataclasses
import json
import os
from html.parser import HTMLParser

import pytest

from celora_bench import cli, results
from celora_bench.render import export
from celora_bench.render import html as H
from celora_bench.render import page as P
from celora_bench.render import tables as T
from celora_bench.render import view as V
from celora_bench.suite import Check, CheckId

README = os.path.join(os.path.dirname(__file__), "..", "results", "readme")
COMMITTED = {"agreement/quick-1.json": 3, "approx-error-quick.json": 1, "convergence-quick.json": 1,
             "model-step-full.json": 1}           # file -> the least number of plots its page must hold
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "wbr"}
REF_ATTRS = {"src", "href", "srcset", "action", "data", "poster", "formaction", "background"}


class Page(HTMLParser):
    """Parses a page strictly: tags must close in order; collects text, table rows, references, images, ids."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack, self.text, self.rows, self.refs, self.imgs, self.ids, self.tags = [], [], [], [], [], set(), []
        self._row = self._cell = None
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed tags at the end: {self.stack}"

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)
        self.refs += [(tag, k, v) for k, v in attrs if k in REF_ATTRS]
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "tr":
            self._row = []
        if tag in ("td", "th"):
            self._cell = []

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        if tag in ("td", "th") and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "tr":
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def plain(self) -> str:
        return " ".join("".join(self.text).split())


def committed(name: str) -> results.Run:
    return results.load(os.path.join(README, name))


@pytest.fixture(scope="module")
def bb_quick():
    return committed("agreement/quick-1.json")


@pytest.fixture(scope="module")
def bb_page(bb_quick):
    return P.render([bb_quick])


def one_layer(src: results.Run, layer: str = "q_proj+o_proj", **changes) -> results.Run:
    """A small run: the rows of one layer; changes replace Run fields (never written)."""
    return dataclasses.replace(src, rows=[r for r in src.rows if r.case.layer == layer], **{"writer": False, **changes})


def self_contained(page: Page, text: str) -> None:
    assert page.refs, 'nothing to check: the loop below would pass vacuously'
    for tag, attr, value in page.refs:
        assert value.startswith("#") or value.startswith("data:"), f"<{tag} {attr}={value[:60]!r}> leaves the page"
        if value.startswith("#"):
            assert value[1:] in page.ids, f"link to a missing anchor {value!r}"
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    assert "url(" not in text and "@import" not in text


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_each_suite_page_parses_holds_every_verdict_row_and_plot(name, request):
    run = committed(name)
    text = request.getfixturevalue("bb_page") if name.startswith("agreement") else P.render([run])
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>") and "<title>" in text and '<meta charset="utf-8">' in text
    self_contained(page, text)
    suite = run.run["suites"][0]
    checks = V.checks_of(run, suite)
    assert checks, "the committed runs have a verdict"
    shown = {tuple(r[:3]) for r in page.rows if r and len(r) >= 3}
    assert checks, 'nothing to check: the loop below would pass vacuously'
    for c in checks:
        assert (c.check.title, c.scope, c.metric) in shown, f"verdict row missing: {c.check.title} / {c.scope}"
    pngs = [s for s in page.imgs if s.startswith("data:image/png;base64,")]
    assert len(pngs) == len(page.imgs) >= COMMITTED[name]
    assert pngs, 'nothing to check: the loop below would pass vacuously'
    for s in pngs:
        assert base64.b64decode(s.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert "the answer" in page.plain and run.run["argv"][0] in page.plain
    assert page.plain.index("the answer") < page.plain.index("plots") < page.plain.index("tables") \
        < page.plain.index("machine") < page.plain.index("command")


def test_page_shows_the_numbers_show_prints(bb_quick, bb_page, capsys):
    path = os.path.join(README, "agreement", "quick-1.json")
    assert cli.main(["show", path, "--detail"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    page = Page(bb_page).plain
    cases = T.by_case(bb_quick.rows)
    dense = next(c for c in cases if c.provider == "dense" and c.layer == "q_proj+o_proj")
    celora = next(c for c in cases if c.provider == "celora" and c.layer == "down_proj" and c.keep_ratio == 0.25)
    # independent formatting: ms with 2 decimals (summary), 3 decimals (detail), GFLOP with 3, verdict 4 digits
    values = [f"{cases[dense]['fwd+bwd'].time.median * 1e3:.2f}",
              f"{cases[celora]['bwd.grad_x_frozen'].time.median * 1e3:.3f}",
              f"{cases[dense]['bwd.grad_x_frozen'].flops_analytic / 1e9:.3f}"]
    checks = V.checks_of(bb_quick, "backward-breakdown")
    values += [f"{c.value:.4g}" for c in checks[:3] + checks[-3:] if c.value is not None]
    assert values, 'nothing to check: the loop below would pass vacuously'
    for v in values:
        assert v in shown, f"{v} not in show's output"
        assert v in page, f"{v} not in the page"


def test_strings_from_the_results_file_are_escaped(bb_quick):
    evil = '<script>alert("x")</script><img src="http://example.com/x.png">'
    rows = [dataclasses.replace(r, note=evil) if i == 0 else r for i, r in enumerate(one_layer(bb_quick).rows)]
    run = one_layer(bb_quick, path="<b>run</b>.json", machine_info={**bb_quick.machine_info, "cpu": evil},
                    commit_info={"id": evil, "dirty": True}, errors=[{"case_id": evil, "error": evil}],
                    run={**bb_quick.run, "argv": ["run", evil]})
    run = dataclasses.replace(run, rows=rows)
    text = P.render([run])
    page = Page(text)
    self_contained(page, text)
    assert "script" not in page.tags and all(s.startswith("data:") for s in page.imgs)
    assert evil in page.plain and "<b>run</b>.json" in page.plain     # shown as text, not as markup


def test_several_runs_side_by_side(bb_quick):
    cpu = one_layer(bb_quick, path="cpu/run.json")
    other = one_layer(bb_quick, layer="k_proj", path="gpu/run.json",
                      run={**bb_quick.run, "options": {**bb_quick.run["options"], "device": "cuda"}})
    text = P.render([cpu, other])
    page = Page(text)
    self_contained(page, text)
    assert "runs side by side" in page.plain and "#1 run.json" in page.plain and "#2 run.json" in page.plain
    assert {"run-1", "run-2"} <= page.ids
    checks = [c for run in (cpu, other) for c in V.checks_of(run, "backward-breakdown")]
    assert checks, "nothing to check: the loop below would pass vacuously"
    for c in checks:
        assert c.scope in page.plain


def test_verdict_rows_show_intervals_within_noise_and_kind():
    t = CheckId("t", "t")
    checks = [Check(t, "a scope", "time ratio", 0.5123456, "<= 0.5", "NOISE", lo=0.49, hi=0.53),
              Check(t, "b scope", "FLOP ratio", 0.25, "= 0.25", "PASS", kind="exact"),
              Check(t, "c scope", "order", None, "reported", "INFO", "x < y", kind="info"),
              Check(t, "d scope", "speed-up", 1.2, ">= 1.3", "FAIL", lo=1.1, hi=1.25)]
    page = Page(H.verdict_html(checks))
    rows = {r[1]: r for r in page.rows if r and r[0] == "t"}
    assert rows["a scope"][3] == "0.5123 [0.49–0.53]" and rows["a scope"][5] == "within noise"
    assert rows["b scope"][3] == "0.25" and rows["b scope"][6] == "exact"
    assert rows["c scope"][3] == "—" and rows["d scope"][5] == "FAIL"
    assert "NOISE" not in page.plain
    n = H.counts(checks)
    assert (n["PASS"], n["FAIL"], n["NOISE"], n["INFO"], n["measured"], n["total"]) == (1, 1, 1, 1, 2, 4)
    summary = Page(H.counts_html(checks)).plain
    assert "2 timed: 0 pass, 1 fail, 1 within noise; 1 exact (all pass); 1 info" in summary
    answer = Page(H.answer_html(checks))
    assert [r[1] for r in answer.rows if r[0] == "t" and len(r) == 9] == ["d scope", "a scope"]   # FAIL first
    assert "within noise: the interval straddles the line (1)" in answer.plain
    assert [r[1] for r in answer.rows if r[0] == "t" and len(r) == 7] == ["time ratio", "FLOP ratio", "order",
                                                                          "speed-up"]   # one line per metric


def test_launch_bound_rows_are_marked(bb_quick):
    run = one_layer(bb_quick)
    rows = [dataclasses.replace(r, extra={**r.extra, "launch_bound": True, "kernel_s": 1.5e-6})
            if r.component == "bwd.grad_h" and r.case.provider == "dense" else r for r in run.rows]
    page = Page(P.render([dataclasses.replace(run, rows=rows)])).plain
    assert f"{T.LAUNCH_MARK} 1 of {len(rows)} rows" in page
    assert page.count(T.LAUNCH_MARK) == 3        # the note, the caption, the one cell
    assert "kernel 0.002 ms" in page


def test_an_unknown_suite_gets_the_generic_section(bb_quick):
    run = one_layer(bb_quick)
    rows = [dataclasses.replace(r, case=dataclasses.replace(r.case, suite="my-suite")) for r in run.rows]
    run = dataclasses.replace(run, rows=rows, run={**run.run, "suites": ["my-suite"]})
    page = Page(P.render([run]))
    # the generic section: every case's component table (a suite's own tables are its declaration's)
    assert "my-suite" in page.plain and "not registered" in page.plain and rows[0].case.id in page.plain


def test_view_tables_format_cell_by_cell_in_every_back_end():
    from rich.console import Console

    from celora_bench.render import terminal
    t = T.Table(title="T title", caption="units & such")
    t.add_column("name")
    t.add_column("value", justify="right")
    t.add_row("FAIL", "[0.40, 0.55]")
    t.add_row("<x>", "1.5\nkernel 2 ms")
    page = Page(H.table_html(t))
    assert page.rows == [["name", "value"], ["FAIL", "[0.40, 0.55]"], ["<x>", "1.5kernel 2 ms"]]
    assert "T title" in page.plain and "units & such" in page.plain and "<br>" in H.table_html(t)
    console = Console(width=200, record=True)
    console.print(terminal.rich(t))
    text = console.export_text()
    assert "[0.40, 0.55]" in text and "kernel 2 ms" in text and "units & such" in text   # no markup eaten


def test_export_html_is_a_complete_titled_page(bb_quick):
    text = export.export(one_layer(bb_quick), "html")
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>") and "celora-bench rows" in page.plain and "table" in page.tags
    assert any(r and r[0] == "backward-breakdown" for r in page.rows)


def test_report_cli_default_out_and_several_runs(tmp_path, capsys):
    src = tmp_path / "small.json"
    d = json.load(open(os.path.join(README, "model-step-full.json")))
    d["rows"] = [r for r in d["rows"] if r["case"]["model"] == "tiny"]
    src.write_text(json.dumps(d))
    assert cli.main(["report", str(src)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'small.html'}"
    out = tmp_path / "sub" / "both.html"
    assert cli.main(["report", str(src), str(src), "--out", str(out)]) == 0
    assert "runs side by side" in Page(out.read_text()).plain
    assert cli.main(["report", str(src), str(src)]) == 2
    assert cli.main(["report", str(src), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("celora-bench: error: ") for e in err)


def _bad_inputs(tmp):
    good = open(os.path.join(README, "convergence-quick.json")).read()
    files = {"binary": b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 20, "truncated": good[: len(good) // 2].encode(),
             "foreign": b'{"benchmarks": [], "machine_info": {}}',
             "version": json.dumps({**json.loads(good), "version": 99}).encode(), "empty": b""}
    paths = {"missing": str(tmp / "nope.json")}
    for k, v in files.items():
        (tmp / f"{k}.json").write_bytes(v)
        paths[k] = str(tmp / f"{k}.json")
    return paths


@pytest.mark.parametrize("kind", ["missing", "binary", "truncated", "foreign", "version", "empty"])
def test_report_bad_input_exits_2_with_one_line(kind, tmp_path, capsys):
    path = _bad_inputs(tmp_path)[kind]
    assert cli.main(["report", path, "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("celora-bench: error: ") and path in err
    assert "Traceback" not in err and not (tmp_path / "r.html").exists()


def test_run_ends_by_writing_the_report_next_to_the_results(bb_quick, tmp_path, monkeypatch, capsys):
    from celora_bench import runner

    def fake_run(suites, opts, out, **kw):       # nothing is measured: the committed rows are "the run"
        run = one_layer(bb_quick, path=out, writer=True)
        run.save()
        return run
    monkeypatch.setattr(runner, "run", fake_run)
    out = tmp_path / "r.json"
    assert cli.main(["run", "backward-breakdown", "--quick", "--out", str(out)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert f"report: {tmp_path / 'r.html'}" in said
    Page((tmp_path / "r.html").read_text())
