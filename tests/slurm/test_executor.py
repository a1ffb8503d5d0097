"""`bench run --executor slurm` on the real single-node Slurm of tests/slurm/cluster.py: a suite as a job array with
the in-process numbers, a cancelled job's run failed with Slurm's reason and claimed again by the rerun, and a job
told of its time limit that checkpoints, is requeued and resumes to the same scores. Every wait is on an event (a
file the gated dataset writes, a state Slurm reports), bounded only as a timeout."""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import yaml

from bench.__main__ import main
from tests.suites import TINY, cell_runs

ROOT = Path(__file__).resolve().parents[2]
FLOAT64 = {**TINY["training"], "dtype": "float64"}


def wait_for(condition, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.1)


def scores(uri):
    return {(r.data.tags["label"], r.data.tags["axis.seed"]): (r.data.metrics.get("test_accuracy",
                                                                                  r.data.metrics.get("test_mse")),
                                                             r.data.metrics["final_train_loss"])
            for r in cell_runs(uri) if r.info.status == "FINISHED"}


def run_in_process(path, uri):
    """The suite in this process on one thread, as each job's one CPU: the same reductions in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", str(path), "--tracking-uri", uri, "--no-progress", "--no-report"]) == 0
    finally:
        torch.set_num_threads(threads)


def test_a_suite_runs_as_a_job_array_once_with_the_in_process_numbers(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("METABENCH_CHECKPOINTS", str(tmp_path / "checkpoints"))
    raw = {**TINY, "learners": ["fomaml/functional", "protonet"], "grid": {**TINY["grid"], "seeds": [0, 1]},
           "training": FLOAT64}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    here, there = f"sqlite:///{tmp_path / 'here.db'}", f"sqlite:///{tmp_path / 'there.db'}"
    run_in_process(path, here)
    assert main(["run", str(path), "--tracking-uri", there, "--no-progress", "--no-report", "--executor", "slurm",
                 "--slurm-partition", slurm_cluster.partition, "--slurm-time", "10"]) == 0
    runs = cell_runs(there)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)  # each cell once
    jobs = {r.data.tags["executor.slurm_job"] for r in runs}
    assert len(jobs) == 4 and len({job.split("_")[0] for job in jobs}) == 1  # one array, a task per cell
    assert all(r.data.tags["executor"] == "slurm" and r.data.tags["executor.node"] for r in runs)
    assert scores(there) == scores(here)


def gated_suite(tmp_path, gate, **training):
    options = {"gate": str(gate), "meta_batch_size": FLOAT64["meta_batch_size"]}  # the gate holds by meta-batch
    raw = {**TINY, "dataset": {"name": "tests.slurm.gated:GATED", "options": options},
           "learners": [{"name": "maml", "config": {"inner_lr": 0.01}}],
           "grid": {**TINY["grid"], "n_way": [1], "k_shot": [5]},
           "training": {**FLOAT64, "meta_iterations": 8, "validate_every": 4, **training},
           "evaluation": {"test_episodes": 6, "query": 10}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def gated(tmp_path, monkeypatch):
    """The gate's folder, the gated suite and its store, with the checkpoints in the test's own folder."""
    monkeypatch.setenv("METABENCH_CHECKPOINTS", str(tmp_path / "checkpoints"))
    gate = tmp_path / "gate"
    gate.mkdir()
    return gate, gated_suite(tmp_path, gate), f"sqlite:///{tmp_path / 'mlflow.db'}"


def driver(path, uri, cluster, *extra):
    """`bench run --executor slurm` in its own process (the test acts on the job meanwhile)."""
    command = [sys.executable, "-m", "bench", "run", str(path), "--tracking-uri", uri, "--no-progress",
               "--no-report", "--executor", "slurm", "--slurm-partition", cluster.partition, "--slurm-time", "10",
               *extra]
    return subprocess.Popen(command, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def only_job(cluster):
    jobs = cluster.run("squeue", "-h", "-o", "%i").split()
    assert len(jobs) == 1, jobs
    return jobs[0]


def test_a_cancelled_job_fails_its_run_with_slurms_reason_and_the_rerun_finishes_the_cell(slurm_cluster, tmp_path,
                                                                                          monkeypatch):
    gate, path, uri = gated(tmp_path, monkeypatch)
    process = driver(path, uri, slurm_cluster)
    try:
        wait_for(lambda: (gate / "reached").exists() or process.poll() is not None, "cell held mid-training")
        assert process.poll() is None, process.stdout.read()
        slurm_cluster.run("scancel", only_job(slurm_cluster))
        output, _ = process.communicate(timeout=180)
    finally:
        process.kill()
    assert process.returncode == 1, output
    (failed,) = cell_runs(uri)
    assert failed.info.status == "FAILED" and "CANCELLED" in failed.data.tags["error"], failed.data.tags
    (gate / "open").touch()
    again = driver(path, uri, slurm_cluster)
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output
    assert sorted(r.info.status for r in cell_runs(uri)) == ["FAILED", "FINISHED"]


def test_a_job_told_of_its_time_limit_checkpoints_is_requeued_and_resumes_to_the_same_scores(slurm_cluster, tmp_path,
                                                                                             monkeypatch):
    """SIGUSR2, what submitit has Slurm send before the time limit (``scancel --signal`` sends it now): the cell saves
    its training state at the next meta-iteration boundary, submitit requeues the job, and the job resumes the cell
    from there; its scores equal an uninterrupted run's."""
    monkeypatch.setenv("METABENCH_CHECKPOINTS", str(tmp_path / "checkpoints"))
    gate = tmp_path / "gate"
    gate.mkdir()
    path = gated_suite(tmp_path, gate, checkpoint_every=1e9)  # no checkpoint but the one the signal asks for
    (gate / "open").touch()
    whole = driver(path, f"sqlite:///{tmp_path / 'whole.db'}", slurm_cluster)
    output, _ = whole.communicate(timeout=300)
    assert whole.returncode == 0, output
    for passed in ("open", "reached"):  # the uninterrupted run went through the gate
        (gate / passed).unlink()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = driver(path, uri, slurm_cluster)
    try:
        wait_for(lambda: (gate / "reached").exists() or process.poll() is not None, "cell held mid-training")
        held = int((gate / "reached").read_text())  # the meta-iteration whose draw held (a resumed job holds again)
        slurm_cluster.run("scancel", "--signal=USR2", only_job(slurm_cluster))
        wait_for(lambda: (gate / "signalled").exists(), "the signal in the job")
        (gate / "open").touch()
        output, _ = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, output
    (run,) = cell_runs(uri)
    assert run.info.status == "FINISHED"
    assert run.data.tags["executor.slurm_restarts"] == "1" and run.data.tags["ran.resumed_from"] == str(held + 1)
    assert scores(uri) == scores(f"sqlite:///{tmp_path / 'whole.db'}")


def test_a_submitter_killed_after_submission_is_followed_by_one_that_adopts_its_job(slurm_cluster, tmp_path,
                                                                                    monkeypatch):
    """The submitter dies (SIGKILL: an SSH session dropped, no Ctrl-C to cancel anything) while its job computes; the
    next `bench run` finds the cell's run unowned but its job alive, adopts the job instead of submitting the cell
    again, and records its result."""
    gate, path, uri = gated(tmp_path, monkeypatch)
    first = driver(path, uri, slurm_cluster)
    try:
        wait_for(lambda: (gate / "reached").exists() or first.poll() is not None, "cell held mid-training")
        job = only_job(slurm_cluster)
    finally:
        first.kill()
        first.wait()
    second = driver(path, uri, slurm_cluster)
    lines, adopted = [], threading.Event()

    def read():
        for line in second.stdout:
            lines.append(line)
            if line.startswith("adopted"):
                adopted.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: adopted.is_set() or second.poll() is not None, "the job adopted")
        (gate / "open").touch()
        second.wait(timeout=300)
    finally:
        second.kill()
    reader.join(timeout=10)
    output = "".join(lines)
    assert second.returncode == 0, output
    assert f"adopted Slurm job {job}" in output and "submitted" not in output  # the cell was not sent twice
    (run,) = cell_runs(uri)
    assert run.info.status == "FINISHED" and run.data.tags["executor.slurm_job"] == job


def test_a_job_reaching_its_real_time_limit_is_signalled_by_slurm_requeued_and_resumes_to_the_same_scores(
        slurm_cluster, tmp_path, monkeypatch):
    """`--slurm-time 2 --slurm-signal-delay 70`: Slurm itself (not the test) sends SIGUSR2 before the two-minute limit
    of a job whose cell is held mid-training; the cell checkpoints, the job is requeued, and the cell resumes to the
    scores of an uninterrupted in-process run. slurmctld checks limits every 30 s, so the signal comes 50 to 80 s
    after the job starts (not sooner: until submitit has unpickled the cell, importing torch, SIGUSR2 would kill the
    job; a delay of 50 on a one-minute limit let it come at 10 s, and 40 let it come at 20 s, which a loaded machine
    did not survive: the job ended FAILED, never requeued) and the limit's kill at least 40 s after it."""
    gate, path, uri = gated(tmp_path, monkeypatch)
    (gate / "open").touch()
    whole = f"sqlite:///{tmp_path / 'whole.db'}"
    run_in_process(path, whole)
    for passed in ("open", "reached"):
        (gate / passed).unlink()
    process = driver(path, uri, slurm_cluster, "--slurm-time", "2", "--slurm-signal-delay", "70")
    try:
        wait_for(lambda: (gate / "reached").exists() or process.poll() is not None, "cell held mid-training")
        held = int((gate / "reached").read_text())
        wait_for(lambda: (gate / "signalled").exists() or process.poll() is not None, "Slurm's signal", timeout=180)
        (gate / "open").touch()
        output, _ = process.communicate(timeout=400)
    finally:
        process.kill()
    assert process.returncode == 0, output
    (run,) = cell_runs(uri)
    assert run.info.status == "FINISHED" and int(run.data.tags["executor.slurm_restarts"]) >= 1
    # from the held iteration; a loaded machine may see the requeued job signalled too, before it finishes
    assert run.data.tags["ran.resumed_from"].split(",")[0] == str(held + 1)
    assert scores(uri) == scores(whole)
