"""Learners and datasets from outside this repository: a researcher's own package, without forking this one.

Two ways in, both resolved by the registries when a name is first looked up:

- an import path, ``package.module:Attribute`` (the module importable: installed, or its folder on ``PYTHONPATH``);
- an entry point of an installed distribution, in the group ``meta_bench.learners`` or ``meta_bench.datasets``:
  its name is the name suites use, its value the import path.

The source of a plugin's top-level package, and of every local package it imports (``bench.core.dependencies``), is
read when it is imported (``SOURCES``), like the repository's own source at start-up (``bench.store.provenance``),
and the installed distributions it imports are named with their versions: all part of the code identity of the
cells that use it, so editing a plugin or a helper it imports reruns its cells, and an edit while a run is under way
is refused like any other.
"""
from __future__ import annotations

import functools
import importlib
import re
import sys
from importlib import metadata
from pathlib import Path

from bench.core import dependencies
from bench.core.dependencies import OWN_PACKAGES


IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
HOW = ("; or a {kind} of your own: its import path ('package.module:Class', the module installed or on PYTHONPATH), "
       "or the name of a 'meta_bench.{kind}s' entry point of an installed distribution")
# every plugin source file, read when its package was first imported: "plugin/<package>/<file>" -> content (the key,
# not the folder it lies in, enters code identities: a plugin moved elsewhere is the same code)
SOURCES: dict[str, bytes] = {}
PATHS: dict[str, Path] = {}  # the same keys -> the file on disk
PACKAGES: dict[str, list[str]] = {}  # a plugin's top-level package -> its keys
DISTRIBUTION = "distribution/"  # the SOURCES key prefix of an installed distribution a plugin imports


class PluginError(Exception):
    """A plugin named by a suite could not be loaded: the message says which and why."""


@functools.lru_cache(maxsize=None)
def _entry_points(group: str | None) -> tuple[metadata.EntryPoint, ...]:
    """The group's entry points, read once per process (a scan of every installed distribution's metadata)."""
    return tuple(metadata.entry_points(group=group)) if group else ()


def entry_point_names(group: str | None) -> list[str]:
    return [ep.name for ep in _entry_points(group)]


def offering(group: str | None, name: str) -> list[str]:
    """The distributions (``name version``) whose entry points of ``group`` are named ``name``."""
    return sorted(f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None
                  else f"an installed distribution ({ep.value})" for ep in _entry_points(group) if ep.name == name)


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
    before = set(sys.modules)
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
    snapshot(module_name, set(sys.modules) - before)
    return loaded


def where(module_name: str) -> str:
    module = sys.modules.get(module_name)
    return str(Path(module.__file__).resolve()) if module is not None and getattr(module, "__file__", None) else "?"


def is_plugin_module(module_name: str) -> bool:
    return module_name.split(".")[0] in PACKAGES


def snapshot(module_name: str, brought_in: set[str] = frozenset()) -> None:
    """Read the source of ``module_name``'s top-level package and of every local package it depends on, and name
    the installed distributions it imports (``dependencies``), once, unless it is meta-bench's own."""
    top = module_name.split(".")[0]
    if top in PACKAGES or top in OWN_PACKAGES:
        return  # meta-bench's own modules are read at start-up already
    package = [name for name in sys.modules if name == top or name.startswith(top + ".")]
    local, installed = dependencies.dependencies(package, set(brought_in))
    keys: dict[str, Path] = {}
    for name in sorted(local | {top}):
        keys.update({f"plugin/{path.relative_to(base).as_posix()}": path
                     for path, base in dependencies.package_files(name)})
    PATHS.update(keys)
    SOURCES.update({key: path.read_bytes() for key, path in keys.items() if key not in SOURCES})
    for distribution in sorted(installed):  # by name and version: the installed code itself is not read
        SOURCES[f"{DISTRIBUTION}{distribution}"] = distribution.encode()
    PACKAGES[top] = sorted(keys) + sorted(f"{DISTRIBUTION}{d}" for d in installed)
