"""Learners and datasets from outside this repository: a researcher's own package, without forking this one.

Two ways in, both resolved by the registries when a name is first looked up:

- an import path, ``package.module:Attribute`` (the module importable: installed, or its folder on ``PYTHONPATH``);
- an entry point of an installed distribution, in the group ``meta_bench.learners`` or ``meta_bench.datasets``:
  its name is the name suites use, its value the import path.

The source of a plugin's top-level package is read when it is imported (``SOURCES``), like the repository's own
source at start-up (``bench.store.provenance``): it is part of the code identity of the cells that use it, so
editing a plugin reruns its cells, and an edit while a run is under way is refused like any other.
"""
from __future__ import annotations

import functools
import importlib
import re
import sys
from importlib import metadata
from pathlib import Path


IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
HOW = ("; or a {kind} of your own: its import path ('package.module:Class', the module installed or on PYTHONPATH), "
       "or the name of a 'meta_bench.{kind}s' entry point of an installed distribution")
# every plugin source file, read when its package was first imported: "plugin/<package>/<file>" -> content (the key,
# not the folder it lies in, enters code identities: a plugin moved elsewhere is the same code)
SOURCES: dict[str, bytes] = {}
PATHS: dict[str, Path] = {}  # the same keys -> the file on disk
PACKAGES: dict[str, list[str]] = {}  # a plugin's top-level package -> its keys
OWN_PACKAGES = ("bench", "meta_bench")  # meta-bench's own top-level packages, wherever they are installed


class PluginError(Exception):
    """A plugin named by a suite could not be loaded: the message says which and why."""


@functools.lru_cache(maxsize=None)
def _entry_points(group: str | None) -> tuple[metadata.EntryPoint, ...]:
    """The group's entry points, read once per process (a scan of every installed distribution's metadata)."""
    return tuple(metadata.entry_points(group=group)) if group else ()


def entry_point_names(group: str | None) -> list[str]:
    return [ep.name for ep in _entry_points(group)]


def find(kind: str, group: str | None, name: str) -> tuple[object, str] | None:
    """The object ``name`` names outside the repository and where it comes from; None where it names no plugin."""
    for ep in _entry_points(group):
        if ep.name == name:
            loaded = _load(kind, name, ep.value)
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "an installed distribution"
            return loaded, f"entry point of {dist}: {ep.value} ({where(ep.module)})"
    if ":" not in name:
        return None
    if not IMPORT_PATH.fullmatch(name):
        raise PluginError(f"{kind} {name!r}: not an import path; expected 'package.module:Class'")
    loaded = _load(kind, name, name)
    return loaded, f"import path {name} ({where(name.partition(':')[0])})"


def _load(kind: str, name: str, target: str) -> object:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise PluginError(f"{kind} {name!r}: no module named {error.name!r} (install its package, or put the "
                              f"folder that holds it on PYTHONPATH)") from None
        raise PluginError(f"{kind} {name!r}: importing {module_name} failed: {type(error).__name__}: {error}") from None
    except Exception as error:  # anything the plugin's own import raises: said, not a traceback
        raise PluginError(f"{kind} {name!r}: importing {module_name} failed: {type(error).__name__}: {error}") from None
    loaded: object = module
    for part in attribute.split("."):
        if not hasattr(loaded, part):
            raise PluginError(f"{kind} {name!r}: module {module_name} has no attribute {attribute!r}")
        loaded = getattr(loaded, part)
    snapshot(module_name)
    return loaded


def where(module_name: str) -> str:
    module = sys.modules.get(module_name)
    return str(Path(module.__file__).resolve()) if module is not None and getattr(module, "__file__", None) else "?"


def is_plugin_module(module_name: str) -> bool:
    return module_name.split(".")[0] in PACKAGES


def snapshot(module_name: str) -> None:
    """Read the source of ``module_name``'s top-level package (once), unless it is meta-bench's own."""
    top = module_name.split(".")[0]
    if top in PACKAGES or top in OWN_PACKAGES:
        return  # meta-bench's own modules are read at start-up already
    module = sys.modules[top]
    if hasattr(module, "__path__"):  # a package, regular or namespace (folders of its own on several paths)
        folders = [Path(p).resolve() for p in module.__path__ if Path(p).is_dir()]
        files = [(path, folder.parent) for folder in folders for path in sorted(folder.rglob("*.py"))]
    elif getattr(module, "__file__", None):
        path = Path(module.__file__).resolve()
        files = [(path, path.parent)]
    else:
        return  # built into the interpreter: no source to read
    keys = {f"plugin/{path.relative_to(base).as_posix()}": path for path, base in files}
    PACKAGES[top] = list(keys)
    PATHS.update(keys)
    SOURCES.update({key: path.read_bytes() for key, path in keys.items()})
