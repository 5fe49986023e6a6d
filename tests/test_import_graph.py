"""The import graph of the project's modules: no cycles, and every import points downwards.

Layers, lowest first: ``models`` (the science, pure PyTorch and Lightning) <- ``studies`` (what one
run is and does) <- ``sweeps`` and ``analysis`` (planning and submission; reading, fitting and
plotting runs), which never import each other. Imports inside functions count like the others: a
lazy import keeps a command fast, it does not make a wrong-way dependency right, and a cycle that
only works because its imports sit inside functions is still a cycle.

The graph is read from the source (``ast``), so the test imports nothing it checks. Each rule's
failure lists every offending import with its file and line.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = {"models": 0, "studies": 1, "sweeps": 2, "analysis": 2}

# What importing a module may pull in, transitively, at import time (function bodies excluded): the
# planner and the model's config answer in well under a second without torch, and the backbone,
# objectives, scoring and sampling know nothing about training loops, tracking or clusters.
NO_TORCH = ("torch", "lightning", "pytorch_lightning", "mlflow", "submitit", "transformers")
NO_TRAINING_STACK = ("lightning", "pytorch_lightning", "mlflow", "submitit", "transformers")
IMPORT_TIME_RULES = {
    "models.config": NO_TORCH,
    "models.flops": NO_TORCH,
    "models.objective_names": NO_TORCH,
    "models.metric_names": NO_TORCH,
    "models.recipe": NO_TORCH,
    "models.transformer": NO_TRAINING_STACK + ("torch.distributed", "models.parallelize", "models.lightning"),
    "models.objectives": NO_TRAINING_STACK,
    "models.likelihood": NO_TRAINING_STACK,
    "models.sampling": NO_TRAINING_STACK,
    "models.parallelize": NO_TRAINING_STACK,
    "models.convert": NO_TRAINING_STACK,
    "studies.config": NO_TORCH,
    "studies.text_table": NO_TORCH,
    "studies.atomic_write": NO_TORCH,
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str  # a project module, or a dotted third-party name
    line: int
    at_import_time: bool  # outside any function body

    def __str__(self) -> str:
        where = "" if self.at_import_time else " (inside a function)"
        return f"{self.importer} -> {self.imported}  [{module_path(self.importer)}:{self.line}]{where}"


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = project_modules()


def module_path(module: str) -> str:
    return str(MODULES[module].relative_to(REPO))


def _project_module(name: str) -> str | None:
    """The deepest project module a dotted name lies in (``studies.config.RunConfig`` -> ``studies.config``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, in_function: bool):
    """(import node, whether it sits in a function body), skipping ``if TYPE_CHECKING:`` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, in_function
        yield from _walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def imports_of(module: str) -> list[Import]:
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node, in_function in _walk(ast.parse(path.read_text(), str(path)), False):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            # ``from pkg import name``: ``name`` is a submodule or a name defined in ``pkg``; the
            # deepest project module of ``pkg.name`` is the one imported
            names = [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            target = _project_module(name) if name.split(".")[0] in LAYERS else name
            edge = Import(module, target, node.lineno, not in_function)
            if target and target != module and edge not in found:
                found.append(edge)
    return found


IMPORTS = {module: imports_of(module) for module in MODULES}


def _parents(module: str) -> list[str]:
    """The packages Python runs before ``module`` itself (``studies``, ``studies.data`` ...)."""
    parts = module.split(".")
    return [p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in MODULES]


def import_time_closure(module: str) -> dict[str, list[str]]:
    """Every name imported when ``module`` is imported, each with the chain of modules that imports it."""
    chains: dict[str, list[str]] = {}
    stack = [(m, [m]) for m in _parents(module) + [module]]
    seen = set()
    while stack:
        current, chain = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        for edge in IMPORTS[current]:
            if not edge.at_import_time:
                continue
            chains.setdefault(edge.imported, chain)
            if edge.imported in MODULES:
                stack += [(m, chain + [m]) for m in _parents(edge.imported) + [edge.imported]]
    return chains


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a set of modules that
    reach one another through project imports."""
    graph = {m: sorted({e.imported for e in IMPORTS[m] if e.imported in MODULES}) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for module in graph:
            if module not in index:
                visit(module)
    finally:
        sys.setrecursionlimit(limit)
    return found


def wrong_way(edge: Import) -> bool:
    if edge.imported not in MODULES:
        return False
    source, target = edge.importer.split(".")[0], edge.imported.split(".")[0]
    return LAYERS[target] > LAYERS[source] or (LAYERS[target] == LAYERS[source] and source != target)


# ----------------------------------------------------------------------------------------- tests


def test_the_graph_sees_every_kind_of_import():
    """The reader itself: absolute, relative and function-level imports all become edges."""
    relative = [e for e in IMPORTS["studies.data.prepare"] if e.imported.startswith("studies.data.")]
    assert relative, "studies/data/prepare.py imports its siblings relatively; none were found"
    assert any(not e.at_import_time for m in MODULES for e in IMPORTS[m] if e.imported in MODULES)
    assert {e.imported for e in IMPORTS["models.lightning"]} >= {"models.transformer", "models.objectives"}


def test_no_import_cycles():
    found = cycles()
    detail = []
    for component in found:
        members = set(component)
        detail += [f"  {e}" for m in component for e in IMPORTS[m] if e.imported in members]
    assert not found, "import cycles among " + "; ".join(", ".join(c) for c in found) + ":\n" + "\n".join(detail)


def test_imports_point_downwards():
    bad = [str(e) for m in MODULES for e in IMPORTS[m] if wrong_way(e)]
    assert not bad, ("imports against models <- studies <- sweeps, analysis (sweeps and analysis never import "
                     "each other):\n  " + "\n  ".join(bad))


@pytest.mark.parametrize("module", sorted(IMPORT_TIME_RULES))
def test_import_time_dependencies(module):
    forbidden = IMPORT_TIME_RULES[module]
    closure = import_time_closure(module)
    bad = [f"{name} via {' -> '.join(chain)}" for name, chain in sorted(closure.items())
           if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert not bad, f"importing {module} imports " + "; ".join(bad)


def test_the_rules_catch_what_they_are_for(tmp_path, monkeypatch):
    """A cycle, a wrong-way import inside a function and an import-time torch import are all reported."""
    for package in LAYERS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "models" / "a.py").write_text("import models.b\nimport torch\n")
    (tmp_path / "models" / "b.py").write_text("def f():\n    from models import a\n    from studies import c\n")
    (tmp_path / "studies" / "c.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    modules = project_modules()
    monkeypatch.setattr(sys.modules[__name__], "MODULES", modules)
    monkeypatch.setattr(sys.modules[__name__], "IMPORTS", {m: imports_of(m) for m in modules})
    assert cycles() == [["models.a", "models.b"]]
    assert [e.imported for m in modules for e in IMPORTS[m] if wrong_way(e)] == ["studies.c"]
    assert "torch" in import_time_closure("models.a")
    assert "studies.c" not in import_time_closure("models.b")  # inside a function: not at import time
