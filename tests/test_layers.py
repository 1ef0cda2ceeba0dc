"""The package's layering, read from the source with ast: the library never imports the
command line (gecko_jax/commands/), and the import graph has no cycle. Imports inside
functions count too (a lazy import is still a dependency)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "gecko_jax"


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _imports(name: str, path: pathlib.Path, mods: dict) -> set[str]:
    """The package modules `name` imports (a `from pkg import mod` names pkg.mod)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    out = set()
    for target in found:
        while target and target not in mods:
            target = target.rpartition(".")[0]
        # The package itself (gecko_jax/__init__) holds only the version.
        if target and target != name and target != "gecko_jax":
            out.add(target)
    return out


def _graph():
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_library_never_imports_the_command_line():
    graph = _graph()
    assert "gecko_jax.commands.train" in graph and len(graph) > 50   # the walk found the tree
    climbs = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                    if t.startswith("gecko_jax.commands")
                    and not m.startswith("gecko_jax.commands") and m != "gecko_jax.cli")
    assert climbs == []


def test_import_graph_has_no_cycle():
    assert _cycles(_graph()) == []


def test_the_checks_catch_what_they_look_for():
    """The cycle finder and the import reader see a real cycle and a lazy import."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = _graph()
    # recipes.distill imports the trainer inside a function: still an edge.
    assert "gecko_jax.training.trainer" in graph["gecko_jax.recipes.distill"]


@pytest.mark.parametrize("core", ["gecko_jax.unified_format", "gecko_jax.textio",
                                  "gecko_jax.errors", "gecko_jax.sharding_rules",
                                  "gecko_jax.paths"])
def test_bottom_modules_import_nothing_above_them(core):
    allowed = {"gecko_jax.errors", "gecko_jax.paths"}   # paths.py imports only etils
    assert _graph()[core] <= allowed
