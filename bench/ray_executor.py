"""`bench run --executor ray`: a suite's cells as Ray tasks, over every GPU of a machine or over a cluster.

Ray schedules; this module keeps the harness's guarantees around it:
- one writer: workers return a cell's results (metrics, curves, per-episode scores, meta-parameters) and the driver
  logs them, so the embedded SQLite store works as well as a shared ``mlflow server``;
- exactly once: cells are claimed (and finished ones reused) exactly as in process; the driver owns the runs of the
  cells in flight and beats their heartbeat, so a dead driver's runs are closed by the next invocation;
- faults: a worker or node that dies mid-cell ends that attempt's run FAILED with outcome ``interrupted`` and the
  reason, and the cell is claimed again, up to ``max_retries`` times; Ctrl-C cancels the cells in flight and ends
  their runs KILLED;
- results tied to code: a worker whose code identity differs from the driver's (a node on another commit) fails
  the cell instead of logging numbers under the wrong identity.

Only ``bench run --executor ray`` imports this module: the in-process path never imports Ray.
"""
from __future__ import annotations

import math
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

import ray
import torch
from tqdm import tqdm

from bench import ownership, tracking
from bench.measure import device_available
from bench.runner import (CLAIM_POLL_S, Outcome, SuiteRun, _Interrupts, cell_code, claim, fail_run, finish_run,
                          new_run, skip_run)
from bench.suite import Cell
from bench.training import CellResult, run_cell
from bench.tracking import FAILED, KILLED


@dataclass(frozen=True)
class RayOptions:
    """address: None starts Ray on this machine (every CPU and GPU it has); "auto" or "ray://HOST:PORT" joins a
    cluster. max_parallel: cells in flight at most (0: as many as the resources allow). cpus_per_cell: CPU threads
    a cell reserves (and torch uses) on its node. max_retries: new attempts after a worker or node dies."""

    address: str | None = None
    max_parallel: int = 0
    cpus_per_cell: int = 1
    max_retries: int = 2

    def __post_init__(self) -> None:
        if self.max_parallel < 0 or self.cpus_per_cell < 1 or self.max_retries < 0:
            raise ValueError(f"--max-parallel must be >= 0, --cpus-per-cell >= 1 and --max-retries >= 0, got "
                             f"{self.max_parallel}, {self.cpus_per_cell}, {self.max_retries}")


@dataclass
class RemoteResult:
    """What a worker sends back: the cell's result or its error, with where and when it ran."""

    result: CellResult | None
    curves: list[tuple[str, float, int]] = field(default_factory=list)
    error: str = ""
    trace: str = ""
    code: str = ""  # the worker's code identity for the cell
    node: str = ""
    started: float = 0.0
    ended: float = 0.0


def run_cell_remotely(cell: Cell, threads: int) -> RemoteResult:
    """The body of a cell's Ray task (named so that `ps` shows ``ray::run_cell_remotely`` while it runs)."""
    torch.set_num_threads(threads)
    curves: list[tuple[str, float, int]] = []

    def keep(iteration: int, values: dict[str, float]) -> None:
        curves.extend((name, value, iteration) for name, value in values.items() if math.isfinite(value))

    node, started = ray.get_runtime_context().get_node_id(), time.time()
    try:
        result = run_cell(cell, keep, keep)
    except Exception as error:  # the cell's own failure (not the worker's): FAILED, no retry
        return RemoteResult(None, error=f"{type(error).__name__}: {error}", trace=traceback.format_exc(),
                            code=cell_code(cell), node=node, started=started, ended=time.time())
    return RemoteResult(result, curves, code=cell_code(cell), node=node, started=started, ended=time.time())


@dataclass
class _Attempt:
    cell: Cell
    run_id: str
    number: int  # 0 for the first attempt


class RayExecutor:
    """Runs a suite's cells as Ray tasks (see the module's docstring); used by ``run_suite(executor=...)``."""

    def __init__(self, options: RayOptions = RayOptions()):
        self.options = options

    @staticmethod
    def check(cells: list[Cell]) -> None:
        """Refuse what Ray cannot place, before anything is written."""
        for cell in cells:
            if cell.device.startswith("cuda:"):
                raise ValueError(f"device {cell.device!r}: on Ray a cuda cell is given a whole GPU, which it sees as "
                                 f"'cuda'; use devices: [cuda]")

    def start(self) -> bool:
        """Start or join Ray unless this process already has it; True when this call did (and so owns it)."""
        if ray.is_initialized():
            return False
        try:
            ray.init(address=self.options.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        except ConnectionError as error:
            raise ConnectionError(
                f"could not join the Ray cluster at {self.options.address}: {str(error).splitlines()[0]}. If its "
                f"head uses token authentication (Ray >= 2.59 turns it on for a head started where ~/.ray/auth_token "
                f"exists), run with RAY_AUTH_MODE=token and the head's token in ~/.ray/auth_token; or start the "
                f"head with RAY_AUTH_MODE=disabled") from error
        return True

    @staticmethod
    def stop() -> None:
        if ray.is_initialized():
            ray.shutdown()

    def run_cells(self, run: SuiteRun, cells: list[Cell], outcomes: list[Outcome]) -> None:
        self.check(cells)
        owned = self.start()
        try:
            _Drive(run, self.options, outcomes).through(cells)
        finally:
            if owned:
                self.stop()


class _Drive:
    """The driver's loop for one suite: claim, submit, collect, retry."""

    def __init__(self, run: SuiteRun, options: RayOptions, outcomes: list[Outcome]):
        self.run, self.options, self.outcomes = run, options, outcomes
        self.bar = tqdm(disable=True)  # replaced by the suite's bar in through()
        self.queued: deque[_Attempt] = deque()  # claimed, not yet submitted
        self.in_flight: dict[ray.ObjectRef, _Attempt] = {}
        self.held: list[tuple[Cell, int]] = []  # held by another invocation: (cell, attempts so far)
        self.intervals: list[tuple[str, str, float, float]] = []  # (run id, node, start, end) of finished cells

    def through(self, cells: list[Cell]) -> None:
        self.task = ray.remote(max_retries=0)(run_cell_remotely)  # retries are ours: each attempt is its own run
        self.gpus = ray.cluster_resources().get("GPU", 0)
        self.bar = tqdm(total=len(cells), desc=f"{self.run.suite}: cells", unit="cell", disable=not self.run.progress)
        try:
            for cell in cells:
                self._claim(cell, 0)
            with ownership.Heartbeat(self._beat):
                while self.queued or self.in_flight or self.held:
                    self._submit()
                    self._collect()
                    self._reclaim_held()
                    _Interrupts.check()
            self._tag_sharing()
        except BaseException:
            self._cancel_all()
            raise
        finally:
            self.bar.close()

    # -- claiming and submitting -------------------------------------------------------------------------------

    def _claim(self, cell: Cell, number: int) -> None:
        run = self.run
        if run.force:  # a retry under --force too: an older finished run must not stand in for it
            self.queued.append(_Attempt(cell, new_run(run.client, run.experiment, run.parent, cell), number))
            return
        state = claim(run.client, run.experiment, run.parent, cell, run.code(cell))
        if state.run_id:
            self.queued.append(_Attempt(cell, state.run_id, number))
        elif state.reused is not None:
            self._done(state.reused)
        else:
            self.held.append((cell, number))

    def _submit(self) -> None:
        limit = self.options.max_parallel or math.inf
        while self.queued and len(self.in_flight) < limit:
            attempt = self.queued.popleft()
            cell, client = attempt.cell, self.run.client
            tracking.log_params(client, attempt.run_id, cell.resolved())
            if cell.device == "cuda" and not self.gpus:
                self._done(skip_run(client, attempt.run_id, cell, "no GPU in the Ray cluster"))
                continue
            if cell.device not in ("cpu", "cuda"):
                available, why = device_available(cell.device)
                if not available:
                    self._done(skip_run(client, attempt.run_id, cell, why))
                    continue
            resources = {"num_cpus": self.options.cpus_per_cell, "num_gpus": 1 if cell.device == "cuda" else 0}
            ref = self.task.options(**resources).remote(cell, self.options.cpus_per_cell)
            self.in_flight[ref] = attempt
        self._show()

    def _reclaim_held(self) -> None:
        """Cells another invocation was running: take them over if it ended without finishing them."""
        held, self.held = self.held, []
        for cell, number in held:
            self._claim(cell, number)
        if self.held and not self.in_flight and not self.queued:
            time.sleep(CLAIM_POLL_S)

    # -- collecting --------------------------------------------------------------------------------------------

    def _collect(self) -> None:
        if not self.in_flight:
            return
        ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=CLAIM_POLL_S)
        for ref in ready:
            attempt = self.in_flight.pop(ref)
            try:
                remote = ray.get(ref)
            except ray.exceptions.RayError as error:  # the worker or its node died: this attempt is lost
                self._lost(attempt, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
                continue
            self._record(attempt, remote)

    def _record(self, attempt: _Attempt, remote: RemoteResult) -> None:
        client, cell, run_id = self.run.client, attempt.cell, attempt.run_id
        expected = cell_code(cell)
        if remote.code != expected:
            self._done(fail_run(client, run_id, cell, f"the worker on node {remote.node} runs other code "
                                                      f"({remote.code}, this driver {expected}): deploy one commit"))
            return
        if remote.result is None:
            self._done(fail_run(client, run_id, cell, remote.error, remote.trace))
            return
        tracking.log_metrics(client, run_id, remote.curves)
        self.intervals.append((run_id, remote.node, remote.started, remote.ended))
        tags = {"executor": "ray", "executor.node": remote.node, "executor.cpus": str(self.options.cpus_per_cell),
                "executor.attempt": str(attempt.number + 1)}
        self._done(finish_run(client, run_id, cell, remote.result, tags))

    def _lost(self, attempt: _Attempt, reason: str) -> None:
        client, cell = self.run.client, attempt.cell
        retry = attempt.number < self.options.max_retries
        if not retry:
            self._done(fail_run(client, attempt.run_id, cell,
                                f"the worker died in each of {attempt.number + 1} attempt(s); last: {reason}"))
            return
        tracking.end_run(client, attempt.run_id, "interrupted", FAILED,
                         {"error": f"attempt {attempt.number + 1}: the worker died ({reason}); retried"})
        self.run.echo(f"{cell.title}: worker lost ({reason}); attempt {attempt.number + 2} of "
                      f"{self.options.max_retries + 1}")
        self._claim(cell, attempt.number + 1)

    def _done(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.bar.update(1)
        if self.run.progress or outcome.outcome != "reused":
            detail = f" ({outcome.detail})" if outcome.detail else ""
            self.bar.write(f"{outcome.outcome:8s} {outcome.cell.title}{detail}")
        self._show()

    def _show(self) -> None:
        failed = sum(o.outcome == "failed" for o in self.outcomes)
        self.bar.set_postfix(running=len(self.in_flight), queued=len(self.queued), failed=failed, refresh=False)

    def _beat(self, now: float) -> None:
        for attempt in list(self.in_flight.values()) + list(self.queued):
            tracking.heartbeat(self.run.client, attempt.run_id, now)

    def _cancel_all(self) -> None:
        """Ctrl-C or a driver error: cancel what is in flight and end every run this driver holds as KILLED."""
        for ref, attempt in list(self.in_flight.items()):
            ray.cancel(ref, force=True)
            tracking.end_run(self.run.client, attempt.run_id, "interrupted", KILLED)
        for attempt in self.queued:
            tracking.end_run(self.run.client, attempt.run_id, "interrupted", KILLED)
        self.in_flight.clear()
        self.queued.clear()

    def _tag_sharing(self) -> None:
        """How many cells ran on a cell's node at once while it was timed (at most), itself included: the
        neighbours its timings had (README: the executor's trade-off)."""
        for run_id, node, start, end in self.intervals:
            # a cell ending at t sorts before one starting at t: touching intervals never ran together
            edges = sorted((t, kind) for _, n, s, e in self.intervals if n == node and s < end and e > start
                           for t, kind in ((max(s, start), 1), (min(e, end), -1)))
            most = running = 0
            for _, kind in edges:
                running += kind
                most = max(most, running)
            self.run.client.set_tag(run_id, "executor.concurrent_cells", str(most))
