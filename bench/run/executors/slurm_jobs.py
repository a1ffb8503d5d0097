"""`bench run --executor slurm`: a suite's cells as a Slurm job array, through submitit.

The driver stays the only writer of the store (as under Ray): a job trains and tests its cell and returns what the
driver logs (metrics, curves, per-episode scores, meta-parameters, where it ran), so the embedded SQLite store works
on a login node, and the cluster's nodes need no route to it. Claims, reuse, waiting, retries and recording are the
cell loop's (``bench.run.execution``), as for every executor.

- The cells claimed in one pass go out as one job array (``submitit``'s ``batch``), with the partition, time limit,
  GPUs, CPUs, memory, account, QOS, constraint and any other ``sbatch`` option given; each job's log folder is
  ``results/slurm/<suite>/<invocation>/<job id>`` and is printed per cell.
- A job records where it ran (node, job and array ids, its restarts, CPU, GPU, threads) from inside the job; a job
  whose code identity differs from the driver's fails its cell (the loop compares them).
- Before its time limit, or when preempted, Slurm sends the job SIGUSR2 (``--slurm-signal-delay`` seconds ahead):
  the cell saves its whole training state at the next meta-iteration boundary (``bench.run.checkpoint``), then
  submitit requeues the job, which resumes the cell from there (at most ``--slurm-requeues`` times). A job that ends
  otherwise (``scancel``, out of memory, a time limit past its requeues) fails its run with Slurm's state as the
  reason; a lost node (NODE_FAIL, BOOT_FAIL, a preemption that could not requeue) makes the attempt lost, and the
  loop tries it again up to ``--slurm-max-retries`` times.

`bench tune --executor slurm --workers W` sends its W workers (each a `bench tune` of its share of the trials on the
study storage) as one job array too; they write their trials to the study storage and the MLflow store themselves.

submitit is imported only when this executor starts: the in-process path never imports it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.core import tags as t
from bench.core.paths import RESULTS
from bench.run import checkpoint
from bench.run.execution import Attempt, Done, Sink
from bench.run.executors import ExecutorEntry, WorkerCommand, flag, register
from bench.run.executors.attempt import collected, run_attempt
from bench.spec.suite import Cell

LOST_STATES = ("NODE_FAIL", "BOOT_FAIL", "PREEMPTED")
# a job in these may still return its cell's result: a gone submitter's run in one is adopted, not claimed again
ADOPTABLE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                    "RESIZING", "SUSPENDED", "COMPLETED")  # the job's machine failed it: the attempt may be retried
POLL_S = 1.0  # how often job states are read (sacct, through submitit's watcher) while the loop waits
PREEMPTION_SIGNAL = signal.SIGUSR2  # what submitit asks Slurm to send before a time limit (``--signal USR2@delay``)


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = field(default=None, metadata=flag("--slurm-partition", "the partition of the jobs"))
    time: int = field(default=60, metadata=flag(
        "--slurm-time", "minutes a job may run; a longer cell is checkpointed and requeued"))
    gpus_per_cell: int = field(default=0, metadata=flag("--slurm-gpus-per-cell", "GPUs of each job"))
    cpus_per_cell: int = field(default=1, metadata=flag(
        "--slurm-cpus-per-cell", "CPUs of each job (torch's intra-op threads there)"))
    mem: str | None = field(default=None, metadata=flag("--slurm-mem", "memory of each job, as sbatch --mem: 16G"))
    array_parallelism: int = field(default=64, metadata=flag(
        "--slurm-array-parallelism", "jobs of the array running at once at most"))
    account: str | None = field(default=None, metadata=flag("--slurm-account", "the account charged"))
    qos: str | None = field(default=None, metadata=flag("--slurm-qos", "the quality of service"))
    constraint: str | None = field(default=None, metadata=flag("--slurm-constraint", "node features required"))
    option: tuple[str, ...] = field(default=(), metadata=flag(
        "--slurm-option", "any other sbatch option, KEY=VALUE (repeatable): --slurm-option exclude=node7",
        action="append"))
    signal_delay: int = field(default=120, metadata=flag(
        "--slurm-signal-delay", "seconds before the time limit a job is told to checkpoint and requeue"))
    requeues: int = field(default=3, metadata=flag(
        "--slurm-requeues", "times a job may be requeued at its time limit before its cell fails"))
    max_retries: int = field(default=2, metadata=flag(
        "--slurm-max-retries", "new attempts of a cell whose node failed"))

    def __post_init__(self) -> None:
        for name, low in (("time", 1), ("cpus_per_cell", 1), ("gpus_per_cell", 0), ("array_parallelism", 1),
                          ("signal_delay", 0), ("requeues", 0), ("max_retries", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"--slurm-{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        for option in self.option:
            key, equals, _ = option.partition("=")
            if not equals or not key.strip():
                raise ValueError(f"--slurm-option {option!r}: expected KEY=VALUE (an sbatch option without its "
                                 f"dashes, e.g. exclude=node7)")

    def sbatch(self, suite: str) -> dict:
        """submitit's ``SlurmExecutor`` parameters."""
        chosen = {"partition": self.partition, "mem": self.mem, "account": self.account, "qos": self.qos,
                  "constraint": self.constraint}
        return {"job_name": f"bench-{suite}", "time": self.time, "nodes": 1, "ntasks_per_node": 1,
                "cpus_per_task": self.cpus_per_cell, "array_parallelism": self.array_parallelism,
                "signal_delay_s": self.signal_delay, **({"gpus_per_node": self.gpus_per_cell} if self.gpus_per_cell
                                                        else {}),
                **{k: v for k, v in chosen.items() if v is not None},
                "additional_parameters": dict(o.split("=", 1) for o in self.option)}


def job_id_here() -> str:
    """This process's Slurm job (``<array>_<task>`` in an array), or "?" outside one."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "?")


class CellJob:
    """What a job runs: one attempt at a cell. submitit pickles it; ``checkpoint`` makes it requeueable."""

    def __init__(self, attempt: Attempt, threads: int):
        self.attempt, self.threads = attempt, threads

    def __call__(self) -> Done:
        torch.set_num_threads(self.threads)
        curves, keep = collected()
        where = {t.EXECUTOR_NODE: socket.gethostname(), t.EXECUTOR_CPUS: str(self.threads),
                 t.EXECUTOR_ATTEMPT: str(self.attempt.number + 1), t.EXECUTOR_STARTED: f"{time.time():.3f}",
                 t.SLURM_JOB: job_id_here(), t.SLURM_RESTARTS: os.environ.get("SLURM_RESTART_COUNT", "0")}
        requeue = signal.getsignal(PREEMPTION_SIGNAL)  # submitit's: checkpoint() below, `scontrol requeue`, exit
        try:
            with checkpoint.stop_on(PREEMPTION_SIGNAL):  # saved at the next meta-iteration boundary, then stopped
                done = run_attempt(self.attempt, keep, keep, curves, tags=where)
        except checkpoint.Stopped:
            if callable(requeue):
                requeue(PREEMPTION_SIGNAL, None)  # exits the job, requeued (or raises: too many requeues)
            raise
        if done.result is not None:
            done.tags[t.EXECUTOR_ENDED] = f"{time.time():.3f}"
        return done

    def checkpoint(self, *args, **kwargs):
        """submitit's requeue hook: the same attempt again; the cell finds its training state on disk."""
        import submitit  # noqa: PLC0415

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class SlurmExecutor:
    """Runs claimed cells as Slurm jobs (see the module's docstring)."""

    kind = "slurm"

    def __init__(self, options: SlurmOptions = SlurmOptions(), root: Path | None = None, echo=print):
        self.options, self.echo = options, echo
        self.max_retries = options.max_retries
        # job ids restart with a new cluster (or a reset controller): each invocation logs into a folder of its own,
        # so no job reads the files an earlier job of the same id left
        self.root = (root or RESULTS / "slurm") / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.queued: deque[Attempt] = deque()
        self.in_flight: dict = {}  # submitit job -> its attempt
        self.executors: dict[str, object] = {}  # suite -> its submitit executor (one log folder per suite)
        self.submitted: dict[str, dict[str, str]] = {}  # run id -> its job's tags, not yet on the run

    def __enter__(self) -> "SlurmExecutor":
        import submitit  # noqa: F401, PLC0415  (only a Slurm run imports it)

        return self

    def __exit__(self, *exc) -> None:
        self.queued.clear()

    def environment_key(self, cell: Cell) -> str:
        # the node is chosen by Slurm after the claim: the key holds what the driver decides
        return (f"slurm partition={self.options.partition or 'default'} cpus={self.options.cpus_per_cell} "
                f"gpus={self.options.gpus_per_cell} device={cell.device}")

    def unavailable(self, cell: Cell) -> str:
        if cell.device.startswith("cuda") and not self.options.gpus_per_cell:
            return "a cuda cell needs a GPU per job: --slurm-gpus-per-cell 1"
        return ""

    def capacity(self) -> int:
        return 1 << 30  # every claimed cell goes to Slurm at once: its scheduler decides what runs

    def submit(self, attempt: Attempt, sink: Sink) -> None:
        self.queued.append(attempt)

    def _executor(self, suite: str):
        import submitit  # noqa: PLC0415

        if suite not in self.executors:
            executor = submitit.SlurmExecutor(folder=self.root.parent / suite / self.root.name / "%j",
                                              max_num_timeout=self.options.requeues)
            executor.update_parameters(**self.options.sbatch(suite))
            self.executors[suite] = executor
        return self.executors[suite]

    def _submit_queued(self) -> None:
        """Everything claimed since the last pass, as one job array per suite."""
        by_suite: dict[str, list[Attempt]] = {}
        while self.queued:
            attempt = self.queued.popleft()
            by_suite.setdefault(attempt.cell.suite, []).append(attempt)
        for suite, attempts in by_suite.items():
            executor = self._executor(suite)
            with executor.batch():
                jobs = [executor.submit(CellJob(a, self.options.cpus_per_cell)) for a in attempts]
            for job, attempt in zip(jobs, attempts):
                self.in_flight[job] = attempt
                self.submitted[attempt.run_id] = {t.EXECUTOR: self.kind, t.SLURM_JOB: str(job.job_id),
                                                  t.SLURM_FOLDER: str(executor.folder)}
                self.echo(f"submitted {attempt.cell.title} as Slurm job {job.job_id} (log: {job.paths.stdout})")

    def collect(self, timeout: float) -> list[Done]:
        self._submit_queued()
        deadline = time.monotonic() + timeout
        while self.in_flight:
            ended = [job for job in self.in_flight if job.done()]
            if ended:
                return [self._ended(job, self.in_flight.pop(job)) for job in ended]
            if time.monotonic() >= deadline:
                break
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        return []

    def _ended(self, job, attempt: Attempt) -> Done:
        where = {t.SLURM_JOB: str(job.job_id)}
        try:
            done = job.result()
            if done.attempt.run_id != attempt.run_id:  # never another job's result under this cell's run
                return Done(attempt, error=f"Slurm job {job.job_id} returned the result of run "
                                           f"{done.attempt.run_id}, not {attempt.run_id}", tags=where)
            return done
        except Exception as error:  # noqa: BLE001  (submitit's UncompletedJobError, FailedJobError: said, not raised)
            state = job.state
            reason = f"Slurm job {job.job_id} ended {state}: {str(error).splitlines()[0] if str(error) else ''}"
            if state.split()[0] in LOST_STATES:
                return Done(attempt, lost=reason, tags=where)
            return Done(attempt, error=reason, trace=str(error)[-4000:], tags=where)

    def cancel(self) -> None:
        for job in list(self.in_flight):
            job.cancel(check=False)
        self.in_flight.clear()
        self.queued.clear()

    def running_tags(self) -> dict[str, dict[str, str]]:
        """Each new job's id and folder on its run at once: a later invocation adopts the job if this one is gone."""
        tags, self.submitted = self.submitted, {}
        return tags

    def _job(self, run):
        import submitit  # noqa: PLC0415

        tags = run.data.tags
        if t.SLURM_JOB not in tags or t.SLURM_FOLDER not in tags:
            return None
        return submitit.SlurmJob(folder=tags[t.SLURM_FOLDER], job_id=tags[t.SLURM_JOB])

    def adoptable(self, run) -> bool:
        """A gone submitter's run whose job is queued, running or done with a result: its cell is not lost."""
        job = self._job(run)
        return job is not None and job.watcher.get_state(job.job_id, mode="force").split()[0] in ADOPTABLE_STATES

    def adopt(self, attempt: Attempt, run) -> bool:
        job = self._job(run)
        if job is None:
            return False
        self.in_flight[job] = attempt
        self.echo(f"adopted Slurm job {job.job_id} of {attempt.cell.title} (log: {job.paths.stdout})")
        return True

    def closing_tags(self) -> dict[str, dict[str, str]]:
        return {}


class WorkerJob:
    """What a tune worker's job runs: its command, in the job's own environment (its SLURM_* variables) plus the
    worker's additions, its output straight to the job's log."""

    def __init__(self, worker: WorkerCommand):
        self.worker = worker

    def __call__(self) -> None:
        subprocess.run(self.worker.command, cwd=self.worker.cwd, env={**os.environ, **self.worker.env}, check=True)


def _slurm_workers(options: SlurmOptions, cuda: bool):
    """`bench tune`'s workers as one job array; a worker whose job ends otherwise than COMPLETED is a failure, with
    Slurm's state. Workers are not requeued: a killed worker's trial is failed by its heartbeat and retried."""
    _check(options)
    if cuda and not options.gpus_per_cell:
        raise ValueError("--executor slurm: workers of a cuda suite need a GPU per job: --slurm-gpus-per-cell 1")

    def launch(workers: list[WorkerCommand], echo=print) -> list[str]:
        import submitit  # noqa: PLC0415

        if not workers:
            return []
        group = workers[0].group
        folder = RESULTS / "slurm" / group / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}" / "%j"
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
        executor.update_parameters(**options.sbatch(group))
        with executor.batch():
            jobs = [executor.submit(WorkerJob(worker)) for worker in workers]
        for job, worker in zip(jobs, workers):
            echo(f"submitted tune {worker.name} as Slurm job {job.job_id} (log: {job.paths.stdout})")
        failures = []
        try:
            for job, worker in zip(jobs, workers):
                try:
                    job.result()
                except Exception as error:  # noqa: BLE001  (submitit's job errors: said, not raised)
                    failures.append(f"{worker.name} (Slurm job {job.job_id}) ended {job.state}: "
                                    f"{str(error).splitlines()[0] if str(error) else ''}")
        except BaseException:  # interrupted: no worker left running without its driver
            for job in jobs:
                job.cancel(check=False)
            raise
        return failures

    return launch


def _check(options: SlurmOptions) -> None:
    import shutil  # noqa: PLC0415

    import submitit  # noqa: F401, PLC0415  (missing: refused here, with the extra to install)

    if shutil.which("sbatch") is None:
        raise ValueError("--executor slurm: no Slurm here (sbatch is not on PATH): run on a login node of the cluster")


def _build(options: SlurmOptions, suites: list, progress: bool) -> SlurmExecutor:
    _check(options)
    return SlurmExecutor(options)


register(ExecutorEntry("slurm", "cells as a Slurm job array through submitit", SlurmOptions, _build,
                       extra="submitit", workers=_slurm_workers))
