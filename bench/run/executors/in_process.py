"""`bench run` (the default executor): claimed cells one after another in this process, on its devices."""
from __future__ import annotations

import os
import signal
import subprocess
from collections import deque
from dataclasses import dataclass

from bench.core import tags as t
from bench.core.hardware import device_available
from bench.run.execution import Attempt, Done, Sink
from bench.run.executors import DiesWithItsOwner, ExecutorEntry, WorkerCommand, register
from bench.run.executors.attempt import run_attempt
from bench.spec.suite import Cell
from bench.store import tracking


@dataclass(frozen=True)
class InProcessOptions:
    """Nothing to choose: the cells run here, one at a time."""


class InProcess(DiesWithItsOwner):
    """Claimed cells one after another in this process, on its devices; no Ray, no Slurm."""

    kind = "in-process"
    max_retries = 0  # the worker is this process: it is never lost without the loop

    def __init__(self, progress: bool = True):
        self.progress = progress
        self.queue: deque[tuple[Attempt, Sink]] = deque()

    def __enter__(self) -> "InProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.queue.clear()

    def environment_key(self, cell: Cell) -> str:
        """What the cell's timings depend on, known before it runs: part of what a finished run is reused under."""
        tags = tracking.environment_tags(cell.device)
        return f"{self.kind} threads={tags[t.THREADS]} cpu={tags[t.CPU_MODEL]} device={tags[t.DEVICE_NAME]}"

    def unavailable(self, cell: Cell) -> str:
        available, why = device_available(cell.device)
        return "" if available else why

    def capacity(self) -> int:
        return 1 - len(self.queue)

    def submit(self, attempt: Attempt, sink: Sink) -> None:
        self.queue.append((attempt, sink))

    def collect(self, timeout: float) -> list[Done]:
        if not self.queue:
            return []
        attempt, sink = self.queue.popleft()
        # curves reach MLflow through the sink as the cell runs; what is pending at the end travels with the result
        return [run_attempt(attempt, sink.on_train, sink.on_validation, sink.pending, self.progress, sink.check)]

    def cancel(self) -> None:
        self.queue.clear()


def _exit_failure(worker: WorkerCommand, process: subprocess.Popen) -> str | None:
    """How a worker failed, or None: a signal death is a negative return code."""
    code = process.returncode
    if code == 0:
        return None
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    return f"{worker.name} (pid {process.pid}) {how}"


def _local_workers(options: InProcessOptions, cuda: bool):
    """Worker processes on this machine, started together and waited for; on CUDA, one GPU each (unless
    CUDA_VISIBLE_DEVICES already says which)."""

    def launch(workers: list[WorkerCommand], echo=print) -> list[str]:
        processes = []
        for i, worker in enumerate(workers):
            env = {**os.environ, **worker.env}
            if cuda and "CUDA_VISIBLE_DEVICES" not in env:
                env["CUDA_VISIBLE_DEVICES"] = str(i)
            processes.append(subprocess.Popen(worker.command, cwd=worker.cwd, env=env))
        for process in processes:
            process.wait()
        return [failure for w, p in zip(workers, processes) if (failure := _exit_failure(w, p)) is not None]

    return launch


register(ExecutorEntry("in-process", "cells one after another here (default)", InProcessOptions,
                       lambda options, suites, progress: InProcess(progress), workers=_local_workers))
