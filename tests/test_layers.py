"""The architecture, enforced from the imports: no module imports a layer above its own (imports inside functions
included), ``algorithms/`` and ``datasets/`` use only ``bench.core``, and no module imports another's private name."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bottom to top; a module may import its own layer and those below it
LAYERS = ("bench.core", "meta_bench.datasets", "meta_bench.algorithms", "bench.spec", "bench.store", "bench.run",
          "bench.consumers", "bench.__main__")
PACKAGES = ("bench", "algorithms", "datasets", "benchmarks", "tests")
# bench/__init__.py imports bench.store.provenance to snapshot the source before any learner loads (its docstring)
ENTRY = "bench"
INSTALLED_AS = {"algorithms": "meta_bench.algorithms", "datasets": "meta_bench.datasets"}  # pyproject's package-dir


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    parts[0] = INSTALLED_AS.get(parts[0], parts[0])
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    ranks = [rank for rank, layer in enumerate(LAYERS) if module == layer or module.startswith(layer + ".")]
    return ranks[0] if ranks else None


def imports_of(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) of every import in ``tree``, relative imports resolved."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.split(".")[:len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, target, [alias.name for alias in node.names]))
    return found


def violations(root: Path = ROOT) -> list[str]:
    """Every import that breaks the layering, or reaches for a private name of another module, under ``root``."""
    problems = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(path, root)
            tree = ast.parse(path.read_text(), str(path))
            own = layer_of(module)
            for line, target, names in imports_of(tree, module, path.name == "__init__.py"):
                where = f"{path.relative_to(root)}:{line}"
                for name in names:
                    if name.startswith("_") and not name.startswith("__"):
                        problems.append(f"{where}: imports the private name {name} of {target}")
                if own is None or module == ENTRY:
                    continue
                # "from bench.run import measure" imports bench.run.measure
                targets = [target] + [f"{target}.{name}" for name in names]
                ranks = [rank for rank in map(layer_of, targets) if rank is not None]
                if ranks and max(ranks) > own:
                    problems.append(f"{where}: {module} ({LAYERS[own]}) imports {target} "
                                    f"({LAYERS[max(ranks)]}, a layer above)")
                if target == "bench" and not names:
                    problems.append(f"{where}: imports the bench package itself: name a layer")
    return problems


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the project modules it imports (inside functions too); ``from P import m`` imports P.m where m is
    a module. The bench package's own __init__ (the snapshot's entry, above) is left out."""
    paths = {module_name(path, root): path for package in PACKAGES[:3] for path in (root / package).rglob("*.py")}
    graph = {}
    for module, path in paths.items():
        if module == ENTRY:
            continue
        edges = set()
        for _, target, names in imports_of(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            found = [f"{target}.{name}" for name in names if f"{target}.{name}" in paths] or [target]
            edges |= {t for t in found if t in paths and t != ENTRY and t != module}
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, as the modules on it (depth-first search, one cycle per back edge)."""
    found, state, stack = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_no_module_imports_a_layer_above_it_or_a_private_name():
    assert violations() == []


def test_no_import_cycles_even_behind_imports_inside_functions():
    assert cycles(import_graph()) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_every_bench_module_lives_in_a_layer_package_that_says_what_it_may_import():
    loose = [p.name for p in (ROOT / "bench").glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert loose == []
    for layer in LAYERS:
        if layer.startswith("bench.") and layer != "bench.__main__":
            init = ROOT / Path(*layer.split(".")) / "__init__.py"
            assert "import" in ast.get_docstring(ast.parse(init.read_text())), init


def test_the_checker_finds_a_back_import_a_hidden_one_and_a_private_name(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "bench" / "core").mkdir()
    (tmp_path / "bench" / "core" / "config.py").write_text("def f():\n    from bench.run import training\n")
    (tmp_path / "algorithms" / "functional.py").write_text("from bench.spec.suite import Suite\n")
    (tmp_path / "datasets" / "glyphs.py").write_text("from bench.core.config import _private\n")
    (tmp_path / "benchmarks" / "table.py").write_text("from bench.run.measure import time_steps\n")  # outside: free
    found = violations(tmp_path)
    assert len(found) == 3
    assert "bench/core/config.py:2: bench.core.config (bench.core) imports bench.run" in found[0]
    assert ("algorithms/functional.py:1: meta_bench.algorithms.functional (meta_bench.algorithms) imports "
            "bench.spec.suite") in found[1]
    assert "imports the private name _private of bench.core.config" in found[2]
