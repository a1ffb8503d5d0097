"""Which code made a result: the identity a finished cell is reused under, and the commit it is shown with.

A cell's code identity hashes the *content* of every source file that can change its numbers (the packages
``algorithms``, ``datasets`` and ``bench`` less the modules that only present, track or orchestrate), with the torch
version and the dataset's version. Learner modules of other learners are left out, so adding or editing one learner
reruns that learner's cells alone. Content, not the commit: an uncommitted edit changes the identity, and a commit
that changes nothing the cell runs does not.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import subprocess
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULT_PACKAGES = ("algorithms", "datasets", "bench")
# modules that never touch a number a cell produces: editing them must not rerun anything
PRESENTATION_ONLY = ("bench/report", "bench/summary.py", "bench/__main__.py", "bench/verify.py", "bench/tracking.py",
                     "bench/runner.py", "bench/provenance.py", "bench/ownership.py")


def source_files(root: Path = PROJECT_ROOT) -> list[Path]:
    """The result-affecting source files under ``root``, relative, in a fixed order."""
    files = []
    for package in RESULT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            if not relative.startswith(PRESENTATION_ONLY):
                files.append(Path(relative))
    return files


def learner_modules() -> dict[str, set[str]]:
    """Registered learner -> the source files (relative) of the classes it is built from."""
    from algorithms import LEARNERS  # noqa: PLC0415  (the registry imports this package's siblings)

    out = {}
    for name, cls in LEARNERS.items():
        files = set()
        for klass in cls.__mro__:
            source = inspect.getsourcefile(klass) if klass.__module__.startswith("algorithms") else None
            if source:
                files.add(Path(source).resolve().relative_to(PROJECT_ROOT).as_posix())
        out[name] = files
    return out


def source_hash(files: list[Path], root: Path = PROJECT_ROOT) -> str:
    digest = hashlib.sha256()
    for relative in files:
        digest.update(relative.as_posix().encode() + b"\0" + (root / relative).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def files_of(learner: str) -> list[Path]:
    """The source files that can change ``learner``'s results: all but the other learners' own modules."""
    modules = learner_modules()
    others = set().union(*modules.values()) - modules[learner]
    return [f for f in source_files() if f.as_posix() not in others]


@functools.lru_cache(maxsize=None)
def code_identity(learner: str, dataset_version: int) -> str:
    """The identity of the code that runs ``learner``'s cells: what resuming matches on, besides the config."""
    return f"{source_hash(files_of(learner))}-torch{torch.__version__}-data{dataset_version}"


@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    """The commit the runs are shown with, ``-dirty`` when tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
