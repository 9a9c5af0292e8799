"""What the README quotes exists: every file path it names (a results file a command writes with --out
excepted) and every `celora-bench` command it shows."""
import os
import re

from celora_bench.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
PATH = re.compile(r"(?<![\w/.-])((?:results|celora_bench|core|suites|scripts|tests|benchmarks|docs|\.ci)/"
                  r"[\w./+-]*\.(?:py|sh|json|txt|html|png|md|toml))")


def test_every_path_the_readme_names_exists():
    written = set(re.findall(r"--out\s+(\S+)", README))               # outputs of the commands shown
    paths = {p for p in PATH.findall(README) if not any(c in p for c in "*?<>")} - written
    assert paths, "nothing to check: the loop below would pass vacuously"
    missing = sorted(p for p in paths if not os.path.exists(os.path.join(ROOT, p)))
    assert not missing, f"README names paths that do not exist: {missing}"


def test_every_command_the_readme_shows_exists():
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    shown = set(re.findall(r"celora-bench ([a-z][a-z-]+)", README))
    assert shown, "nothing to check"
    assert shown <= set(sub.choices), f"README shows commands the CLI lacks: {sorted(shown - set(sub.choices))}"
