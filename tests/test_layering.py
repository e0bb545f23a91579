"""The package is layered and acyclic, read from the source (every import, module-level or inside
a function).

Layers, bottom up:

- utilities: ``eqsolve._io``, ``eqsolve._git``, ``eqsolve._safe_load``, ``eqsolve._errors`` (import nothing of eqsolve);
- the core: ``eqsolve.solvers``, ``eqsolve.gradients``, ``eqsolve.deq``, ``eqsolve.jacobian``,
  ``eqsolve.scaling``, ``eqsolve.residual`` and the ``eqsolve`` package itself (torch only);
- the domain: ``eqsolve.models``, ``eqsolve.tasks``;
- the application: ``runs``, ``config``, ``cli``, ``distributed``, ``training``, ``bench``,
  ``diagnostics``.

A layer imports only from the layers below it, and no module takes part in an import cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"eqsolve": ROOT / "eqsolve", "eqsolve.solvers": ROOT / "solvers"}

UTILITIES = ("eqsolve._io", "eqsolve._git", "eqsolve._safe_load", "eqsolve._errors")
CORE = ("eqsolve", "eqsolve.solvers", "eqsolve.gradients", "eqsolve.deq", "eqsolve.jacobian",
        "eqsolve.scaling", "eqsolve.residual")
DOMAIN = ("eqsolve.models", "eqsolve.tasks")
APPLICATION = ("eqsolve.runs", "eqsolve.config", "eqsolve.cli", "eqsolve.__main__",
               "eqsolve.distributed", "eqsolve.training", "eqsolve.bench", "eqsolve.diagnostics")


def _modules() -> dict[str, Path]:
    """Every module of the package by its installed name (``solvers/`` is ``eqsolve.solvers``)."""
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            if package == "eqsolve" and name.startswith("eqsolve.solvers"):
                continue  # a symlinked or stray copy; solvers/ is the source
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The eqsolve modules ``name`` imports, anywhere in the file (``from a import b`` counts as
    an import of ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES and "." in target:
                target = target.rpartition(".")[0]  # `import eqsolve.a.b` imports eqsolve.a.b
            if target in MODULES and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> str:
    def inside(prefixes: tuple[str, ...]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes if p != "eqsolve")

    if name in UTILITIES:
        return "utility"
    if name == "eqsolve" or inside(CORE):
        return "core"
    if inside(DOMAIN):
        return "domain"
    if inside(APPLICATION):
        return "application"
    raise AssertionError(f"{name} belongs to no layer; add it to one in {__file__}")


ALLOWED = {
    "utility": {"utility"},
    "core": {"utility", "core"},
    "domain": {"utility", "core", "domain"},
    "application": {"utility", "core", "domain", "application"},
}


def test_the_graph_sees_the_package():
    assert {"eqsolve.solvers", "eqsolve.gradients.implicit", "eqsolve.tasks.sudoku.io",
            "eqsolve.training.run", "eqsolve.diagnostics.census", "eqsolve.bench.grid"} <= set(MODULES)
    assert "eqsolve.gradients.base" in GRAPH["eqsolve.gradients.implicit"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports_only_from_its_layer_or_below(name):
    layer = _layer(name)
    wrong = sorted(t for t in GRAPH[name] if _layer(t) not in ALLOWED[layer])
    assert not wrong, f"{name} ({layer}) imports {[(t, _layer(t)) for t in wrong]}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_import_eqsolve_loads_no_hydra_or_matplotlib():
    code = ("import sys, eqsolve, eqsolve.gradients, eqsolve.scaling, eqsolve.models, eqsolve.tasks.sudoku; "
            "print(sorted(m for m in ('hydra', 'omegaconf', 'matplotlib') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
