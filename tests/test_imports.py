"""No import cycles between fastlmrl's modules, and every module imports on its own.

The import graph is read from the source (``ast``): every ``import`` / ``from ... import``
statement, at module level or inside a function (a deferred import is still a dependency), gives
an edge to the fastlmrl module it names.  A module's imports of its own parent packages (``from .
import __version__``) are not edges: a package is always initialised before its submodules.
"""

import ast
import os
import subprocess
import sys

import pytest

import fastlmrl

ROOT = os.path.dirname(os.path.abspath(fastlmrl.__file__))

#: imports that still close a cycle, each with the edit that removes it (files of other owners);
#: the test fails when one of them no longer exists (remove it here) or closes no cycle.
KNOWN_CYCLE_EDGES: set = set()


def _modules() -> dict:
    """{dotted name: (path, is_package)} of every .py file of the package."""
    found = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
            package = rel.endswith(".__init__")
            found[rel[: -len(".__init__")] if package else rel] = (path, package)
    return found


def _longest_module(name: str, modules: dict):
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, package: bool, node, modules: dict) -> list:
    if isinstance(node, ast.Import):
        return [_longest_module(alias.name, modules) for alias in node.names]
    if node.level:
        base = module if package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        full = base + (f".{node.module}" if node.module else "")
    else:
        full = node.module or ""
    out = []
    for alias in node.names:  # `from pkg import submodule` imports the submodule
        candidate = f"{full}.{alias.name}"
        out.append(candidate if candidate in modules else _longest_module(full, modules))
    return out


def import_graph() -> dict:
    """{module: set of fastlmrl modules it imports}."""
    modules = _modules()
    graph = {}
    for module, (path, package) in modules.items():
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, package, node, modules):
                    if target and target != module and not module.startswith(target + "."):
                        edges.add(target)
        graph[module] = edges
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "fastlmrl.runs" in graph["fastlmrl.cli"]
    assert "fastlmrl.sweep.trials" in graph["fastlmrl.sweep"]  # `from .trials import ...`
    assert "fastlmrl.runs" in graph["fastlmrl.demo"]  # a deferred import inside a function


def test_no_import_cycles():
    graph = import_graph()
    for source, target in KNOWN_CYCLE_EDGES:
        assert target in graph[source], (
            f"{source} no longer imports {target}: remove it from KNOWN_CYCLE_EDGES"
        )
    pruned = {m: {t for t in ts if (m, t) not in KNOWN_CYCLE_EDGES} for m, ts in graph.items()}
    assert cycles(pruned) == []
    for source, target in KNOWN_CYCLE_EDGES:  # each known edge still closes a cycle
        with_it = {m: set(ts) for m, ts in pruned.items()}
        with_it[source].add(target)
        assert cycles(with_it), f"{source} -> {target} closes no cycle any more: remove it"
    # the two cycles of issue 14 are gone for good
    everything = cycles(graph)
    for a, b in (("fastlmrl.cli", "fastlmrl.sweep"), ("fastlmrl.rng", "fastlmrl.permutations")):
        assert not any(a in c and b in c for c in everything)
    assert not any(m.startswith("fastlmrl.sweep") for c in everything for m in c)


@pytest.mark.parametrize(
    "module",
    [
        "fastlmrl.runs",
        "fastlmrl.sweep",
        "fastlmrl.sweep.config",
        "fastlmrl.sweep.trials",
        "fastlmrl.sweep.statistics",
        "fastlmrl.sweep.report",
        "fastlmrl.sweep.runner",
        "fastlmrl.rng",
        "fastlmrl.permutations",
        "fastlmrl.cli",
    ],
)
def test_module_imports_in_a_fresh_interpreter(module):
    """Imported first, on its own (an import cycle that matters at import time fails here)."""
    code = (
        f"import importlib, sys; importlib.import_module({module!r}); "
        "assert 'ray' not in sys.modules and 'scipy' not in sys.modules"
    )
    # from the checkout that holds this fastlmrl (python -c puts the working directory first)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, cwd=os.path.dirname(ROOT))
