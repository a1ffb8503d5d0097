"""Which of meta-bench's own source files are result code: derived from what a cell's work loads, never listed.

A cell's numbers are made by ``bench.run.training.run_cell`` (meta-training and test). Its module and every module
it imports when it loads, followed transitively through meta-bench's packages, are the result code: the core layer,
the suite's types, the run layer's training, measurement, evaluation and execution choice, and (all of them) the
``algorithms`` and ``datasets`` packages. Not followed: the store layer (``bench.store``), which records results and
names their identity but computes none of them, and ``bench.spec.search`` (the search space of ``bench tune``: the
suite's type holds it, no cell reads it). What is not reached (the CLI, the consumers: report, tune, gate,
calibration; the orchestration: runner, executors, execution) can be edited without rerunning a cell.

Imports are read from the source text (``ast``), at load time only: an import inside a function is not followed, so
a module the cell's work needs must be imported at the top of a module that is. ``tests/bench/test_provenance.py``
classifies every module of ``bench/`` (a new one fails it until it is placed) and runs a cell under a profiler to
check that every function it executes lies in the result code or in the store layer.
"""
from __future__ import annotations

import ast
from pathlib import Path

CELL_WORK = "bench.run.training"  # the root: the module that trains and tests a cell
# loaded by the cell's work, computing none of its numbers: the store layer (the cell's own identity, for the
# execution-choice cache) and the search space `bench tune` explores (a field of the suite's type, read by no cell)
NOT_FOLLOWED = ("bench.store", "bench.spec.search")
WHOLE_PACKAGES = ("algorithms", "datasets")  # every file of these is result code (less other learners' own modules)
# a module name's first parts -> its source-tree package ("meta_bench.algorithms.maml" -> "algorithms/maml.py")
PREFIXES = {"bench": "bench", "meta_bench.algorithms": "algorithms", "meta_bench.datasets": "datasets"}


def _relative(module: str, sources: dict[str, bytes]) -> str | None:
    """The source-tree path of one of meta-bench's modules (a module file, or a package's ``__init__.py``)."""
    for prefix, package in sorted(PREFIXES.items(), key=lambda item: -len(item[0])):
        if module == prefix or module.startswith(prefix + "."):
            rest = module[len(prefix):].lstrip(".").replace(".", "/")
            base = f"{package}/{rest}" if rest else package
            for candidate in (f"{base}.py", f"{base}/__init__.py"):
                if candidate in sources:
                    return candidate
    return None


def _module_of(relative: str) -> str:
    package, _, rest = relative.partition("/")
    dotted = rest.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    prefix = next(name for name, folder in PREFIXES.items() if folder == package)
    return prefix if dotted in ("", "__init__") else f"{prefix}.{dotted}"


def load_time_imports(relative: str, sources: dict[str, bytes]) -> set[str]:
    """The meta-bench modules (source-tree paths) that loading ``relative`` imports: its top-level import
    statements, with every package on the way (importing ``a.b.c`` runs ``a`` and ``a.b`` first)."""
    names: set[str] = set()
    for node in ast.parse(sources[relative]).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}  # "from bench.core import tags"
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise ValueError(f"{relative}: relative import; meta-bench's modules import by absolute name")
    found = set()
    for name in names:
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            path = _relative(".".join(parts[:end]), sources)
            if path is not None:
                found.add(path)
    return found


def result_code(sources: dict[str, bytes]) -> set[str]:
    """The source-tree paths of ``sources`` (every ``.py`` of meta-bench's packages) that can change a cell's
    numbers: the load-time import closure of ``CELL_WORK`` and of the whole learner and dataset packages."""
    roots = [_relative(CELL_WORK, sources)] + [path for path in sources if path.split("/")[0] in WHOLE_PACKAGES]
    seen: set[str] = set()
    todo = [root for root in roots if root is not None]
    while todo:
        path = todo.pop()
        if path in seen or _module_of(path).startswith(NOT_FOLLOWED):
            continue
        seen.add(path)
        todo.extend(load_time_imports(path, sources) - seen)
    return seen


def every_source(folders: dict[str, Path]) -> dict[str, bytes]:
    """Every ``.py`` file of meta-bench's packages by source-tree path (``folders``: package -> its folder)."""
    return {f"{package}/{path.relative_to(folder).as_posix()}": path.read_bytes()
            for package, folder in folders.items() for path in sorted(folder.rglob("*.py"))
            if "__pycache__" not in path.parts}
