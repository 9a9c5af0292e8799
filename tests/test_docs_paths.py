"""What the README and docs/ quote exists: every file path they name (a results file a command writes with
--out excepted), every relative link, and every `celora-bench` command they show."""
import glob
import os
import re

import pytest

from celora_bench.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
PATH = re.compile(r"(?<![\w/.-])((?:results|celora_bench|core|suites|scripts|tests|benchmarks|docs|\.ci)/"
                  r"[\w./+-]*\.(?:py|sh|json|txt|html|png|md|toml))")
LINK = re.compile(r"\]\(([^)#\s]+)\)")


def text(doc: str) -> str:
    return open(os.path.join(ROOT, doc), encoding="utf-8").read()


def test_docs_are_there_and_the_readme_is_short():
    assert len(DOCS) >= 5, DOCS
    assert len(text("README.md").splitlines()) <= 200


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_a_doc_names_exists(doc):
    body = text(doc).replace("../", "")              # docs/ link up to the repository root
    written = set(re.findall(r"--out\s+(\S+)", body))                 # outputs of the commands shown
    paths = {p for p in PATH.findall(body) if not any(c in p for c in "*?<>")} - written
    missing = sorted(p for p in paths if not os.path.exists(os.path.join(ROOT, p)))
    assert not missing, f"{doc} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_resolves(doc):
    here = os.path.dirname(os.path.join(ROOT, doc))
    links = [u for u in LINK.findall(text(doc)) if "://" not in u]
    missing = sorted(u for u in links if not os.path.exists(os.path.normpath(os.path.join(here, u))))
    assert not missing, f"{doc} links to files that do not exist: {missing}"


def test_the_checks_above_can_fail():
    assert PATH.findall("see core/no_such_file.py and results/readme/x.json") == [
        "core/no_such_file.py", "results/readme/x.json"]
    assert LINK.findall("![a](../results/p.png) [b](method.md)") == ["../results/p.png", "method.md"]


def test_every_command_the_docs_show_exists():
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    shown = {c for doc in DOCS for c in re.findall(r"celora-bench ([a-z][a-z-]+)", text(doc))}
    assert shown, "nothing to check"
    assert shown <= set(sub.choices), f"the docs show commands the CLI lacks: {sorted(shown - set(sub.choices))}"
