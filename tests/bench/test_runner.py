import math
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow.tracking import MlflowClient

from bench.__main__ import main
from bench.run.factory import build_learner
from bench.run.training import run_cell
from bench.spec.suite import expand, parse_suite
from tests.suites import TINY, cell_runs

ROOT = Path(__file__).resolve().parents[2]


def test_a_suite_logs_every_cell_with_params_metrics_tags_and_artifacts(write_suite, tracking_uri, capsys):
    assert main(["run", str(write_suite()), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 0
    runs = cell_runs(tracking_uri)
    assert sorted(r.data.tags["learner"] for r in runs) == ["finetune", "fomaml/functional", "maml"]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "finished"
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        for tag in ("git_commit", "torch_version", "cuda_version", "device_name", "cpu_model", "config_hash",
                    "code_identity", "eval_fingerprint", "owner.host", "owner.pid", "owner.started", "owner.heartbeat",
                    "mlflow.parentRunId"):
            assert tags[tag], tag
        if tags["learner"] != "finetune":  # what "auto" resolved to by measurement is logged as what ran
            assert tags["ran.autotune"] in ("measured", "cached") and tags["ran.threads"] in ("1", "2")
            assert tags["ran.task_batching"] in ("loop", "vmap")  # bmm runs Linear/ReLU models only
        else:  # nothing left open: not tuned
            assert tags["ran.autotune"] == "explicit" and "ran.task_batching" not in tags
        assert {k: v for k, v in tags.items() if k.startswith("axis.")} == {
            "axis.n_way": "3", "axis.k_shot": "1", "axis.device": "cpu", "axis.seed": "0"}
        assert params["training.meta_iterations"] == "4" and params["n_way"] == "3"
        assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_accuracy_ci95"] > 0
        assert metrics["train_ms_median"] > 0 and metrics["train_saved_bytes_peak"] > 0
        assert metrics["eval_ms_median"] > 0 and metrics["train_rss_peak_bytes"] > 0
        client = MlflowClient(tracking_uri)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 1, 2, 3]
        # the learner's own step metrics are logged, not dropped
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_query_score")] == [0, 1, 2, 3]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_score")] == [2, 4]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"test_episodes.csv", "meta_parameters.pt"} <= artifacts
        path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="test_episodes.csv",
                                                   tracking_uri=tracking_uri)
        scores = pd.read_csv(path)
        assert len(scores) == 6 and math.isclose(scores["accuracy"].mean(), metrics["test_accuracy"], rel_tol=1e-9)
    out = capsys.readouterr().out
    assert "fomaml/functional" in out and "ms/iter" in out  # the summary table


def test_rerun_reuses_finished_cells_and_force_reruns(write_suite, tracking_uri):
    path = str(write_suite())
    assert main(["run", path, "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 0
    assert main(["run", path, "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 0
    assert len(cell_runs(tracking_uri)) == 3
    assert main(["run", path, "--tracking-uri", tracking_uri, "--no-progress", "--no-report", "--force"]) == 0
    assert len(cell_runs(tracking_uri)) == 6


def test_after_force_the_forced_run_stands_for_the_cell_in_reuse_and_in_the_report(tracking_uri):
    """Reuse once took the oldest finished run and the report the newest: after --force, a plain run printed the
    first run's numbers as "reused" while the report showed the forced run's."""
    from bench.consumers.report.loading import load_runs
    from bench.run.runner import run_suite
    from bench.store import tracking

    suite = parse_suite({**TINY, "learners": ["maml"]})

    def run(force=False):
        (outcome,) = run_suite(suite, "", tracking_uri, force=force, progress=False, echo=lambda _: None)
        return outcome

    first, forced = run(), run(force=True)
    assert (first.outcome, forced.outcome) == ("finished", "finished") and forced.run_id != first.run_id
    again = run()
    client = tracking.client_for(tracking_uri)
    assert (again.outcome, again.run_id) == ("reused", forced.run_id)
    assert again.metrics == client.get_run(forced.run_id).data.metrics
    assert list(load_runs(client, [suite]).finished["run_id"]) == [forced.run_id]


def test_the_standing_run_is_the_newest_finished_one_ties_broken_by_run_id():
    from types import SimpleNamespace

    from bench.store import tracking

    def run(run_id, start, outcome="finished", status="FINISHED"):
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, start_time=start, status=status),
                               data=SimpleNamespace(tags={"outcome": outcome}))

    runs = [run("b", 1), run("a", 2), run("c", 2), run("d", 3, "failed", "FAILED"), run("e", 4, "interrupted")]
    assert tracking.standing_run(runs).info.run_id == "c"
    assert tracking.standing_run(list(reversed(runs))).info.run_id == "c"
    assert tracking.standing_run(runs[3:]) is None


def test_missing_device_is_a_skipped_run_with_its_reason(write_suite, tracking_uri, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = write_suite({"learners": ["fomaml/functional"], "grid": {**TINY["grid"], "devices": ["cpu", "cuda"]}})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 0
    runs = {r.data.tags["axis.device"]: r for r in cell_runs(tracking_uri)}
    assert runs["cpu"].data.tags["outcome"] == "finished"
    assert runs["cuda"].info.status == "KILLED" and runs["cuda"].data.tags["outcome"] == "skipped"
    assert "CUDA is not available" in runs["cuda"].data.tags["skip_reason"]


def test_a_diverging_cell_fails_alone_and_the_suite_exits_non_zero(write_suite, tracking_uri, capsys):
    learners = [{"name": "fomaml/functional", "config": {"inner_lr": 1e30}, "label": "diverging"}, "maml"]
    path = write_suite({"learners": learners})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 1
    runs = {r.data.tags["label"]: r for r in cell_runs(tracking_uri)}
    assert runs["maml"].info.status == "FINISHED"
    failed = runs["diverging"]
    assert failed.info.status == "FAILED" and failed.data.tags["outcome"] == "failed"
    assert "NonFiniteLossError" in failed.data.tags["error"] and "meta-iteration 0" in failed.data.tags["error"]
    assert "1 cell(s) failed" in capsys.readouterr().err


def test_the_update_is_not_applied_once_the_loss_is_non_finite(monkeypatch):
    from bench.run import training

    suite = parse_suite({**TINY, "learners": [{"name": "fomaml/functional", "config": {"inner_lr": 1e30}}]})
    cell = expand(suite)[0]
    built = []
    monkeypatch.setattr(training, "build_learner", lambda c: built.append(build_learner(c)) or built[-1])
    try:
        run_cell(cell)
    except FloatingPointError:
        pass
    else:
        raise AssertionError("a non-finite loss must stop the cell")
    start = build_learner(cell)  # the same seed: the weights the cell started from
    (learner,) = built
    assert all(torch.equal(a, b) for a, b in zip(start.model.parameters(), learner.model.parameters()))


def test_same_seed_same_start_and_same_episodes_for_every_learner(monkeypatch):
    """Every learner of a seed starts from the same weights, trains on the same episode stream and is scored on
    the same test episodes; another seed changes the weights and the training stream, not the test episodes."""
    from meta_bench.algorithms.base import MetaLearner
    from bench.run import training

    seen = {}
    real = training.build_learner

    def spy(cell):
        learner = real(cell)
        record = seen.setdefault((cell.learner, cell.seed), {"start": [p.detach().clone()
                                                                        for p in learner.model.parameters()],
                                                              "train": [], "test": []})
        inner_meta, inner_predict, inner_start = learner.meta_gradient, learner.predict_batch, learner.start_iteration
        started = []  # meta-iterations begun: the autotuner's timing calls before the first are not training

        def meta_gradient(batch):
            if started:
                record["train"].append(batch.query_x.clone())
            return inner_meta(batch)

        learner.meta_gradient = meta_gradient
        learner.start_iteration = lambda i: started.append(i) or inner_start(i)
        learner.predict_batch = lambda batch: record["test"].extend(batch.query_x.clone().unbind(0)) or \
            inner_predict(batch)
        return learner

    monkeypatch.setattr(training, "build_learner", spy)
    suite = parse_suite({**TINY, "learners": ["fomaml/deepcopy", "maml", "finetune"],
                         "grid": {**TINY["grid"], "seeds": [0, 1]}})
    for cell in expand(suite):
        run_cell(cell)
    assert isinstance(real(expand(suite)[0]), MetaLearner)

    def same(a, b):
        return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))

    for seed in (0, 1):
        first = seen[("fomaml/deepcopy", seed)]
        assert len(first["train"]) == 4 and len(first["test"]) >= 6
        for name in ("maml", "finetune"):
            other = seen[(name, seed)]
            assert same(first["start"], other["start"]), name
            assert same(first["train"], other["train"]), name
            assert same(first["test"], other["test"]), name
    zero, one = seen[("maml", 0)], seen[("maml", 1)]
    assert not same(zero["start"], one["start"]) and not same(zero["train"], one["train"])
    assert same(zero["test"], one["test"])


def test_ctrl_c_marks_the_cell_killed_and_exits_130(write_suite, tmp_path):
    uri = f"sqlite:///{tmp_path / 'interrupt.db'}"
    endless = {**TINY["training"], "meta_iterations": 10**6, "validate_every": 10**5}  # interrupted long before
    path = write_suite({"learners": ["maml"], "training": endless})
    command = [sys.executable, "-m", "bench", "run", str(path), "--tracking-uri", uri, "--no-progress", "--no-report"]
    # A shell that starts a job in the background (CI may) makes it ignore SIGINT, and Python then never raises
    # KeyboardInterrupt; restore the default, as an interactive terminal has it, so Ctrl-C is what is tested.
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline, running, last_error = time.time() + 180, False, None
    while time.time() < deadline and process.poll() is None and not running:
        time.sleep(0.5)
        try:
            running = any(r.info.status == "RUNNING" for r in cell_runs(uri))
        except Exception as error:  # the store may not exist yet
            last_error = error
    try:
        assert running, f"the cell was never seen RUNNING (exit {process.poll()}, last error {last_error!r})"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()  # never leave an endless run behind a failed test
    assert process.returncode == 130 and "rerun the same command to resume" in err, err[-3000:]
    (run,) = cell_runs(uri)
    assert run.info.status == "KILLED" and run.data.tags["outcome"] == "interrupted"


def test_cuda_out_of_memory_becomes_a_failed_run_and_frees_the_cache(write_suite, tracking_uri, monkeypatch):
    from meta_bench.algorithms.functional import FunctionalLearner

    def out_of_memory(self, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    emptied = []
    monkeypatch.setattr(FunctionalLearner, "meta_gradient", out_of_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    # the execution fixed: no candidate to fall back to (the autotuner's fallback: tests/bench/test_autotune.py),
    # and no measurement to meet the error first, whatever the autotune cache holds from earlier tests
    path = write_suite({"learners": [{"name": "fomaml/functional", "config": {"task_batching": "loop"}}, "finetune"]})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 1
    runs = {r.data.tags["learner"]: r for r in cell_runs(tracking_uri)}
    assert runs["fomaml/functional"].info.status == "FAILED" and emptied == [1]
    assert "OutOfMemoryError: CUDA out of memory" in runs["fomaml/functional"].data.tags["error"]
    assert runs["finetune"].info.status == "FINISHED"


def test_ctrl_c_during_an_mlflow_write_waits_for_the_write_to_end():
    from bench.core.interrupts import held

    # as an interactive terminal has it, however this test process was started (nohup and `&` ignore SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    done = []
    try:
        try:
            with held():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the signal arrives here, inside the block
                done.append("write finished")
        except KeyboardInterrupt:
            done.append("interrupted after")
        assert done == ["write finished", "interrupted after"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_ignored_ctrl_c_stays_ignored():
    """Started in the background (SIGINT ignored), a write must neither raise KeyboardInterrupt nor turn Ctrl-C on."""
    from bench.core.interrupts import held

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_editing_a_learner_reruns_its_cells_and_reuse_needs_a_flag(write_suite, tracking_uri, monkeypatch):
    from bench.run import execution

    path = str(write_suite())
    args = ["run", path, "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]
    assert main(args) == 0
    real = execution.code_identity
    # maml's code changed (an uncommitted edit): its cell reruns, the others are reused
    monkeypatch.setattr(execution, "code_identity", lambda learner, v: "edited" if learner == "maml" else real(learner, v))
    assert main(args) == 0
    counts = pd.Series([r.data.tags["learner"] for r in cell_runs(tracking_uri)]).value_counts().to_dict()
    assert counts == {"maml": 2, "fomaml/functional": 1, "finetune": 1}
    # changed again: without the flag it would rerun; with it, the finished runs of other code are reused
    monkeypatch.setattr(execution, "code_identity", lambda learner, v: "edited again" if learner == "maml" else real(learner, v))
    assert main(args + ["--reuse-other-code"]) == 0
    assert len(cell_runs(tracking_uri)) == 4


def test_closing_interrupted_runs_leaves_live_owners_alone(tracking_uri, monkeypatch):
    from bench.store import ownership, tracking

    client = tracking.client_for(tracking_uri)
    experiment = tracking.experiment_id(client, "owners")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = f"{time.time() - 2 * ownership.STALE_AFTER_S:.0f}"
    owners = {"live": {}, "dead": {ownership.PID: dead.stdout.strip()},
              "reused pid": {ownership.STARTED: "1"},  # this process's id, another start time: a later process
              "other host, beating": {ownership.HOST: "elsewhere", ownership.MACHINE: "elsewhere"},
              "other host, silent": {ownership.HOST: "elsewhere", ownership.MACHINE: "elsewhere",
                                     ownership.HEARTBEAT: stale}}
    ids = {}
    for name, changes in owners.items():
        ids[name] = tracking.start_run(client, experiment, name, {"role": "cell"})
        for key, value in changes.items():
            client.set_tag(ids[name], key, value)
    # another machine's heartbeat is dated by watching it, never by its clock: first seen, both hosts are alive
    assert tracking.close_orphaned(client, experiment) == 2
    tracking.heartbeat(client, ids["other host, beating"], time.time() + 1)  # it beats again
    later = ownership.watch_clock() + 2 * ownership.STALE_AFTER_S
    monkeypatch.setattr(ownership, "watch_clock", lambda: later)
    assert tracking.close_orphaned(client, experiment) == 1  # the silent one, seen unchanged for its limit
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"live": "RUNNING", "dead": "FAILED", "reused pid": "FAILED", "other host, beating": "RUNNING",
                      "other host, silent": "FAILED"}


def test_two_invocations_of_one_suite_on_one_store_finish_every_cell_once(write_suite, tmp_path):
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    path = write_suite({"grid": {**TINY["grid"], "seeds": [0, 1]}})
    command = [sys.executable, "-m", "bench", "run", str(path), "--tracking-uri", uri, "--no-progress", "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on a small machine: no thread oversubscription
    processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    try:
        results = [p.communicate(timeout=300) for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, (out, err) in zip(processes, results):
        assert p.returncode == 0, err[-2000:]
    runs = cell_runs(uri)
    assert all(r.info.status == "FINISHED" and r.data.tags["outcome"] == "finished" for r in runs), \
        [(r.data.tags.get("learner"), r.info.status, r.data.tags.get("outcome")) for r in runs]
    hashes = [r.data.tags["config_hash"] for r in runs]
    assert len(hashes) == 6 and len(set(hashes)) == 6  # 3 learners x 2 seeds, each finished exactly once
    outcomes = " ".join(out for out, _ in results)
    # the summary tables' rows (learner, n_way, k_shot, device, seed, outcome), not the lines printed as cells end
    table_rows = re.findall(r"^\s*\S+\s+3\s+1\s+cpu\s+[01]\s+(finished|reused)\b", outcomes, re.M)
    assert len(table_rows) == 12  # each invocation's summary accounts for all 6


def test_of_many_claimants_of_one_cell_exactly_one_wins_and_the_others_step_back(tracking_uri):
    """Claims are reservations the store makes once: with eight threads claiming one cell at once, one run is
    claimed and every other claimant deletes its run and waits for it."""
    import threading

    from bench.store import claims, tracking
    from bench.run.execution import CellLoop, SuiteRun
    from bench.run.executors.in_process import InProcess

    cell = expand(parse_suite({**TINY, "learners": ["maml"]}))[0]
    client = tracking.client_for(tracking_uri)
    experiment = tracking.experiment_id(client, "tiny")
    loops = []

    def claim():
        loop = CellLoop(SuiteRun("tiny", client, experiment, "parent", False, False, False, print), InProcess(False))
        loops.append(loop)
        loop._claim(cell, 0)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [run_id for loop in loops for run_id in loop.in_flight]
    assert len(claimed) == 1 and sum(len(loop.waiting) for loop in loops) == 7
    assert [r.info.run_id for r in cell_runs(tracking_uri)] == claimed  # the losers' runs are deleted
    latest = claims.latest(client, "tiny", cell.config_hash)
    assert (latest.generation, latest.run_id) == (0, claimed[0])


def test_a_cell_finished_by_another_invocation_after_we_looked_is_reused_not_run_again(write_suite, tracking_uri,
                                                                                        monkeypatch):
    """The race behind a twice-run cell: another invocation finishes the cell between this one's look for a
    finished run and its read of the claim. The claim then shows a finished holder: look again, reuse it."""
    from bench.run.execution import CellLoop

    path = write_suite({"learners": ["maml"]})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 0
    real, looks = CellLoop._reusable, []

    def first_look_misses(self, cell, environment, *args):
        looks.append(args)
        return None if len(looks) == 1 else real(self, cell, environment, *args)

    monkeypatch.setattr(CellLoop, "_reusable", first_look_misses)
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 0
    assert len(cell_runs(tracking_uri)) == 1 and len(looks) >= 3  # missed, looked again, reused


def test_a_fresh_store_copied_from_the_template_is_the_store_mlflow_makes(tmp_path, monkeypatch):
    """A new SQLite store is a copy of an empty one (bench.store.fresh_store): the same tables, indexes and schema
    version as a store MLflow migrated itself, and the Default experiment MLflow gives it, with the artifact root it
    would have given it."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    from bench.store import fresh_store, tracking

    monkeypatch.setattr(fresh_store, "TEMPLATES", tmp_path / "templates")
    ours, theirs = tmp_path / "ours" / "mlflow.db", tmp_path / "theirs" / "mlflow.db"
    for folder in (ours.parent, theirs.parent, tmp_path / "elsewhere", tmp_path / "here"):
        folder.mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the template is made here: its artifact root must not carry over
    tracking.client_for(f"sqlite:///{tmp_path / 'first.db'}").search_experiments()
    assert len(list((tmp_path / "templates").glob("empty-*.db"))) == 1
    monkeypatch.chdir(tmp_path / "here")
    tracking.client_for(f"sqlite:///{ours}").search_experiments()
    MlflowClient(tracking_uri=f"sqlite:///{theirs}").search_experiments()

    def schema(path):
        """Every table and index with its definition's lines in order of text (MLflow's migrations write a table's
        CHECK constraints in no fixed order: two stores it made itself differ there), and the schema version."""
        with sqlite3.connect(path) as database:
            objects = database.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
            version = database.execute("SELECT version_num FROM alembic_version").fetchall()
        return sorted((kind, name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
                      for kind, name, sql in objects), version

    assert schema(ours) == schema(theirs)
    (default,) = MlflowClient(tracking_uri=f"sqlite:///{ours}").search_experiments()
    (reference,) = MlflowClient(tracking_uri=f"sqlite:///{theirs}").search_experiments()
    assert default.name == reference.name == "Default" and default.experiment_id == reference.experiment_id
    assert default.artifact_location == reference.artifact_location
