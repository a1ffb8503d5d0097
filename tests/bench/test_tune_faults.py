"""Fault injection into `bench tune`: a worker SIGKILLed in the middle of a trial."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from bench.consumers.tune import CHARGED_STATES, FINISHED_STATES, charged
from tests.bench.test_tune import FAST, SEARCH, args, name_of, tune_suite

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _worker_in_a_trial(tmp_path, parent: int) -> int | None:
    """A worker process running a trial now: the owner of a RUNNING trial run in MLflow."""
    from bench.store import tracking
    from bench.store.ownership import PID

    if not (tmp_path / "mlflow.db").exists():
        return None
    client = tracking.client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")  # under the lock its creator holds
    experiment = client.get_experiment_by_name("tiny.tuning")
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], "tags.role = 'trial' and attributes.status = 'RUNNING'")
    workers = [int(r.data.tags[PID]) for r in runs if int(r.data.tags[PID]) in _children(parent)]
    return workers[0] if workers else None


def _study(tmp_path):
    try:
        return optuna.load_study(study_name=name_of(tmp_path / "tune.yaml"),
                                 storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    except KeyError:  # not created yet
        return None


def test_a_worker_killed_mid_trial_is_retried_to_the_budget_or_fails_the_command(tmp_path):
    """Either the killed trial is retried and the study reaches its budget (exit 0), or the command fails naming the
    killed worker: never exit 0 with trials missing."""
    budget = 2  # one trial per worker: the survivor's, the killed one's retry
    # trials of seconds (~40 ms an iteration on one thread): time to catch one before it ends
    slow = {**FAST, "meta_iterations": 80, "validate_every": 40}
    path = tune_suite(tmp_path, search={**SEARCH, "n_trials": budget, "pruner": "none"}, training=slow)
    command = [sys.executable, "-m", "bench"] + args(path, tmp_path, "--workers", "2", "--heartbeat", "1",
                                                     "--no-evaluate")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # three processes on a small machine: no thread oversubscription
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.time()
    try:
        victim, deadline = None, time.time() + 90
        while victim is None and time.time() < deadline and process.poll() is None:
            time.sleep(0.2)
            victim = _worker_in_a_trial(tmp_path, process.pid)
        assert victim is not None, f"never saw a worker in a trial (exit {process.poll()})"
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        _, err = process.communicate(timeout=120)
        print(f"killed after {killed - started:.1f} s, done {time.time() - killed:.1f} s later, "
              f"exit {process.returncode}")
    finally:
        process.kill()
    study = _study(tmp_path)
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    from bench.store import tracking

    client = tracking.client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    trials = client.search_runs([client.get_experiment_by_name("tiny.tuning").experiment_id], "tags.role = 'trial'")
    killed = [r for r in trials if r.data.tags["owner.pid"] == str(victim)]
    assert killed and all(r.info.status == "FAILED" and r.data.tags["outcome"] == "interrupted" for r in killed)
    assert not [r for r in trials if r.info.status == "RUNNING"]
    if process.returncode == 0:
        assert charged(study, FINISHED_STATES) == charged(study, CHARGED_STATES) == budget, states
        assert "FAIL" in states, states  # the killed trial, failed by the heartbeat and retried
        assert f"(pid {victim}) was killed by SIGKILL" in err
    else:
        assert f"(pid {victim}) was killed by SIGKILL" in err, err
