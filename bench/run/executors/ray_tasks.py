"""`bench run --executor ray`: a suite's cells as Ray tasks, over every GPU of a machine or over a cluster.

Ray schedules; the cell-execution loop (``bench.run.execution``) claims, records and retries exactly as in process.
This executor only runs claimed cells as Ray tasks and reports how each ended:
- one writer: workers return a cell's results (metrics, curves, per-episode scores, meta-parameters, where they ran)
  and the driver logs them, so the embedded SQLite store works as well as a shared ``mlflow server``;
- a worker or node that dies mid-cell is reported lost (the loop retries it up to ``max_retries`` times);
- a worker reports its code identity and its node's environment (host, CPU, GPU, threads), recorded as the run's.

Ray itself is imported only when the executor starts (and in its workers): the in-process path never imports it.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from bench.core import tags as t
from bench.core.hardware import device_available
from bench.run.execution import Attempt, Done, Sink
from bench.run.executors import DiesWithItsOwner, ExecutorEntry, flag, register
from bench.run.executors.attempt import collected, run_attempt
from bench.spec.suite import Cell


@dataclass(frozen=True)
class RayOptions:
    address: str | None = field(default=None, metadata=flag(
        "--address", "a Ray cluster to join ('auto', 'ray://HOST:PORT'); none: Ray started on this machine, every "
                     "CPU and GPU it has"))
    max_parallel: int = field(default=0, metadata=flag(
        "--max-parallel", "cells in flight at most (0: as many as the resources allow)"))
    cpus_per_cell: int = field(default=1, metadata=flag(
        "--cpus-per-cell", "CPU threads a cell reserves (and torch uses) on its node"))
    max_retries: int = field(default=2, metadata=flag(
        "--max-retries", "new attempts of a cell whose worker or node died"))

    def __post_init__(self) -> None:
        if self.max_parallel < 0 or self.cpus_per_cell < 1 or self.max_retries < 0:
            raise ValueError(f"--max-parallel must be >= 0, --cpus-per-cell >= 1 and --max-retries >= 0, got "
                             f"{self.max_parallel}, {self.cpus_per_cell}, {self.max_retries}")


def run_cell_remotely(attempt: Attempt, threads: int) -> Done:
    """The body of a cell's Ray task (named so that `ps` shows ``ray::run_cell_remotely`` while it runs)."""
    import ray  # noqa: PLC0415  (a worker's: Ray is imported where it runs)

    torch.set_num_threads(threads)
    curves, keep = collected()
    node, started = ray.get_runtime_context().get_node_id(), time.time()
    where = {t.EXECUTOR_NODE: node, t.EXECUTOR_CPUS: str(threads), t.EXECUTOR_ATTEMPT: str(attempt.number + 1),
             t.EXECUTOR_STARTED: f"{started:.3f}"}
    done = run_attempt(attempt, keep, keep, curves, tags=where)
    if done.result is not None:
        done.tags[t.EXECUTOR_ENDED] = f"{time.time():.3f}"
    return done


class RayExecutor(DiesWithItsOwner):  # a driver's Ray tasks end with its job
    """Runs claimed cells as Ray tasks (see the module's docstring). A context manager: it starts or joins Ray on
    entry (a cluster that cannot be joined fails there, before anything is written) and leaves what it started."""

    kind = "ray"

    def __init__(self, options: RayOptions = RayOptions()):
        self.options = options
        self.max_retries = options.max_retries
        self.queued: deque[Attempt] = deque()  # claimed, waiting for a slot (max_parallel)
        self.in_flight: dict = {}  # Ray's object ref -> its attempt
        self.intervals: list[tuple[str, str, float, float]] = []  # (run id, node, start, end) of finished cells
        self.owned = False

    @staticmethod
    def check(cells: list[Cell]) -> None:
        """Refuse what Ray cannot place, before anything is written."""
        for cell in cells:
            if cell.device.startswith("cuda:"):
                raise ValueError(f"device {cell.device!r}: on Ray a cuda cell is given a whole GPU, which it sees as "
                                 f"'cuda'; use devices: [cuda]")

    def __enter__(self) -> "RayExecutor":
        import ray  # noqa: PLC0415  (only a Ray run imports Ray)

        if not ray.is_initialized():
            try:
                ray.init(address=self.options.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except ConnectionError as error:
                raise ConnectionError(
                    f"could not join the Ray cluster at {self.options.address}: {str(error).splitlines()[0]}. If its "
                    f"head uses token authentication (Ray >= 2.59 turns it on for a head started where "
                    f"~/.ray/auth_token exists), run with RAY_AUTH_MODE=token and the head's token in "
                    f"~/.ray/auth_token; or start the head with RAY_AUTH_MODE=disabled") from error
            self.owned = True
        self.task = ray.remote(max_retries=0)(run_cell_remotely)  # retries are the loop's: each attempt is a run
        self.gpus = ray.cluster_resources().get("GPU", 0)
        return self

    def __exit__(self, *exc) -> None:
        import ray  # noqa: PLC0415

        if self.owned and ray.is_initialized():
            ray.shutdown()
        self.owned = False

    def environment_key(self, cell: Cell) -> str:
        # the node is chosen by Ray after the claim: the key holds what the driver decides (threads, device kind)
        return f"ray threads={self.options.cpus_per_cell} device={cell.device}"

    def unavailable(self, cell: Cell) -> str:
        if cell.device == "cuda":
            return "" if self.gpus else "no GPU in the Ray cluster"
        if cell.device == "cpu":
            return ""
        available, why = device_available(cell.device)
        return "" if available else why

    def capacity(self) -> int:
        return 1 << 30  # every cell is claimed up front and queued here: Ray starts the next the moment one ends

    def submit(self, attempt: Attempt, sink: Sink) -> None:
        self.queued.append(attempt)

    def _start_queued(self) -> None:
        limit = self.options.max_parallel or math.inf
        while self.queued and len(self.in_flight) < limit:
            attempt = self.queued.popleft()
            resources = {"num_cpus": self.options.cpus_per_cell, "num_gpus": 1 if attempt.cell.device == "cuda" else 0}
            self.in_flight[self.task.options(**resources).remote(attempt, self.options.cpus_per_cell)] = attempt

    def collect(self, timeout: float) -> list[Done]:
        import ray  # noqa: PLC0415

        self._start_queued()
        if not self.in_flight:
            return []
        ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=timeout)
        done = []
        for ref in ready:
            attempt = self.in_flight.pop(ref)
            try:
                remote = ray.get(ref)
            except ray.exceptions.RayError as error:  # the worker or its node died: this attempt is lost
                lost = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                done.append(Done(attempt, lost=lost))
                continue
            if remote.result is not None:
                self.intervals.append((attempt.run_id, remote.tags[t.EXECUTOR_NODE],
                                       float(remote.tags[t.EXECUTOR_STARTED]), float(remote.tags[t.EXECUTOR_ENDED])))
            done.append(remote)
        self._start_queued()  # the freed slots work while the loop records what ended
        return done

    def cancel(self) -> None:
        import ray  # noqa: PLC0415

        for ref in list(self.in_flight):
            ray.cancel(ref, force=True)
        self.in_flight.clear()
        self.queued.clear()

    def closing_tags(self) -> dict[str, dict[str, str]]:
        """How many cells ran on a cell's node at once while it was timed (at most), itself included: the
        neighbours its timings had (README: the executor's trade-off)."""
        tags = {}
        for run_id, node, start, end in self.intervals:
            # a cell ending at t sorts before one starting at t: touching intervals never ran together
            edges = sorted((at, kind) for _, n, s, e in self.intervals if n == node and s < end and e > start
                           for at, kind in ((max(s, start), 1), (min(e, end), -1)))
            most = running = 0
            for _, kind in edges:
                running += kind
                most = max(most, running)
            tags[run_id] = {t.EXECUTOR_CONCURRENT_CELLS: str(most)}
        return tags


def _build(options: RayOptions, suites: list, progress: bool) -> RayExecutor:
    import ray  # noqa: F401, PLC0415  (missing: refused here, with the extra to install)

    executor = RayExecutor(options)
    for suite in suites:
        executor.check(list(suite.cells))
    return executor


register(ExecutorEntry("ray", "cells as Ray tasks, over a machine's GPUs or a cluster", RayOptions, _build,
                       extra="Ray"))
