"""Which code made a result: the identity a finished cell is reused under, and the commit it is shown with.

A cell's code identity hashes the *content* of every source file that can change its numbers (``result_code``: the
modules a cell's work loads, derived from their imports, and the ``algorithms`` and ``datasets`` packages), with the
torch version and the dataset's version. Learner modules of other learners are left out, so adding or editing one learner
reruns that learner's cells alone. Content, not the commit: an uncommitted edit changes the identity, and a commit
that changes nothing the cell runs does not.

The content is read once, when ``bench`` is first imported (before any learner or dataset module is), and every
identity is computed from that snapshot: the identity names the code the process loaded, not what the disk holds
later. A file edited on disk since then makes ``check_unchanged`` refuse to log results under either version.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Iterable

import torch

from bench.core import plugins
from bench.core.paths import CHECKOUT, PROJECT_ROOT, SOURCE_DIRS
from bench.store import result_code

RESULT_PACKAGES = ("algorithms", "datasets", "bench")


def _folders(root: Path | None) -> dict[str, Path]:
    """The source folders by their source-tree names: under ``root`` laid out as the source tree, or this copy's
    (an installed copy holds ``algorithms`` as ``meta_bench/algorithms``)."""
    return {package: root / package if root is not None else SOURCE_DIRS[package] for package in RESULT_PACKAGES}


def source_path(relative: str | Path, root: Path | None = None) -> Path:
    """Where a source file named by its source-tree path (``algorithms/functional.py``) lies."""
    package, _, rest = Path(relative).as_posix().partition("/")
    return _folders(root)[package] / rest


def relative_name(path: Path) -> str:
    """A file of this copy's source folders by its source-tree path: the same name checked out or installed, so the
    same code has the same identity either way."""
    path = path.resolve()
    for package, folder in SOURCE_DIRS.items():
        if folder.resolve() in path.parents:
            return f"{package}/{path.relative_to(folder.resolve()).as_posix()}"
    raise ValueError(f"{path} is not in meta-bench's source folders")


def source_files(root: Path | None = None) -> list[Path]:
    """The result-affecting source files (``result_code``: what a cell's work loads), by source-tree path, in a
    fixed order: this copy's, or those under a ``root`` laid out as the source tree."""
    return [Path(relative) for relative in sorted(result_code.result_code(result_code.every_source(_folders(root))))]


def learner_modules() -> dict[str, set[str]]:
    """Registered learner (those loaded so far) -> the source files of the classes it is built from: relative
    paths in ``algorithms``, and the files of a plugin's package (``plugins.SOURCES`` keys)."""
    from meta_bench.algorithms import LEARNERS  # noqa: PLC0415  (the registry imports this package's siblings)

    out = {}
    for name, cls in LEARNERS.loaded():
        modules = {klass.__module__ for klass in cls.__mro__}
        # and the algorithms modules those import from (the functional learner's execution plan)
        modules |= {getattr(value, "__module__", None) or "" for module in list(modules)
                    for value in vars(sys.modules[module]).values() if not inspect.ismodule(value)}
        out[name] = {relative_name(Path(sys.modules[module].__file__))
                     for module in modules if module.startswith("meta_bench.algorithms.")}
        out[name] |= {key for module in modules if plugins.is_plugin_module(module)
                      for key in plugins.PACKAGES[module.split(".")[0]]}
    return out


def loaded_sources() -> dict[str, bytes]:
    """Every result-affecting source this process runs: the repository's, read at start-up, and each plugin's,
    read when it was imported."""
    return {**LOADED, **plugins.SOURCES}


def source_hash(files: Iterable[Path], root: Path | None = None, contents: dict[str, bytes] | None = None) -> str:
    """Hash of the files' paths and contents; ``contents`` (path -> bytes) stands in for the disk where given."""
    digest = hashlib.sha256()
    for relative in files:
        text = contents[relative.as_posix()] if contents is not None else source_path(relative, root).read_bytes()
        digest.update(relative.as_posix().encode() + b"\0" + text + b"\0")
    return digest.hexdigest()[:16]


class CodeChangedError(RuntimeError):
    """A source file that results depend on changed on disk after this process loaded it."""


def _read_all() -> dict[str, bytes]:
    return {f.as_posix(): source_path(f).read_bytes() for f in source_files()}


LOADED = _read_all()  # the source as this process loads it (see the module's docstring)
LOADED_AT = time.time()  # when: in effect, when this process started


def check_unchanged(files: Iterable[Path]) -> None:
    """Raise ``CodeChangedError`` naming every file of ``files`` whose content on disk is no longer what this
    process loaded: results computed now could be of either version, so none may be logged."""
    changed, loaded = [], loaded_sources()
    for relative in files:
        if relative.as_posix().startswith(plugins.DISTRIBUTION):  # named by version: the loaded code is in memory
            continue
        path = plugins.PATHS.get(relative.as_posix()) or source_path(relative)
        if not path.exists() or path.read_bytes() != loaded[relative.as_posix()]:
            changed.append(path.as_posix() if relative.as_posix() in plugins.PATHS else relative.as_posix())
    if changed:
        raise CodeChangedError(f"{', '.join(changed)} changed on disk after this process loaded it: results now "
                               f"could be of either version, so none are logged. Rerun the command to run the "
                               f"code as it is now")


def _dataset_files(dataset: str | None) -> set[str]:
    """A plugin dataset's package files (a built-in dataset's module is among the repository's sources)."""
    if dataset is None:
        return set()
    from meta_bench.datasets import DATASETS  # noqa: PLC0415  (the datasets package imports bench's core)

    module = DATASETS[dataset].load.__module__
    return set(plugins.PACKAGES[module.split(".")[0]]) if plugins.is_plugin_module(module) else set()


@functools.lru_cache(maxsize=None)
def files_of(learner: str, dataset: str | None = None) -> tuple[Path, ...]:
    """The source files that can change ``learner``'s results on ``dataset``: the repository's, less the other
    learners' own modules (as loaded by this process), and the plugin packages the learner and the dataset come
    from (no other plugin: what else a process happens to have loaded changes no identity)."""
    modules = learner_modules()
    own = modules[learner] | _dataset_files(dataset)
    others = set().union(*modules.values()) - own
    return tuple(Path(f) for f in loaded_sources() if f not in others and (f in LOADED or f in own))


@functools.lru_cache(maxsize=None)
def code_identity(learner: str, dataset: str) -> str:
    """The identity of the code that runs ``learner``'s cells on ``dataset``: what resuming matches on, besides the
    config."""
    from meta_bench.datasets import DATASETS  # noqa: PLC0415

    return (f"{source_hash(files_of(learner, dataset), contents=loaded_sources())}-torch{torch.__version__}"
            f"-data{DATASETS[dataset].version}")


def evaluation_files(dataset: str) -> list[Path]:
    """The code that makes a dataset's test episodes and scores them: its module, the episode and sampler code, the
    evaluation path and the score functions."""
    from meta_bench.datasets import DATASETS  # noqa: PLC0415  (the datasets package imports bench's core)

    plugin = sorted(_dataset_files(dataset))
    module = plugin or _built_in_dataset_files(sys.modules[DATASETS[dataset].load.__module__])
    shared = ("datasets/__init__.py", "datasets/base.py", "datasets/episode.py", "datasets/cache.py",
              "datasets/registry.py", "bench/run/evaluation.py", "bench/run/test_time.py",
              "algorithms/base.py")
    missing = [f for f in shared if f not in LOADED]
    if missing:  # a moved file must not drop out of the identity unnoticed
        raise FileNotFoundError(f"evaluation code not among the loaded sources: {', '.join(missing)}")
    return [Path(f) for f in dict.fromkeys((*module, *shared))]


def _built_in_dataset_files(module) -> list[str]:
    """A built-in dataset's module and the ``meta_bench.datasets`` modules it imports from (the class split, the
    shared image decoding): what makes its episodes besides the shared files."""
    names = {module.__name__}
    for value in vars(module).values():
        names.add(value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None) or "")
    return sorted(relative_name(Path(sys.modules[name].__file__)) for name in names
                  if name == module.__name__ or name.startswith("meta_bench.datasets."))


@functools.lru_cache(maxsize=None)
def evaluation_identity(dataset: str) -> str:
    """Part of the evaluation fingerprint: runs whose episodes or scores came from other code are never paired."""
    return source_hash(evaluation_files(dataset), contents=loaded_sources())


@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    """The commit the runs are shown with, ``-dirty`` when tracked files differ from it; for an installed copy (no
    source checkout), the installed distribution's version."""
    if not CHECKOUT:
        try:
            return f"installed meta-bench {metadata.version('meta-bench')}"
        except metadata.PackageNotFoundError:
            return "unknown (not a git checkout, no installed distribution)"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
