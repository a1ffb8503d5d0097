"""The UIs the README points at: MLflow's opens the harness's experiments as training experiments (runs table), and
optuna-dashboard, installed with the project, serves `bench tune`'s storage with the objectives by name."""
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from bench.consumers.tune import TuneOptions, open_study
from bench.spec.suite import parse_suite
from bench.store import tracking
from tests.suites import TINY


def test_experiments_are_made_as_training_experiments(tracking_uri):
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment(tracking.experiment_id(client, "tiny"))
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optuna_dashboard_serves_the_tuning_storage_with_the_objective_by_name(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    suite = parse_suite({**TINY, "search": {"n_trials": 1, "space": {"learner.inner_lr": {"low": 0.1, "high": 0.5}}}},
                        "s.yaml")
    study = open_study(suite, TuneOptions(storage=storage), "maml")
    study.optimize(lambda trial: trial.suggest_float("learner.inner_lr", 0.1, 0.5), n_trials=1)
    port = free_port()
    command = Path(sys.executable).parent / "optuna-dashboard"  # installed with the project (the ui extra)
    server = subprocess.Popen([str(command), storage, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.load(response)["study_summaries"]
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "optuna-dashboard did not answer within 60 s"
                time.sleep(0.5)
        (served,) = studies
        assert served["study_name"] == study.study_name
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/csv/{served['study_id']}", timeout=10) as response:
            header = response.read().decode().splitlines()[0]
        assert "validation accuracy" in header and "Objective" not in header
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert optuna.load_study(study_name=study.study_name, storage=storage).metric_names == ["validation accuracy"]
