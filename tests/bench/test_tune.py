"""`bench tune` on tiny budgets: pruning, resuming, workers, a killed worker, PostgreSQL, bad spaces."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml

from bench.__main__ import main
from bench.suite import load_suites
from tests.bench.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]
SEARCH = {"n_trials": 6, "pruner_startup_trials": 2, "space": {"learner.inner_lr": {"choices": [0.4, 0.0]}}}
FAST = {**TINY["training"], "validate_every": 2}


def tune_suite(tmp_path, search=None, **changes):
    raw = {**TINY, "learners": ["maml"], "training": FAST, "search": search or SEARCH,
           "report": {"output_dir": str(tmp_path / "reports")}, **changes}
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def args(path, tmp_path, *extra):
    return ["tune", str(path), "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "--best", str(tmp_path / "best.yaml"), "--no-progress", *extra]


def trials(tmp_path, name="tiny.maml", storage=None):
    study = optuna.load_study(study_name=name, storage=storage or f"sqlite:///{tmp_path / 'optuna.db'}")
    return study.get_trials(deepcopy=False)


def test_a_study_prunes_resumes_and_its_best_configuration_runs(tmp_path, capsys):
    path = tune_suite(tmp_path)
    # two good trials first (learned inner lr): a trial that does not adapt (lr 0) is then below their median
    study = optuna.create_study(study_name="tiny.maml", storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                                direction="maximize")
    for lr in (0.4, 0.4, 0.0):
        study.enqueue_trial({"learner.inner_lr": lr})
    assert main(args(path, tmp_path)) == 0
    states = [t.state.name for t in trials(tmp_path)]
    assert len(states) == 6 and states[2] == "PRUNED" and "RUNNING" not in states, states
    out = capsys.readouterr().out
    assert "maml: best of 6 trial(s)" in out and "report:" in out
    # the pruned trial is a pruned MLflow run, not a failure
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny.tuning").experiment_id
    runs = {r.data.tags["trial"]: r for r in client.search_runs([experiment], "tags.role = 'trial'")}
    assert runs["2"].info.status == "KILLED" and runs["2"].data.tags["outcome"] == "pruned"
    assert [m.step for m in client.get_metric_history(runs["0"].info.run_id, "val_score")] == [2, 4]
    # rerunning continues the same study
    assert main(args(path, tmp_path, "--n-trials", "2", "--no-evaluate")) == 0
    assert len(trials(tmp_path)) == 8
    # the best configuration is a suite file that `bench run` accepts as it is
    (best,) = load_suites(tmp_path / "best.yaml")
    assert best.suite == "tiny_tuned" and best.learners[0].config["inner_lr"] == 0.4 and best.search is None
    assert main(["run", str(tmp_path / "best.yaml"), "--dry-run"]) == 0
    assert (tmp_path / "reports" / "tiny.tuning" / "tuning.md").exists()


def test_two_workers_share_the_budget_exactly(tmp_path):
    path = tune_suite(tmp_path, search={**SEARCH, "n_trials": 4})
    assert main(args(path, tmp_path, "--workers", "2", "--no-evaluate")) == 0
    done = trials(tmp_path)
    assert sorted(t.number for t in done) == [0, 1, 2, 3]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in done)


def test_a_killed_worker_leaves_its_trial_failed_and_retried(tmp_path):
    endless = {**TINY["training"], "meta_iterations": 10**6, "validate_every": 10**5}
    path = tune_suite(tmp_path, search={**SEARCH, "n_trials": 1, "pruner": "none"}, training=endless)
    command = [sys.executable, "-m", "bench"] + args(path, tmp_path, "--heartbeat", "1", "--no-evaluate")
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, running = time.time() + 120, False
        while time.time() < deadline and not running and process.poll() is None:
            time.sleep(0.5)
            try:
                running = any(t.state.name == "RUNNING" for t in trials(tmp_path))
            except KeyError:  # the study is not there yet
                pass
        assert running, f"no trial was seen RUNNING (exit {process.poll()})"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
    time.sleep(3)  # past the grace period of two heartbeats
    # the next invocation fails the stale trial, and its retry (same parameters) is what it runs
    short = tune_suite(tmp_path, search={**SEARCH, "n_trials": 1, "pruner": "none"})
    assert main(args(short, tmp_path, "--heartbeat", "1", "--no-evaluate")) == 0
    done = trials(tmp_path)
    assert [t.state.name for t in done] == ["FAIL", "COMPLETE"]
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(done[1]) == 0
    assert done[1].params == done[0].params


@pytest.mark.parametrize("space, message", [
    ({"learner.inner_lr": {"low": 1.0, "high": 0.1}}, "low 1.0 is above high 0.1"),
    ({"learner.inner_lr": {"low": 0.0, "high": 1.0, "log": True}}, "a log range needs low > 0"),
    ({"learner.inner_lrr": {"low": 0.1, "high": 1.0}}, "has the option 'inner_lrr' \\(did you mean 'inner_lr'"),
    ({"training.lr": {"choices": []}}, "choices is empty"),
    ({"learner.inner_steps": {"low": 1, "high": 4, "step": 2}}, "step 2.0 does not divide the range"),
])
def test_a_bad_space_exits_2_and_creates_nothing(tmp_path, space, message, capsys):
    path = tune_suite(tmp_path, search={"space": space})
    assert main(args(path, tmp_path)) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_bad_space_from_the_command_line_is_one_paragraph(tmp_path):
    path = tune_suite(tmp_path, search={"space": {"learner.inner_lr": {"low": 1.0, "high": 0.1}}})
    done = subprocess.run([sys.executable, "-m", "bench"] + args(path, tmp_path), cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{path}: search.space.learner.inner_lr: low 1.0 is above high 0.1" in done.stderr


def _postgres_binaries() -> tuple[str, str] | None:
    for folder in [os.path.dirname(shutil.which("initdb") or "")] + sorted(
            str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")):
        if folder and os.path.exists(os.path.join(folder, "initdb")) and os.path.exists(os.path.join(folder, "pg_ctl")):
            return os.path.join(folder, "initdb"), os.path.join(folder, "pg_ctl")
    return None


@pytest.fixture()
def postgres_url():
    """A throw-away PostgreSQL server on a free localhost port, stopped at the end."""
    binaries = _postgres_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) here: apt-get install postgresql")
    initdb, pg_ctl = binaries
    user = {}
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to start the server as")
        user = {"user": "postgres"}
    folder = tempfile.mkdtemp(prefix="bench-pg-")
    if user:
        shutil.chown(folder, "postgres")
    data = os.path.join(folder, "data")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([initdb, "-D", data, "-A", "trust", "-U", "bench"], check=True, capture_output=True, timeout=120,
                   **user)
    subprocess.run([pg_ctl, "-D", data, "-l", os.path.join(folder, "log"), "-w", "-t", "60", "-o",
                    f"-p {port} -h 127.0.0.1 -k {folder}", "start"], check=True, capture_output=True, timeout=90, **user)
    try:
        yield f"postgresql+psycopg://bench@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"], capture_output=True,
                       timeout=60, **user)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_on_a_real_postgresql(tmp_path, postgres_url):
    path = tune_suite(tmp_path, search={**SEARCH, "n_trials": 4})
    command = ["tune", str(path), "--storage", postgres_url, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
               "--best", str(tmp_path / "best.yaml"), "--no-progress", "--workers", "2", "--no-evaluate"]
    assert main(command) == 0
    done = trials(tmp_path, storage=postgres_url)
    assert sorted(t.number for t in done) == [0, 1, 2, 3]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in done)


def test_a_failing_trial_does_not_stop_a_two_objective_study(tmp_path):
    search = {"n_trials": 3, "objectives": ["score", "ms_per_iteration"],
              "space": {"learner.inner_lr": {"choices": [0.4, 1e30]}}}  # 1e30 diverges: the trial fails
    path = tune_suite(tmp_path, search=search)
    study = optuna.create_study(study_name="tiny.maml", storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                                directions=["maximize", "minimize"])
    for lr in (1e30, 0.4, 0.4):
        study.enqueue_trial({"learner.inner_lr": lr})
    assert main(args(path, tmp_path, "--no-evaluate")) == 0
    done = trials(tmp_path)
    assert [t.state.name for t in done] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert all(len(t.values) == 2 and t.values[1] > 0 for t in done[1:])
    assert (tmp_path / "reports" / "tiny.tuning" / "tiny.maml_pareto.png").stat().st_size > 5000
