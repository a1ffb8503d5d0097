"""MLflow: where every result goes, and the only place the report reads from.

A parent run per suite invocation, a child run per cell. Child runs carry the tag ``config_hash`` (resume) and
``outcome`` (finished / failed / skipped / interrupted), next to MLflow's own status.
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import mlflow
import torch
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from bench.measure import cpu_model, device_description

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARENT_TAG = "mlflow.parentRunId"


@contextlib.contextmanager
def uninterruptible() -> Iterator[None]:
    """Hold Ctrl-C until the block is done, then raise it. A KeyboardInterrupt inside MLflow's SQL session can be
    swallowed (the run goes on) or leave the store locked (the clean-up hangs); between writes it is safe."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _uninterruptible(write):
    @functools.wraps(write)
    def wrapped(*args, **kwargs):
        with uninterruptible():
            return write(*args, **kwargs)
    return wrapped


def resolve_uri(suite_uri: str, flag: str | None) -> str:
    """--tracking-uri beats MLFLOW_TRACKING_URI beats the suite's own."""
    uri = flag or os.environ.get("MLFLOW_TRACKING_URI") or suite_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # relative SQLite paths are taken from the project root, not wherever the command was started
        uri = f"sqlite:///{PROJECT_ROOT / uri[len('sqlite:///'):]}"
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return uri


@_uninterruptible
def client_for(uri: str) -> MlflowClient:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep our own progress output readable
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


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
    return client.create_experiment(name, artifact_location=location)


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment_tags(device: str | None = None) -> dict[str, str]:
    tags = {"git_commit": git_commit(), "torch_version": torch.__version__,
            "cuda_version": str(torch.version.cuda), "cpu_model": cpu_model(), "python": platform.python_version(),
            "host": platform.node()}
    if device is not None:
        try:
            tags["device_name"] = device_description(torch.device(device))
        except (RuntimeError, AssertionError) as error:  # a device that is not there has no name
            tags["device_name"] = f"unavailable ({error})"
    return tags


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


@_uninterruptible
def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, v[:6000]) for k, v in flatten(params).items()]
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
        page = client.search_runs([experiment], filter_string="tags.role = 'cell'", max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def finished_runs(client: MlflowClient, experiment: str) -> dict:
    """config hash -> a run of that cell that finished (what resuming skips)."""
    return {r.data.tags["config_hash"]: r for r in child_runs(client, experiment)
            if r.info.status == "FINISHED" and r.data.tags.get("outcome") == "finished"}


@_uninterruptible
def close_interrupted(client: MlflowClient, experiment: str) -> int:
    """Runs left RUNNING by an interrupted invocation (Ctrl-C, kill -9, lost machine) are marked FAILED."""
    stale = client.search_runs([experiment], filter_string="attributes.status = 'RUNNING'", max_results=10000)
    for run in stale:
        client.set_tag(run.info.run_id, "outcome", "interrupted")
        client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.FAILED))
    return len(stale)


@_uninterruptible
def start_run(client: MlflowClient, experiment: str, name: str, tags: dict[str, str]) -> str:
    return client.create_run(experiment, run_name=name, tags=tags).info.run_id


@_uninterruptible
def end_run(client: MlflowClient, run_id: str, outcome: str, status: str, extra_tags: dict[str, str] | None = None):
    tags = [RunTag("outcome", outcome)] + [RunTag(k, v[:5000]) for k, v in (extra_tags or {}).items()]
    client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status=status)
