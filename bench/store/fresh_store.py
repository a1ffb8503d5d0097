"""A new embedded SQLite store as a copy of an empty one: MLflow creates a store by running every schema migration
from the first (about 1.6 s on this machine, paid by every fresh store: a new user's first run, every test's own
store). The empty store is made once per MLflow version by MLflow itself, its Default experiment removed (MLflow
creates that again when the copy is first opened, with the artifact root it would have given it), and copied into
place atomically; a copy opens at the same schema head as a store MLflow migrated itself (tested).
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.tracking import MlflowClient

from bench.core.paths import RESULTS

TEMPLATES = RESULTS / "cache" / "mlflow"


def _template() -> Path:
    """The empty store of the installed MLflow, made once (under a lock: concurrent first runs make it once)."""
    path = TEMPLATES / f"empty-{mlflow.__version__}.db"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        if path.exists():
            return path
        with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
            made = Path(scratch) / "store.db"
            MlflowClient(tracking_uri=f"sqlite:///{made}").search_experiments()  # MLflow migrates it to its head
            with sqlite3.connect(made) as database:  # without the Default experiment: the copy's own is made on open
                database.execute("DELETE FROM experiment_tags")
                database.execute("DELETE FROM experiments")
            os.replace(made, path)
    return path


def create_from_template(path: Path) -> None:
    """Put an empty store at ``path`` (which must not exist, its folder must) as a copy of the template."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        shutil.copyfile(_template(), temporary)
        os.replace(temporary, path)  # atomic: a store is never seen half-copied
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
