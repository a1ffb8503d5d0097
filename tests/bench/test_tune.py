"""`bench tune` on tiny budgets: pruning, resuming, workers, a killed worker, PostgreSQL, bad spaces."""
import os
import re
import shutil
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
from bench.spec.suite import load_suites
from bench.consumers.tune import TuneOptions, study_name
from tests.suites import TINY

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


def name_of(path, label="maml"):
    """The study `bench tune` opens for ``label`` of the suite file at ``path`` (bound to its search definition)."""
    return study_name(load_suites(path)[0], TuneOptions(), label)


def trials(tmp_path, name=None, storage=None):
    name = name or name_of(tmp_path / "tune.yaml")
    study = optuna.load_study(study_name=name, storage=storage or f"sqlite:///{tmp_path / 'optuna.db'}")
    return study.get_trials(deepcopy=False)


def test_a_study_prunes_resumes_and_its_best_configuration_runs(tmp_path, capsys):
    path = tune_suite(tmp_path)
    # two good trials first (learned inner lr): a trial that does not adapt (lr 0) is then below their median
    study = optuna.create_study(study_name=name_of(path), storage=f"sqlite:///{tmp_path / 'optuna.db'}",
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
    # n_trials is the study's total budget: rerunning only tops the same study up to it
    assert main(args(path, tmp_path, "--no-evaluate")) == 0
    assert len(trials(tmp_path)) == 6
    assert main(args(path, tmp_path, "--n-trials", "8", "--no-evaluate")) == 0
    assert len(trials(tmp_path)) == 8
    # the best configuration is a suite file that `bench run` accepts as it is
    (best,) = load_suites(tmp_path / "best.yaml")
    assert best.suite == "tiny_tuned" and best.learners[0].config["inner_lr"] == 0.4 and best.search is None
    assert main(["run", str(tmp_path / "best.yaml"), "--dry-run"]) == 0
    assert (tmp_path / "reports" / "tiny.tuning" / "tuning.md").exists()


def test_two_workers_share_the_budget_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two worker processes on a small machine: no thread oversubscription
    path = tune_suite(tmp_path, search={**SEARCH, "n_trials": 4})
    assert main(args(path, tmp_path, "--workers", "2", "--no-evaluate")) == 0
    done = trials(tmp_path)
    assert sorted(t.number for t in done) == [0, 1, 2, 3]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in done)


def stale_trial(path, tmp_path, heartbeat=1):
    """A trial of the study of ``path`` left RUNNING by a worker killed after one heartbeat (as SIGKILL leaves it)."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=heartbeat)
    study = optuna.create_study(study_name=name_of(path), storage=storage, direction="maximize")
    trial = study.ask({"learner.inner_lr": optuna.distributions.CategoricalDistribution([0.4, 0.0])})
    storage.record_heartbeat(trial._trial_id)
    return trial


def test_a_killed_workers_trial_is_failed_and_retried_without_costing_budget(tmp_path):
    path = tune_suite(tmp_path, search={**SEARCH, "n_trials": 1, "pruner": "none"})
    stale_trial(path, tmp_path)
    time.sleep(3)  # past the grace period of two heartbeats
    # the next invocation fails the stale trial, and its retry (same parameters) is what it runs: the budget of one
    # trial is spent on the retry, not on the killed trial
    assert main(args(path, tmp_path, "--heartbeat", "1", "--no-evaluate")) == 0
    done = trials(tmp_path)
    assert [t.state.name for t in done] == ["FAIL", "COMPLETE"]
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(done[1]) == 0
    assert done[1].params == done[0].params


def test_a_trial_running_elsewhere_is_charged_and_the_short_study_is_not_evaluated(tmp_path, capsys):
    """Two invocations of one study share its budget: a RUNNING trial (another `bench tune`, heartbeat fresh) is
    charged, so this one runs only the rest and then says the study is short instead of reporting a best."""
    path = tune_suite(tmp_path, search={**SEARCH, "n_trials": 2, "pruner": "none"})
    stale_trial(path, tmp_path, heartbeat=60)
    assert main(args(path, tmp_path, "--heartbeat", "60")) == 1
    assert [t.state.name for t in trials(tmp_path)] == ["RUNNING", "COMPLETE"]
    err = capsys.readouterr().err
    assert f"study {name_of(path)}: 1 of 2 trial(s) finished, 1 RUNNING" in err
    assert not (tmp_path / "best.yaml").exists()


@pytest.mark.parametrize("space, message", [
    ({"learner.inner_lr": {"low": 1.0, "high": 0.1}}, "low 1.0 is above high 0.1"),
    ({"learner.inner_lr": {"low": 0.0, "high": 1.0, "log": True}}, "a log range needs low > 0"),
    ({"learner.inner_lrr": {"low": 0.1, "high": 1.0}}, "has the option 'inner_lrr' \\(did you mean 'inner_lr'"),
    ({"training.lr": {"choices": []}}, "choices is empty"),
    ({"learner.inner_steps": {"low": 1, "high": 4, "step": 2}}, "step 2.0 does not divide the range"),
    ({"learner.inner_lr": {"low": float("nan"), "high": 1.0}}, "inner_lr.low: nan is not allowed; expected a finite"),
    ({"learner.inner_lr": {"low": 0.1, "high": float("inf")}}, "inner_lr.high: inf is not allowed"),
    ({"learner.inner_lr": {"low": 0.1, "high": 1.0, "step": float("nan")}}, "inner_lr.step: nan is not allowed"),
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


def test_a_storage_that_cannot_be_opened_exits_2_naming_it_and_creates_nothing(tmp_path, capsys):
    path = tune_suite(tmp_path)
    command = args(path, tmp_path)
    command[command.index("--storage") + 1] = "bogus-url"
    assert main(command) == 2
    assert "--storage bogus-url: cannot open this Optuna storage" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()  # no study run left RUNNING in MLflow


def test_heartbeat_on_journal_storage_is_refused(tmp_path, capsys):
    """Optuna's JournalStorage has no heartbeat: a killed worker's trial stays RUNNING whatever --heartbeat says."""
    assert not isinstance(optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "probe.log"))), optuna.storages._heartbeat.BaseHeartbeat)  # if Optuna adds one, use it
    path = tune_suite(tmp_path)
    command = args(path, tmp_path, "--heartbeat", "5")
    command[command.index("--storage") + 1] = f"journal:{tmp_path / 'journal.log'}"
    assert main(command) == 2
    assert "--heartbeat 5: journal storage" in capsys.readouterr().err
    assert not (tmp_path / "journal.log").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_study_is_bound_to_its_search_definition(tmp_path):
    """An edited space, objective or trial cell is another study (its old trials never mix into best_trial); the
    budget, timeout, sampler seed and pruner are not part of the definition, so a bigger budget continues it."""
    base = name_of(tune_suite(tmp_path))
    same = [{"search": {**SEARCH, "n_trials": 50, "timeout": 60, "seed": 3, "pruner": "none"}}]
    other = [{"search": {**SEARCH, "space": {"learner.inner_lr": {"choices": [0.4, 0.1]}}}},
             {"search": {**SEARCH, "objectives": ["score", "ms_per_iteration"]}},
             {"training": {**FAST, "meta_iterations": 6}}, {"backbone": {"filters": 4}},
             {"grid": {**TINY["grid"], "n_way": [5, 3]}},
             {"learners": [{"name": "maml", "config": {"inner_steps": 2}}]}]
    assert all(name_of(tune_suite(tmp_path, **change)) == base for change in same)
    names = [name_of(tune_suite(tmp_path, **change)) for change in other]
    assert base not in names and len(set(names)) == len(names), names
    # the base value of an option the space sets is not part of what a trial measures
    assert name_of(tune_suite(tmp_path, learners=[{"name": "maml", "config": {"inner_lr": 0.2}}])) == base


def test_a_learner_label_with_quotes_finds_its_study_run(tmp_path):
    from bench.store import tracking
    from bench.consumers.tune import study_parents

    path = tune_suite(tmp_path, learners=[{"name": "maml", "label": "o'm\"aml"}, "maml"])
    suite, client = load_suites(path)[0], tracking.client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracking.experiment_id(client, "tiny.tuning")
    first = study_parents(suite, TuneOptions(), client, experiment)
    assert study_parents(suite, TuneOptions(), client, experiment) == first and len(set(first.values())) == 2


def test_best_configurations_are_written_through_a_temporary_file_of_their_own(tmp_path):
    from bench.consumers.tune import write_best

    (tmp_path / "best.tmp").mkdir()  # a name another invocation could be writing: never ours
    write_best(tmp_path / "best.yaml", [{"suite": "a"}])
    write_best(tmp_path / "best.yaml", [{"suite": "b"}])
    assert yaml.safe_load((tmp_path / "best.yaml").read_text()) == {"suite": "b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.tmp", "best.yaml"]


def test_a_dead_worker_fails_the_command_when_its_study_is_short(tmp_path):
    from bench.consumers.tune import shortfalls

    path = tune_suite(tmp_path)
    suite = load_suites(path)[0]
    study = optuna.create_study(study_name="short")
    study.add_trial(optuna.create_trial(value=0.5, params={}, distributions={}))
    (problem,) = shortfalls(suite, TuneOptions(), {"maml": study}, ["worker 1 (pid 7) was killed by SIGKILL"])
    assert problem == "study short: 1 of 6 trial(s) finished: worker 1 (pid 7) was killed by SIGKILL"
    assert shortfalls(suite, TuneOptions(n_trials=1), {"maml": study}, ["worker 1 (pid 7) was killed by SIGKILL"]) \
        == []  # its trials were retried to the budget


def test_workers_killed_by_a_signal_have_their_share_run_again(tmp_path, monkeypatch, capsys):
    """Workers that die (here: at once, by SIGKILL) never pass as success on their own: the command retries what
    they left, and says which worker died and how."""
    from bench.consumers.tune import workers

    die = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    monkeypatch.setattr(workers, "_worker_command", lambda *_: die)
    path = tune_suite(tmp_path, search={**SEARCH, "n_trials": 2, "pruner": "none"})
    assert main(args(path, tmp_path, "--workers", "2", "--heartbeat", "1", "--no-evaluate")) == 0
    assert [t.state.name for t in trials(tmp_path)] == ["COMPLETE", "COMPLETE"]
    assert re.search(r"note: worker 0 \(pid \d+\) was killed by SIGKILL; worker 1 .* every study reached its budget",
                     capsys.readouterr().err)


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


def test_two_workers_on_a_real_postgresql(tmp_path, postgres_url, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two workers beside the server on a small machine: no oversubscription
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
    study = optuna.create_study(study_name=name_of(path), storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                                directions=["maximize", "minimize"])
    for lr in (1e30, 0.4, 0.4):
        study.enqueue_trial({"learner.inner_lr": lr})
    assert main(args(path, tmp_path, "--no-evaluate")) == 0
    done = trials(tmp_path)
    assert [t.state.name for t in done] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert all(len(t.values) == 2 and t.values[1] > 0 for t in done[1:])
    assert (tmp_path / "reports" / "tiny.tuning" / f"{name_of(path)}_pareto.png").stat().st_size > 5000


def test_an_executor_that_runs_no_workers_is_refused_naming_those_that_do(tmp_path, capsys):
    path = tune_suite(tmp_path)
    assert main(args(path, tmp_path, "--workers", "2", "--executor", "ray")) == 2
    error = capsys.readouterr().err
    assert "--executor ray does not run bench tune's workers" in error and "in-process, slurm" in error
    assert not (tmp_path / "optuna.db").exists()  # refused before anything is written
