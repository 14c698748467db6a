"""The import graph of ``lop_bench/`` and ``baselines/`` (STYLE.md rule 17: layers you can
draw): no import cycle, not even through an import inside a function, and ``lop_bench``
never imports ``baselines`` (DESIGN.md section 2).

Imports are read from the source with :mod:`ast` (nothing is imported): every ``import``
statement at any depth, relative ones resolved. ``from package import name`` is an edge to
``package.name`` when that is a module, else to ``package``; importing a submodule is not
counted as importing its parent packages (as import linters count it)."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lop_bench", "baselines")


def _modules(packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of ``packages``."""
    out = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path) -> set[str]:
    """The absolute names ``module`` imports, at any depth of its source."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = package[: len(package) - node.level + 1]
                base = ".".join(stem + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports (edges to the most specific module
    that exists: ``from a import b`` goes to ``a.b`` when ``b`` is a module)."""
    modules = _modules(packages)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for name in _imported(module, path):
            if name in modules:
                edges.add(name)
            elif name.rpartition(".")[0] in modules:  # `from a import f`: f is not a module
                edges.add(name.rpartition(".")[0])
        edges.discard(module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, as the sorted modules of each strongly connected component of
    more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def _within(graph: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    return {m: {e for e in edges if e.split(".")[0] == package}
            for m, edges in graph.items() if m.split(".")[0] == package}


def test_the_checker_finds_cycles_and_resolves_imports():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "lop_bench.registration" in graph["lop_bench"]  # from lop_bench.registration import ...
    assert "lop_bench.runner" in graph["lop_bench"]  # an import inside a function
    assert "lop_bench.envs.base" in graph["lop_bench.envs.regression"]


def test_lop_bench_has_no_import_cycle():
    assert cycles(_within(import_graph(), "lop_bench")) == []


def test_lop_bench_never_imports_baselines():
    graph = import_graph()
    wrong = {m: sorted(e for e in edges if e.split(".")[0] == "baselines")
             for m, edges in graph.items() if m.split(".")[0] == "lop_bench"}
    assert {m: e for m, e in wrong.items() if e} == {}


def test_baselines_have_no_import_cycle():
    assert cycles(_within(import_graph(), "baselines")) == []


def _layer_violations(graph: dict[str, set[str]], layer: str,
                      allowed: tuple[str, ...]) -> dict[str, list[str]]:
    """The ``baselines`` modules that modules of ``baselines.<layer>`` import outside the
    ``allowed`` packages."""
    def inside(name: str) -> bool:
        return any(name == a or name.startswith(a + ".") for a in allowed)

    out = {}
    for module, edges in graph.items():
        if module == f"baselines.{layer}" or module.startswith(f"baselines.{layer}."):
            wrong = sorted(e for e in edges if e.split(".")[0] == "baselines" and not inside(e))
            if wrong:
                out[module] = wrong
    return out


def test_baselines_core_modules_are_leaves():
    """``baselines.core`` (networks, optimizers, generate-and-test, per-step methods) imports
    nothing from ``baselines`` outside ``core``."""
    graph = import_graph()
    assert "baselines.core.nets" in graph["baselines.core.gnt"]
    assert _layer_violations(graph, "core", ("baselines.core",)) == {}


def test_agent_classes_import_no_algorithm_file():
    """``baselines.agents`` imports ``baselines.core`` and other agent modules only: never an
    algorithm's table (``baselines.backprop``, ...) nor the table machinery."""
    graph = import_graph()
    assert "baselines.core.gnt" in graph["baselines.agents.supervised"]
    assert _layer_violations(graph, "agents", ("baselines.core", "baselines.agents")) == {}


def test_the_layer_checks_fail_on_a_wrong_import():
    graph = {"baselines.core.gnt": {"baselines.agents.ppo", "baselines.core.nets", "torch"},
             "baselines.agents.ppo": {"baselines.backprop", "baselines.core.nets"},
             "baselines.backprop": {"baselines.agents.ppo"}}
    assert _layer_violations(graph, "core", ("baselines.core",)) == {
        "baselines.core.gnt": ["baselines.agents.ppo"]}
    assert _layer_violations(graph, "agents", ("baselines.core", "baselines.agents")) == {
        "baselines.agents.ppo": ["baselines.backprop"]}
