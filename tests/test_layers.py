"""The package's layering, read from the source with ast: the library never imports the
command line (gecko_jax/commands/), the import graph has no cycle, and every import
points down the layer table LAYERS (README's layout section lists the same order).
Imports inside functions count too (a lazy import is still a dependency)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "gecko_jax"

# Top to bottom. A unit is a subpackage of gecko_jax or a top-level module. An import
# may point to a unit in a lower layer, or stay inside its own unit; units in one
# layer are siblings and never import each other (fret/, training/ and evaluation/
# meet through files: FRet's record shards, checkpoints, reports).
LAYERS = [
    ["cli"],
    ["commands"],                    # argument parsing only; nothing else imports it
    ["recipes"],                     # runs FRet, training and evaluation in order
    ["fret", "training", "evaluation"],
    # The only layer that needs TensorFlow (seqio input pipelines). It also holds
    # what training and evaluation must agree on without importing each other: the
    # held-out splits (data/splits.py) and FRet's record schema (data/fret_records.py).
    ["data"],
    # encode.py (text in, vectors out) sits here rather than with models/: it
    # loads checkpoints and picks kernels, a user of models/ and kernels/.
    # start_distill.py is a loss too (the start tower's ranking as target).
    ["llm", "losses", "start_distill", "retrieval", "encode"],
    ["models"],
    ["kernels"],                     # models/attention.py calls them
    # The device mesh and array shardings, built from sharding_rules' one table:
    # the trainer and FRet's teacher engines both use it.
    ["partitioning"],
    # lm_tokenizer.py is the decoder LM's tokenizer: models/ (GGUF reading, export)
    # and llm/ both build it. hardware.py only reads the host (CPU flags, devices),
    # so kernels/ and encode.py can ask it. metrics.py is pure math that
    # evaluation/ and FRet's re-ranking evaluation share.
    ["tokenization", "lm_tokenizer", "sharding_rules", "hardware", "gin_files", "metrics"],
    ["unified_format", "textio", "assets"],
    ["errors", "paths"],
]


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


def _unit(module: str) -> str:
    """gecko_jax.data.splits -> data; gecko_jax.metrics -> metrics."""
    return module.split(".")[1]


def _layer_problems(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Edges between units that point up the table or between siblings, one per line."""
    rank = {unit: i for i, layer in enumerate(layers) for unit in layer}
    out = []
    for module, targets in graph.items():
        if module == "gecko_jax":
            # The package's __init__ runs first, under every import: it may only set
            # the allocator up (hardware.py, which imports nothing of the package).
            assert targets <= {"gecko_jax.hardware"}, targets
            continue
        for target in targets:
            src, dst = _unit(module), _unit(target)
            if src == dst or src not in rank or dst not in rank:
                continue
            if rank[dst] < rank[src]:
                out.append(f"{module} -> {target}: {dst} is above {src}")
            elif rank[dst] == rank[src]:
                out.append(f"{module} -> {target}: {src} and {dst} are siblings")
    return sorted(out)


def _unplaced(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Units of the package that the table does not place, and table entries with no code."""
    placed = {unit for layer in layers for unit in layer}
    units = {_unit(m) for m in graph if m != "gecko_jax"}
    return sorted([f"{u}: not in LAYERS" for u in units - placed]
                  + [f"{u}: in LAYERS but not in gecko_jax/" for u in placed - units])


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


def test_imports_point_down_the_layer_table():
    assert _layer_problems(_graph()) == []


def test_the_layer_table_places_every_module():
    assert _unplaced(_graph()) == []


def test_the_checks_catch_what_they_look_for():
    """The cycle finder, the import reader and the layer checks each see a planted fault."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = _graph()
    # recipes.distill imports the trainer inside a function: still an edge.
    assert "gecko_jax.training.trainer" in graph["gecko_jax.recipes.distill"]

    planted = dict(graph)
    planted["gecko_jax.data.tasks"] = graph["gecko_jax.data.tasks"] | {
        "gecko_jax.evaluation.local_tasks"}                        # points up
    planted["gecko_jax.fret.stats"] = graph["gecko_jax.fret.stats"] | {
        "gecko_jax.training.trainer"}                              # between siblings
    planted["gecko_jax.errors"] = {"gecko_jax.data.splits"}        # bottom reaching up
    assert _layer_problems(planted) == [
        "gecko_jax.data.tasks -> gecko_jax.evaluation.local_tasks: evaluation is above data",
        "gecko_jax.errors -> gecko_jax.data.splits: data is above errors",
        "gecko_jax.fret.stats -> gecko_jax.training.trainer: fret and training are siblings"]

    planted = dict(graph, **{"gecko_jax.new_module": {"gecko_jax.errors"}})
    layers = [[u for u in layer if u != "kernels"] for layer in LAYERS]
    assert _unplaced(planted, layers) == ["kernels: not in LAYERS", "new_module: not in LAYERS"]
    assert _unplaced(graph, LAYERS + [["gone"]]) == ["gone: in LAYERS but not in gecko_jax/"]


@pytest.mark.parametrize("core", ["gecko_jax.unified_format", "gecko_jax.textio",
                                  "gecko_jax.errors", "gecko_jax.sharding_rules",
                                  "gecko_jax.paths"])
def test_bottom_modules_import_nothing_above_them(core):
    allowed = {"gecko_jax.errors", "gecko_jax.paths"}   # paths.py imports only etils
    assert _graph()[core] <= allowed
