"""The single-node Slurm of tests/slurm/cluster.py does what the Slurm executor's tests rely on. Every wait is on an
event (a file a job writes, a state Slurm reports), bounded only as a timeout."""
import os
import subprocess
import sys
import time

import pytest
import submitit


def wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.1)


def sbatch(cluster, folder, script, *options):
    """The job id; the job runs ``script`` in ``folder`` and writes its output to ``folder/<id>.out``."""
    return cluster.run("sbatch", "--parsable", f"--chdir={folder}", f"--output={folder}/%j.out", *options,
                       "--wrap", script).strip()


def state(cluster, job):
    return cluster.run("squeue", "-h", "-t", "all", "-j", job, "-o", "%T").strip()


def sacct_state(cluster, job):
    return cluster.run("sacct", "-n", "-X", "-P", "-j", job, "-o", "State").strip()


# touches started.<job>.<restart> and waits for the file "go"
BLOCKED = "touch started.$SLURM_JOB_ID.${SLURM_RESTART_COUNT:-0}; while [ ! -e go ]; do sleep 0.1; done"


def test_a_batch_job_runs_and_writes_its_output(slurm_cluster, tmp_path):
    job = sbatch(slurm_cluster, tmp_path, "echo hi")
    wait_for(lambda: state(slurm_cluster, job) == "COMPLETED", "COMPLETED")
    assert (tmp_path / f"{job}.out").read_text() == "hi\n"
    wait_for(lambda: sacct_state(slurm_cluster, job) == "COMPLETED", "COMPLETED in sacct")


def test_two_one_cpu_jobs_run_at_once(slurm_cluster, tmp_path):
    if slurm_cluster.cpus < 2:
        pytest.skip(f"the node has {slurm_cluster.cpus} CPU")
    jobs = [sbatch(slurm_cluster, tmp_path, BLOCKED, "--ntasks=1", "--cpus-per-task=1") for _ in range(2)]
    wait_for(lambda: all((tmp_path / f"started.{job}.0").exists() for job in jobs), "two jobs started")
    assert [state(slurm_cluster, job) for job in jobs] == ["RUNNING", "RUNNING"]
    (tmp_path / "go").touch()
    wait_for(lambda: [state(slurm_cluster, job) for job in jobs] == ["COMPLETED"] * 2, "both COMPLETED")


def test_scancel_ends_a_running_job_and_sacct_says_so(slurm_cluster, tmp_path):
    job = sbatch(slurm_cluster, tmp_path, BLOCKED)
    wait_for(lambda: (tmp_path / f"started.{job}.0").exists(), "job started")
    slurm_cluster.run("scancel", job)
    wait_for(lambda: state(slurm_cluster, job) == "CANCELLED", "CANCELLED")
    wait_for(lambda: sacct_state(slurm_cluster, job).startswith("CANCELLED"), "CANCELLED in sacct")


def test_a_requeued_job_runs_again(slurm_cluster, tmp_path):
    job = sbatch(slurm_cluster, tmp_path, BLOCKED)
    wait_for(lambda: (tmp_path / f"started.{job}.0").exists(), "job started")
    slurm_cluster.run("scontrol", "requeue", job)
    wait_for(lambda: (tmp_path / f"started.{job}.1").exists(), "job started again")
    (tmp_path / "go").touch()
    wait_for(lambda: state(slurm_cluster, job) == "COMPLETED", "COMPLETED")


def test_a_signal_reaches_the_python_process_of_a_running_job(slurm_cluster, tmp_path):
    """As submitit's job._interrupt does; ``--signal=USR1@SECONDS`` before a time limit also arrives, but only at
    slurmctld's next time-limit check (every 30 s), too slow for this file."""
    script = ("import os, pathlib, signal, time\n"
              "got = pathlib.Path('got')\n"
              "signal.signal(signal.SIGUSR1, lambda *_: got.touch())\n"
              "pathlib.Path('started').touch()\n"
              "while not got.exists(): time.sleep(0.1)\n")
    (tmp_path / "job.py").write_text(script)
    job = sbatch(slurm_cluster, tmp_path, f"srun {subprocess.list2cmdline([sys.executable, 'job.py'])}")
    wait_for(lambda: (tmp_path / "started").exists(), "job started")
    slurm_cluster.run("scancel", "--signal=USR1", job)
    wait_for(lambda: state(slurm_cluster, job) == "COMPLETED", "COMPLETED after the signal")


@pytest.fixture()
def executor(slurm_cluster, tmp_path):
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    assert executor.cluster == "slurm"
    executor.update_parameters(slurm_partition=slurm_cluster.partition, cpus_per_task=1, timeout_min=10)
    return executor


def test_submitit_returns_a_functions_value_and_reads_its_state_from_sacct(executor):
    job = executor.submit(os.getenv, "SLURM_JOB_ID")  # os.environ.get would carry our environ along
    assert job.result() == job.job_id
    wait_for(lambda: job.watcher.get_state(job.job_id, mode="force") == "COMPLETED", "COMPLETED through submitit")


def test_submitit_runs_a_job_array(executor):
    jobs = executor.map_array(pow, [2, 3, 4], [2, 2, 2])
    assert [job.result() for job in jobs] == [4, 9, 16]
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1


def test_submitit_sees_a_cancelled_job_end(executor, tmp_path):
    job = executor.submit(subprocess.run, ["sh", "-c", BLOCKED], cwd=tmp_path)
    wait_for(lambda: list(tmp_path.glob("started.*")), "job started")
    job.cancel(check=True)
    wait_for(lambda: job.done(force_check=True), "submitit seeing the job end")
    assert job.state.startswith("CANCELLED")
