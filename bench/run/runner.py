"""`bench run`: every cell of a suite through the same measured path, each result in MLflow as soon as it exists.

The suite run (the parent), then the one cell-execution loop (``bench.run.execution``) over an executor: by default
``InProcess``, the cells one after another in this process; ``bench.run.ray_executor.RayExecutor`` spreads them.
"""
from __future__ import annotations

import json
import time
import traceback
from collections import deque
from typing import Callable

import torch

from bench.core import tags as t
from bench.core import interrupts
from bench.core.config import ConfigError
from bench.core.hardware import device_available
from bench.run.execution import Attempt, CellLoop, Done, Outcome, Sink, SuiteRun, cell_code
from bench.run.training import run_cell
from bench.spec.suite import Cell, Suite
from bench.store import claims, tracking
from bench.store.tracking import FAILED, FINISHED, KILLED
from meta_bench.datasets import load_dataset


class InProcess:
    """The default executor: claimed cells one after another in this process, on its devices; no Ray."""

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
        cell = attempt.cell
        environment = tracking.environment_tags(cell.device)
        try:
            result = run_cell(cell, sink.on_train, sink.on_validation, self.progress, between_iterations=sink.check,
                              trained=attempt.trained)
        except Exception as error:  # the cell's own failure: a FAILED run with the reason, the suite goes on
            if isinstance(error, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            return [Done(attempt, error=f"{type(error).__name__}: {error}", trace=traceback.format_exc(),
                         code=cell_code(cell), environment=environment)]
        return [Done(attempt, result, sink.pending, code=cell_code(cell), environment=environment)]

    def cancel(self) -> None:
        self.queue.clear()

    def closing_tags(self) -> dict[str, dict[str, str]]:
        return {}


def executor_for(kind: str, address: str | None, max_parallel: int, cpus_per_cell: int, max_retries: int,
                 suites: list[Suite], progress: bool = True):
    """The executor ``bench run --executor`` names, not yet started (the caller enters it); what it cannot run is
    refused with ConfigError before anything is written. Only here is Ray imported."""
    if kind != "ray":
        if address is not None:
            raise ConfigError("--address is for --executor ray")
        return InProcess(progress)
    try:
        from bench.run.ray_executor import RayExecutor, RayOptions  # noqa: PLC0415
    except ImportError as error:
        raise ConfigError(f"--executor ray needs Ray: pip install -e '.[distributed]' ({error})") from None
    try:
        executor = RayExecutor(RayOptions(address, max_parallel, cpus_per_cell, max_retries))
        for suite in suites:
            executor.check(list(suite.cells))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return executor


def run_suite(suite: Suite, suite_text: str, uri: str, force: bool = False, reuse_other_code: bool = False,
              progress: bool = True, echo: Callable[[str], None] = print, executor=None,
              max_wait_s: float | None = None) -> list[Outcome]:
    """``force``: run every cell again; ``reuse_other_code``: reuse finished cells whatever code made them;
    ``executor``: what runs the cells, already started (default: ``InProcess``); ``max_wait_s``: how long a cell
    another invocation runs is waited for before it is left to a later run."""
    client = tracking.client_for(uri)
    experiment = tracking.experiment_id(client, suite.suite)
    kept = claims.keep(client, suite.suite)
    if kept:
        echo(f"kept {kept} claim record(s) of an older version where `mlflow gc` cannot erase them")
    closed = tracking.close_orphaned(client, experiment)
    if closed:
        echo(f"marked {closed} run(s) left RUNNING by an ended invocation as FAILED (outcome=interrupted)")
    cells = list(suite.cells)
    parent = tracking.start_run(client, experiment, f"{suite.suite} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                {t.ROLE: t.ROLE_SUITE, **tracking.environment_tags()})
    run = SuiteRun(suite.suite, client, experiment, parent, force, reuse_other_code, progress, echo,
                   **({} if max_wait_s is None else {"max_wait_s": max_wait_s}))
    try:
        with interrupts.remembered():
            statistics = load_dataset(suite.dataset.name, suite.dataset.options).statistics()
            with interrupts.held():
                client.log_text(parent, suite_text, "suite.yaml")
                client.log_text(parent, json.dumps(statistics, indent=2), "dataset.json")
            outcomes = CellLoop(run, executor or InProcess(progress)).through(cells)
    except KeyboardInterrupt:
        tracking.end_run(client, parent, t.OUTCOME_INTERRUPTED, KILLED)
        raise
    except Exception as error:  # a store or code-identity error stops the suite: its run ends FAILED, if it can
        try:
            tracking.end_run(client, parent, t.OUTCOME_FAILED, FAILED, {t.ERROR: f"{type(error).__name__}: {error}"})
        except Exception as failure:  # noqa: BLE001  (the store may be what failed: the original error is raised)
            echo(f"could not end the suite run {parent}: {type(failure).__name__}: {failure}")
        raise
    failures = [o for o in outcomes if o.outcome == t.OUTCOME_FAILED]
    tracking.end_run(client, parent, t.OUTCOME_FAILED if failures else t.OUTCOME_FINISHED, FINISHED,
                     {t.CELLS: str(len(cells)), t.FAILURES: str(len(failures))})
    order = {cell.config_hash: i for i, cell in enumerate(cells)}
    return sorted(outcomes, key=lambda o: order[o.cell.config_hash])
