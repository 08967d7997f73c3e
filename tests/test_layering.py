"""The package's layers import only downwards, and no modules import each other.

Low to high: the basics (errors, config, atomic) < functional < nn < models
< convert, io, data, checkpoint < export, train, evaluate < cli, demo and the
package itself. A module may import its own layer and any lower one. Every import
counts, including the lazy ones inside functions: they run too, and a
cycle they hide shows up the first time that function is called.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "irconvert"

LAYERS: dict[str, int] = {
    "errors": 0, "config": 0, "atomic": 0, "version": 0, "outputs": 0,
    "functional": 1,
    "nn": 2,
    "models": 3,
    "convert": 4, "io": 4, "data": 4, "checkpoint": 4,
    "export": 5, "train": 5, "evaluate": 5,
    "cli": 6, "demo": 6, "__init__": 6, "__main__": 6,
}

# Violations that exist today, as "importer -> imported" module names. Each is
# a debt to pay off, not a precedent: remove an entry when its import goes (the
# test fails until you do, so the list only shrinks); never add one to make a
# new import pass.
KNOWN_VIOLATIONS: set[str] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int:
    """``irconvert.train.trainer`` -> the layer of ``train``; ``irconvert`` -> ``__init__``'s."""
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    """The irconvert modules an ``import``/``from ... import`` statement loads."""
    if node.level:  # relative: from its package upwards
        base = importer.split(".")
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if module != "irconvert" and not module.startswith("irconvert."):
        return [module]
    # ``from irconvert.pkg import x``: x is a subpackage or module, or a name
    # defined in irconvert/pkg/__init__.py (which then is what is imported).
    folder = PACKAGE.parent.joinpath(*module.split("."))
    if not folder.is_dir():
        return [module]
    found = []
    for alias in node.names:
        sub = folder / alias.name
        is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
        found.append(f"{module}.{alias.name}" if is_module else module)
    return found


def _imports() -> set[tuple[str, str]]:
    edges = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _module_name(path)
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve(node, importer, is_package)
            else:
                continue
            for target in targets:
                if target == "irconvert" or target.startswith("irconvert."):
                    edges.add((importer, target))
    return edges


def _violations() -> set[str]:
    found = set()
    for importer, imported in _imports():
        if _layer(importer) < _layer(imported):
            # Name the imported module, not the class or function it holds.
            found.add(f"{importer} -> {imported}")
    return found


def test_every_top_level_module_has_a_layer() -> None:
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert names <= set(LAYERS), f"give these a layer in LAYERS: {sorted(names - set(LAYERS))}"


def test_no_new_upward_imports() -> None:
    new = sorted(_violations() - KNOWN_VIOLATIONS)
    assert not new, ("a lower layer imports a higher one (move the code down, or pass "
                     "the value in): " + "; ".join(new))


def test_known_violations_still_exist() -> None:
    fixed = sorted(KNOWN_VIOLATIONS - _violations())
    assert not fixed, "fixed, so remove from KNOWN_VIOLATIONS: " + "; ".join(fixed)


def test_the_checker_sees_lazy_and_relative_imports() -> None:
    # A guard on the guard: the walk must find imports inside functions.
    source = "def f():\n    from irconvert.cli import app\n    return app\n"
    tree = ast.parse(source)
    found = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert _resolve(found[0], "irconvert.nn.layers", False) == ["irconvert.cli.app"]
    relative = ast.parse("from ..train import budget\n").body[0]
    assert isinstance(relative, ast.ImportFrom)
    assert _resolve(relative, "irconvert.data.loaders", False) == ["irconvert.train.budget"]
    # a name defined in a package's __init__ is an import of that __init__
    named = ast.parse("from irconvert.export import export_onnx\n").body[0]
    assert isinstance(named, ast.ImportFrom)
    assert _resolve(named, "irconvert.cli.export_cmd", False) == ["irconvert.export"]
    assert _layer("irconvert.nn.layers") < _layer("irconvert.cli")


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The import cycles of ``edges``: strongly connected groups of two or more modules."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        if a != b:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is small, recursion is fine
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
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    # Lazy imports inside functions count: they hide a cycle until the
    # function runs. A module importing its own package's __init__ counts too.
    cycles = _cycles(_imports())
    assert not cycles, "modules that import each other: " + "; ".join(
        " <-> ".join(group) for group in cycles)


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]
    assert _cycles({("a", "b"), ("b", "c")}) == []
