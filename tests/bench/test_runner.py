import math
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
from bench.factory import build_learner
from bench.training import run_cell
from bench.suite import expand, parse_suite
from tests.bench.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


def cell_runs(uri, suite="tiny"):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(suite)
    return client.search_runs([experiment.experiment_id], filter_string="tags.role = 'cell'")


def test_a_suite_logs_every_cell_with_params_metrics_tags_and_artifacts(write_suite, tracking_uri, capsys):
    assert main(["run", str(write_suite()), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 0
    runs = cell_runs(tracking_uri)
    assert sorted(r.data.tags["learner"] for r in runs) == ["finetune", "fomaml/functional", "maml"]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "finished"
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        for tag in ("git_commit", "torch_version", "cuda_version", "device_name", "cpu_model", "config_hash",
                    "mlflow.parentRunId"):
            assert tags[tag], tag
        assert params["training.meta_iterations"] == "4" and params["n_way"] == "3"
        assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_accuracy_ci95"] > 0
        assert metrics["train_ms_median"] > 0 and metrics["train_saved_bytes_peak"] > 0
        assert metrics["eval_ms_median"] > 0 and metrics["train_rss_peak_bytes"] > 0
        client = MlflowClient(tracking_uri)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 1, 2, 3]
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


def test_missing_device_is_a_skipped_run_with_its_reason(write_suite, tracking_uri, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = write_suite({"learners": ["fomaml/functional"], "grid": {**TINY["grid"], "devices": ["cpu", "cuda"]}})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 0
    runs = {r.data.tags["device"]: r for r in cell_runs(tracking_uri)}
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


def test_the_update_is_not_applied_once_the_loss_is_non_finite():
    suite = parse_suite({**TINY, "learners": [{"name": "fomaml/functional", "config": {"inner_lr": 1e30}}]})
    cell = expand(suite)[0]
    learner = build_learner(cell)
    before = [p.detach().clone() for p in learner.model.parameters()]
    try:
        run_cell(cell)
    except FloatingPointError:
        pass
    else:
        raise AssertionError("a non-finite loss must stop the cell")
    after = build_learner(cell)
    assert all(torch.equal(a, b) for a, b in zip(before, after.model.parameters()))


def test_same_seed_same_start_and_same_episodes_for_every_learner():
    suite = parse_suite({**TINY, "learners": ["fomaml/deepcopy", "maml", "finetune"]})
    learners = [build_learner(cell) for cell in expand(suite)]
    first = list(learners[0].model.parameters())
    for other in learners[1:]:
        assert all(torch.equal(a, b) for a, b in zip(first, other.model.parameters()))


def test_kill_minus_nine_then_rerun_resumes(write_suite, tmp_path):
    uri = f"sqlite:///{tmp_path / 'kill.db'}"
    slow = {**TINY["training"], "meta_iterations": 1000, "validate_every": 250}
    # the first cell runs to the end; the second (maml, 1000 iterations) is killed in flight, then rerun whole
    fast_first = write_suite({"learners": ["fomaml/functional", "maml"], "training": slow}, name="kill.yaml")
    command = [sys.executable, "-m", "bench", "run", str(fast_first), "--tracking-uri", uri, "--no-progress",
               "--no-report"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    killed = False
    last_error = None
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.25)
        try:
            runs = cell_runs(uri)
        except Exception as error:  # the store may not exist yet
            last_error = error
            continue
        statuses = {r.data.tags.get("learner"): r.info.status for r in runs}
        if statuses.get("fomaml/functional") == "FINISHED" and statuses.get("maml") == "RUNNING":
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            killed = True
            break
    process.kill()  # a no-op once killed; stops a run that escaped
    assert killed, f"not killed in flight (exit {process.poll()}, last error {last_error!r}): make the cell slower"
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "marked 2 run(s) left RUNNING" in done.stdout  # the killed cell and its parent
    runs = cell_runs(uri)
    by_outcome = sorted((r.data.tags["learner"], r.info.status, r.data.tags.get("outcome")) for r in runs)
    assert by_outcome == [("fomaml/functional", "FINISHED", "finished"), ("maml", "FAILED", "interrupted"),
                          ("maml", "FINISHED", "finished")]


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
    assert process.returncode == 130 and "rerun the same command to resume" in err
    (run,) = cell_runs(uri)
    assert run.info.status == "KILLED" and run.data.tags["outcome"] == "interrupted"


def test_cuda_out_of_memory_becomes_a_failed_run_and_frees_the_cache(write_suite, tracking_uri, monkeypatch):
    from algorithms.fomaml_functional import FunctionalFOMAML

    def out_of_memory(self, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    emptied = []
    monkeypatch.setattr(FunctionalFOMAML, "meta_gradient", out_of_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    path = write_suite({"learners": ["fomaml/functional", "finetune"]})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 1
    runs = {r.data.tags["learner"]: r for r in cell_runs(tracking_uri)}
    assert runs["fomaml/functional"].info.status == "FAILED" and emptied == [1]
    assert "OutOfMemoryError: CUDA out of memory" in runs["fomaml/functional"].data.tags["error"]
    assert runs["finetune"].info.status == "FINISHED"


def test_ctrl_c_during_an_mlflow_write_waits_for_the_write_to_end():
    from bench.tracking import uninterruptible

    done = []
    try:
        with uninterruptible():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the signal arrives here, inside the block
            done.append("write finished")
    except KeyboardInterrupt:
        done.append("interrupted after")
    assert done == ["write finished", "interrupted after"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
