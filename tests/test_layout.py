"""The layout holds: no module imports in a circle, the harness imports no suite, core imports nothing above
it, no suite imports another suite (what two share lives below them, in a module of suites/ that is not a
suite), scripts are a page each, and no source file is over 400 lines (README, "Layout")."""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
PACKAGES = ("core", "celora_bench", "suites")
MAX_LINES = 400


def _modules() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(folder, f)
                    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    out[name.removesuffix(".__init__")] = path
    return out


def imports(mods: dict[str, str]) -> dict[str, set[str]]:
    """module -> the project modules it imports, at any depth of its code (a lazy import is still an arrow).
    `from pkg import sub` is an arrow to pkg.sub, not to pkg (whose __init__ runs first in any case)."""
    graph = {}
    for name, path in mods.items():
        deps = set()
        for n in ast.walk(ast.parse(open(path).read())):
            if isinstance(n, ast.Import):
                deps |= {a.name for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
                subs = {f"{n.module}.{a.name}" for a in n.names} & set(mods)
                deps |= subs | ({n.module} if len(subs) < len(n.names) else set())
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in graph:
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph():
    return imports(_modules())


def test_no_import_circle(graph):
    assert cycles(graph) == []


def test_the_harness_imports_no_suite_and_core_imports_nothing_above_it(graph):
    up = {m: sorted(d for d in ds if d.startswith("suites")) for m, ds in graph.items() if m.startswith("celora_bench")}
    assert {m: d for m, d in up.items() if d} == {}
    core = {m: sorted(d for d in ds if not d.startswith("core")) for m, ds in graph.items() if m.startswith("core")}
    assert {m: d for m, d in core.items() if d} == {}


def suite_of(module: str, suites: list[str]) -> str | None:
    """The registered suite a module belongs to (the suite's module or one under it), or None."""
    return next((s for s in suites if module == s or module.startswith(s + ".")), None)


def crossings(graph: dict[str, set[str]], suites: list[str]) -> dict[str, list[str]]:
    """module -> the modules of other suites it imports."""
    out = {}
    for m, ds in graph.items():
        own = suite_of(m, suites)
        other = sorted(d for d in ds if suite_of(d, suites) not in (None, own))
        if own and other:
            out[m] = other
    return out


def test_the_harness_names_no_suite_but_through_the_registry():
    """No module of celora_bench/ but the registry holds a suite's name as a value (docstrings and help text
    may mention one): the harness reaches suites by registry.HEADLINE or by the name it is given."""
    from celora_bench.registry import SUITES
    named = {}
    for name, path in _modules().items():
        if not name.startswith("celora_bench") or name == "celora_bench.registry":
            continue
        hits = {n.value for n in ast.walk(ast.parse(open(path).read()))
                if isinstance(n, ast.Constant) and n.value in SUITES}
        if hits:
            named[name] = sorted(hits)
    assert named == {}


def test_the_harness_holds_no_provider_or_component_name():
    """What README says of celora_bench/: no module of it but cases.py (the Case record, whose fields are
    CE-LoRA's knobs) holds a provider or component name of CE-LoRA's as a value, or imports core.scopes: what
    is judged, gated and drawn is the suites' (their checks). env.py names the peft package, for its version."""
    from core import scopes
    names = {"celora", "dense", "peft"} | {v for k, v in vars(scopes).items() if k.isupper() and isinstance(v, str)}
    allowed = {"celora_bench.cases": names, "celora_bench.env": {"peft"}}
    found = {}
    for name, path in _modules().items():
        if not name.startswith("celora_bench"):
            continue
        tree = ast.parse(open(path).read())
        hits = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in names}
        hits |= {"import core.scopes" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                 and n.module.startswith("core")}
        hits -= allowed.get(name, set())
        if hits:
            found[name] = sorted(hits)
    assert found == {}


def test_no_suite_imports_another_suite(graph):
    from celora_bench.registry import SUITES
    assert crossings(graph, list(SUITES.values())) == {}


def test_the_crossing_finder_finds_one():
    g = {"suites.a.x": {"suites.b", "suites.shared"}, "suites.b": {"suites.shared"}, "suites.a": {"suites.a.x"}}
    assert crossings(g, ["suites.a", "suites.b"]) == {"suites.a.x": ["suites.b"]}


def test_python_scripts_are_a_page_each():
    """Their logic lives in the package; a script parses and calls (gpu_check.sh, the GPU run's steps, is not
    held to this yet)."""
    long = {f: n for f in os.listdir(os.path.join(ROOT, "scripts")) if f.endswith(".py")
            and (n := sum(1 for _ in open(os.path.join(ROOT, "scripts", f)))) > 60}
    assert long == {}


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_source_file_over_400_lines():
    long = {}
    for folder in (*PACKAGES, "scripts", "tests", "benchmarks"):
        for d, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if f.endswith((".py", ".sh")):
                    n = sum(1 for _ in open(os.path.join(d, f)))
                    if n > MAX_LINES:
                        long[os.path.relpath(os.path.join(d, f), ROOT)] = n
    assert long == {}
