"""What a plugin's code depends on, for its identity: the local modules it imports (read by content) and the installed
distributions it imports (by name and version), found from the import statements of its source.

Read from the source text, not from what happened to be imported while the plugin loaded: a helper module that
another plugin imported first is the plugin's dependency all the same, so an identity does not depend on what else
a process loaded. Modules a plugin imports by computed name (``importlib.import_module(name)``) are caught when that
import runs during the plugin's own (``brought_in``). Covered: Python modules outside the standard library, and small
text files (configuration) inside the local packages; not covered: other files a plugin reads at run time (a
dataset's files have an identity of their own: ``meta_bench.datasets.content``).
"""
from __future__ import annotations

import ast
import site
import sys
import sysconfig
from functools import lru_cache
from importlib import metadata
from pathlib import Path

OWN_PACKAGES = ("bench", "meta_bench")  # meta-bench's own top-level packages: in every identity already
CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".toml", ".cfg", ".ini", ".txt")  # read beside the code, if small
CONFIG_MAX_BYTES = 1 << 20


@lru_cache(maxsize=None)
def _installed_folders() -> tuple[Path, ...]:
    """Where installed distributions live: site-packages (system, user, virtual environment)."""
    folders = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    folders |= set(getattr(site, "getsitepackages", lambda: [])()) | {site.getusersitepackages()}
    return tuple(Path(folder).resolve() for folder in folders if folder)


@lru_cache(maxsize=None)
def _distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def _file(module) -> Path | None:
    path = getattr(module, "__file__", None)
    return Path(path).resolve() if path else None


def installed_distribution(top: str) -> str | None:
    """``name version`` of the distribution that installed top-level package ``top`` into site-packages; None for
    a local one (on PYTHONPATH, or an editable install whose source lies elsewhere)."""
    path = _file(sys.modules.get(top))
    if path is None or not any(folder in path.parents for folder in _installed_folders()):
        return None
    names = _distributions().get(top, [])
    return f"{names[0]} {metadata.version(names[0])}" if names else f"{top} (no distribution metadata)"


def kind_of(name: str) -> str:
    """``own``, ``stdlib``, ``builtin`` (no source), ``installed`` or ``local``, for a module in ``sys.modules``."""
    top = name.split(".")[0]
    if top in OWN_PACKAGES:
        return "own"
    if top in sys.stdlib_module_names:
        return "stdlib"
    if _file(sys.modules.get(top)) is None and _file(sys.modules.get(name)) is None:
        return "builtin"
    return "installed" if installed_distribution(top) is not None else "local"


def _imported_names(path: Path, package: str) -> set[str]:
    """Every module name ``path``'s import statements name (inside functions too), relative ones resolved."""
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in names if name}


def _package_of(name: str) -> str:
    module = sys.modules.get(name)
    return name if hasattr(module, "__path__") else name.rpartition(".")[0]


def dependencies(start: list[str], brought_in: set[str]) -> tuple[set[str], set[str]]:
    """The local top-level packages (or single-file modules) and the installed distributions (``name version``)
    that the modules ``start`` import, transitively through local code; ``brought_in``: modules first loaded while
    the plugin was imported (computed imports). Only modules loaded in this process are resolved."""
    local, installed, seen = set(), set(), set()
    todo = list(start) + [name for name in brought_in if kind_of(name) == "local"]
    while todo:
        name = todo.pop()
        if name in seen or name not in sys.modules:
            continue
        seen.add(name)
        kind = kind_of(name)
        if kind == "installed":
            installed.add(installed_distribution(name.split(".")[0]))
            continue
        if kind != "local":
            continue
        local.add(name.split(".")[0])
        path = _file(sys.modules[name])
        if path is not None and path.suffix == ".py":
            for imported in _imported_names(path, _package_of(name)):
                todo.extend(n for n in (imported, imported.rpartition(".")[0]) if n in sys.modules)
    return local, installed


def package_files(top: str) -> list[tuple[Path, Path]]:
    """The source files of local top-level package (or module) ``top`` with the folder its key is relative to:
    every ``.py`` file and small configuration file of a package (its folders on every path, for a namespace
    package), or the module's own file."""
    module = sys.modules[top]
    if hasattr(module, "__path__"):
        folders = [Path(p).resolve() for p in module.__path__ if Path(p).is_dir()]
        return [(path, folder.parent) for folder in folders for path in sorted(folder.rglob("*"))
                if path.is_file() and "__pycache__" not in path.parts and (
                    path.suffix == ".py" or (path.suffix in CONFIG_SUFFIXES
                                             and path.stat().st_size <= CONFIG_MAX_BYTES))]
    path = _file(module)
    return [(path, path.parent)] if path is not None and path.suffix == ".py" else []
