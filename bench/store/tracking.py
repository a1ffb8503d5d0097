"""MLflow: where every result goes, and the only place the report reads from.

A parent run per suite invocation, a child run per cell. Child runs carry the tags ``config_hash`` and
``code_identity`` (together, what resuming matches), ``eval_fingerprint`` (which runs may be paired), ``axis.<name>``
for every axis of the grid, the owner (``owner.*``, see bench.store.ownership) and ``outcome`` (finished / failed /
skipped / interrupted), next to MLflow's own status; every tag is named in bench.core.tags. The tracking URI is
passed explicitly: no global MLflow state.
"""
from __future__ import annotations

import functools
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlparse

import torch
from filelock import FileLock
from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.db.db_types import DATABASE_ENGINES
from mlflow.tracking import MlflowClient

from bench.core import tags as t
from bench.store import fresh_store, ownership
from bench.core import interrupts
from bench.core.config import ConfigError, flatten, shown
from bench.core.hardware import cpu_model, device_description
from bench.core.paths import WORK_ROOT
from bench.store.provenance import git_commit

FINISHED, FAILED, KILLED, RUNNING = (RunStatus.to_string(s) for s in (RunStatus.FINISHED, RunStatus.FAILED,
                                                                      RunStatus.KILLED, RunStatus.RUNNING))


def _uninterruptible(write):
    """A store write that Ctrl-C never cuts in half (bench.core.interrupts.held)."""
    @functools.wraps(write)
    def wrapped(*args, **kwargs):
        with interrupts.held():
            return write(*args, **kwargs)
    return wrapped


def _check_sqlite_path(uri: str, path: Path) -> None:
    """Refuse an SQLite path that cannot be opened, before anything is written: a folder, a folder that cannot be
    made, or one that cannot be written."""
    try:
        if path.is_dir():
            raise ConfigError(f"tracking URI {shown(uri)}: {path} is a folder; the URI must name an SQLite database "
                              f"file, e.g. sqlite:///{path / 'mlflow.db'}")
        existing = next(p for p in (path, *path.parents) if p.exists())
    except OSError as error:  # a folder on the way that cannot be read
        raise ConfigError(f"tracking URI {shown(uri)}: {path} cannot be reached: {error}") from None
    if existing != path and not existing.is_dir():
        raise ConfigError(f"tracking URI {shown(uri)}: its folder {path.parent} cannot be made: {existing} is a file")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"tracking URI {shown(uri)}: {existing} is not writable")


def anchored_sqlite(uri: str, create: bool = True) -> str:
    """A relative SQLite path is taken from the work root (bench.core.paths), not wherever the command was started; a path that
    cannot be opened is refused (ConfigError); its folder is made unless ``create`` is False (a dry run). Other URIs
    pass unchanged. (MLflow stores and Optuna storages alike.)"""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{WORK_ROOT / uri[len('sqlite:///'):]}"
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        _check_sqlite_path(uri, path)
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
    return uri


# the stores whose experiment names stay unique however many create one at once (a database's unique constraint, or
# a server in front of one): what a claim needs. MLflow's file store checks a name, then creates it: two claimants
# of a cell could both win (3 of 6 did).
CLAIM_SCHEMES = (*DATABASE_ENGINES, "http", "https")
SUPPORTED_STORES = ("an SQLite database (sqlite:///results/mlflow.db), a database URI (postgresql://USER@HOST/DB, "
                    "mysql://..., mssql://...) or an MLflow server (http://HOST:PORT)")


def _check_claimable(uri: str) -> None:
    """Refuse (ConfigError) a store where a cell could be claimed twice. A report only reads, but is refused too: one
    rule for every command, and MLflow itself opens a file store only when told to (MLFLOW_ALLOW_FILE_STORE)."""
    scheme = urlparse(uri).scheme.split("+")[0].lower()
    if scheme in CLAIM_SCHEMES:
        return
    if scheme in ("", "file") or len(scheme) == 1:  # a path (C: on Windows) or file: is MLflow's file store
        raise ConfigError(f"tracking URI {shown(uri)} is MLflow's file store (a folder), where two invocations can "
                          f"both claim a cell; use {SUPPORTED_STORES} (`mlflow migrate-filestore` moves a file "
                          f"store's runs into SQLite)")
    raise ConfigError(f"tracking URI {shown(uri)} has the scheme {scheme!r}, unknown to meta-bench; use "
                      f"{SUPPORTED_STORES}")


def resolve_uri(suite_uri: str, flag: str | None, create: bool = True) -> str:
    """--tracking-uri beats MLFLOW_TRACKING_URI beats the suite's own; a store where a cell could be claimed twice is
    refused (ConfigError)."""
    uri = flag or os.environ.get("MLFLOW_TRACKING_URI") or suite_uri
    _check_claimable(uri)
    return anchored_sqlite(uri, create)


@_uninterruptible
def client_for(uri: str) -> MlflowClient:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep our own progress output readable
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    # the client creates (and migrates) a new store: two invocations doing it at once collide, so one at a time
    database = Path(uri[len("sqlite:///"):])
    with FileLock(str(database) + ".lock", timeout=120):
        if not database.exists() and database.parent.is_dir():
            fresh_store.create_from_template(database)  # a copy, not ~40 migrations
        return MlflowClient(tracking_uri=uri)


# MLflow's experiment kind: a model-training experiment opens on its runs table in the MLflow UI (an experiment
# without the tag may be shown as a GenAI one, on an empty traces overview)
KIND, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


@_uninterruptible
def experiment_id(client: MlflowClient, name: str, create: bool = True) -> str | None:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    if not create:
        return None
    location = None
    if client.tracking_uri.startswith("sqlite:///"):
        # artifacts beside the SQLite file (results/mlartifacts/ by default), not wherever the command runs
        database = Path(client.tracking_uri[len("sqlite:///"):])
        location = (database.parent / "mlartifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags={KIND: TRAINING_KIND})
    except MlflowException:  # another invocation created it in between
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def environment_tags(device: str | None = None) -> dict[str, str]:
    """Where this process runs, as timings depend on it: called where a cell runs (a Ray worker, not its driver)."""
    tags = {t.GIT_COMMIT: git_commit(), t.TORCH_VERSION: torch.__version__, t.CUDA_VERSION: str(torch.version.cuda),
            t.CPU_MODEL: cpu_model(), t.PYTHON: platform.python_version(), t.HOST: platform.node(),
            t.MACHINE: ownership.machine_identity(), t.THREADS: str(torch.get_num_threads())}
    if device is not None:
        try:
            tags[t.DEVICE_NAME] = device_description(torch.device(device))
        except (RuntimeError, AssertionError) as error:  # a device that is not there has no name
            tags[t.DEVICE_NAME] = f"unavailable ({error})"
    return tags


@_uninterruptible
def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[start:start + 100])


@_uninterruptible
def log_metrics(client: MlflowClient, run_id: str, values: Iterable[tuple[str, float, int]]) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for k, v, step in values]
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])


@_uninterruptible
def log_file(client: MlflowClient, run_id: str, write, name: str) -> None:
    """Log an artifact written by ``write(path)`` into a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        write(path)
        client.log_artifact(run_id, str(path))


def child_runs(client: MlflowClient, experiment: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment], filter_string=t.matching({t.ROLE: t.ROLE_CELL}), max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def is_finished(run) -> bool:
    return run.info.status == FINISHED and run.data.tags.get(t.OUTCOME) == t.OUTCOME_FINISHED


META_PARAMETERS = "meta_parameters.pt"  # a finished cell's artifact: its learner's state_dict


def runs_of_cell(client: MlflowClient, experiment: str, config_hash: str, key: str = t.CONFIG_HASH) -> list:
    """Every active run of one cell configuration (``key``: or of one training, ``t.TRAINING_HASH``), in no order:
    ``standing_run`` decides which of them counts."""
    return client.search_runs([experiment], filter_string=t.matching({t.ROLE: t.ROLE_CELL, key: config_hash}),
                              max_results=10000)


def standing_run(runs: Iterable):
    """The run that stands for a cell among ``runs`` (of one config hash, or of one training hash): the newest
    finished one, ties broken by run id; None where none finished. The runner reuses it, tests a new test condition
    on its training, and the report shows it: one rule, so that after ``--force`` all three see the forced run."""
    return max((run for run in runs if is_finished(run)), key=lambda r: (r.info.start_time, r.info.run_id),
               default=None)


def meta_parameters(client: MlflowClient, run_id: str) -> dict:
    """The meta-parameters a finished cell run saved (``meta_parameters.pt``), on the CPU."""
    with tempfile.TemporaryDirectory() as folder:
        path = client.download_artifacts(run_id, META_PARAMETERS, folder)
        return torch.load(path, map_location="cpu", weights_only=True)


@_uninterruptible
def close_orphaned(client: MlflowClient, experiment: str, role: str | None = None,
                   keep: Callable[[object], bool] = lambda run: False) -> int:
    """RUNNING runs (of ``role``, or all) whose owner is gone (Ctrl-C lost, kill -9, a lost machine) are marked FAILED
    with outcome ``interrupted``; runs of live owners (another `bench run` on this store right now) are left alone,
    and so are those ``keep`` names (their work goes on elsewhere: the cell loop may adopt them)."""
    only = f" and {t.matching({t.ROLE: role})}" if role else ""
    running = client.search_runs([experiment], filter_string="attributes.status = 'RUNNING'" + only,
                                 max_results=10000)
    orphaned = [run for run in running if owner_gone(client, run) and not keep(run)]
    for run in orphaned:
        client.set_tag(run.info.run_id, t.OUTCOME, t.OUTCOME_INTERRUPTED)
        client.set_terminated(run.info.run_id, status=FAILED)
    return len(orphaned)


@_uninterruptible
def owner_gone(client: MlflowClient, run) -> bool:
    """Whether the owner of ``run`` (RUNNING) is gone (``ownership.judge``). Where its heartbeat is dated by watching
    it, this reader's first sight of it is kept on the run: a later look, of this process or a later one on this
    machine, dates it from there."""
    verdict = ownership.judge(run.data.tags)
    if verdict.seen:
        try:
            client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in verdict.seen.items()])
        except MlflowException:  # deleted since it was read (a claimant that lost its race): nothing to watch
            if _active(client, run.info.run_id):
                raise
    return verdict.gone


def _active(client: MlflowClient, run_id: str) -> bool:
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise


@_uninterruptible
def reserve(client: MlflowClient, name: str, tags: dict[str, str]) -> bool:
    """Create the record ``name`` unless it exists: True for exactly one of any number of callers, however slow
    their writes (experiment names are unique in the store, deleted ones included). The record stays a live
    experiment: `mlflow gc` purges deleted ones, which would free the name for a second claimant. ``t.HIDDEN`` keeps
    it out of the UI's experiment list."""
    location = None
    if client.tracking_uri.startswith("sqlite:///"):
        location = (Path(client.tracking_uri[len("sqlite:///"):]).parent / "mlartifacts" / "claims").as_uri()
    try:
        client.create_experiment(name, artifact_location=location, tags={**tags, t.HIDDEN: "true"})
    except MlflowException as error:
        if error.error_code == "RESOURCE_ALREADY_EXISTS":
            return False
        raise
    return True


@_uninterruptible
def keep_deleted_records(client: MlflowClient, prefix: str) -> int:
    """Make the deleted records whose names start with ``prefix`` live, as ``reserve`` makes them now (older versions
    deleted each at once, so `mlflow gc` would erase them); how many there were."""
    found, token = [], None
    while True:  # every page first: a restored record leaves the deleted ones, and pages are offsets into them
        page = client.search_experiments(view_type=ViewType.DELETED_ONLY, filter_string=f"name LIKE '{prefix}%'",
                                         max_results=1000, page_token=token)
        found += [e.experiment_id for e in page if e.name.startswith(prefix)]  # LIKE reads '_' as any character
        token = page.token
        if not token:
            break
    for experiment in found:
        client.restore_experiment(experiment)
        client.set_experiment_tag(experiment, t.HIDDEN, "true")  # (a deleted experiment takes no tag)
    return len(found)


def reservation(client: MlflowClient, name: str) -> tuple[dict[str, str], int] | None:
    """The tags of record ``name`` and when the store made it (ms), None where there is none."""
    experiment = client.get_experiment_by_name(name)
    return None if experiment is None else (dict(experiment.tags), experiment.creation_time or 0)


@_uninterruptible
def heartbeat(client: MlflowClient, run_id: str, now: float) -> None:
    client.set_tag(run_id, t.OWNER_HEARTBEAT, f"{now:.3f}")


@_uninterruptible
def set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, v[:5000]) for k, v in tags.items()])


@_uninterruptible
def delete_run(client: MlflowClient, run_id: str) -> None:
    client.delete_run(run_id)


@_uninterruptible
def start_run(client: MlflowClient, experiment: str, name: str, tags: dict[str, str]) -> str:
    return client.create_run(experiment, run_name=name, tags={**tags, **ownership.owner_tags()}).info.run_id


@_uninterruptible
def end_run(client: MlflowClient, run_id: str, outcome: str, status: str, extra_tags: dict[str, str] | None = None):
    tags = [RunTag(t.OUTCOME, outcome)] + [RunTag(k, v[:5000]) for k, v in (extra_tags or {}).items()]
    client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status=status)
