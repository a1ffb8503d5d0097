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

from bench.store import tracking
from bench.run.execution import (Attempt, CellLoop, Done, Outcome, Sink, SuiteRun, cell_code,
                             remembered_interrupts)
from bench.core.hardware import device_available
from bench.spec.suite import Cell, Suite, expand
from bench.store.tracking import FAILED, FINISHED, KILLED
from bench.run.training import run_cell
from datasets import load_dataset


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
        return f"{self.kind} threads={tags['threads']} cpu={tags['cpu_model']} device={tags['device_name']}"

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
            result = run_cell(cell, sink.on_train, sink.on_validation, self.progress)
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


def run_suite(suite: Suite, suite_text: str, uri: str, force: bool = False, reuse_other_code: bool = False,
              progress: bool = True, echo: Callable[[str], None] = print, executor=None,
              max_wait_s: float | None = None) -> list[Outcome]:
    """``force``: run every cell again; ``reuse_other_code``: reuse finished cells whatever code made them;
    ``executor``: what runs the cells, already started (default: ``InProcess``); ``max_wait_s``: how long a cell
    another invocation runs is waited for before it is left to a later run."""
    client = tracking.client_for(uri)
    experiment = tracking.experiment_id(client, suite.suite)
    closed = tracking.close_orphaned(client, experiment)
    if closed:
        echo(f"marked {closed} run(s) left RUNNING by an ended invocation as FAILED (outcome=interrupted)")
    cells = expand(suite)
    parent = tracking.start_run(client, experiment, f"{suite.suite} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                {"role": "suite", **tracking.environment_tags()})
    run = SuiteRun(suite.suite, client, experiment, parent, force, reuse_other_code, progress, echo,
                   **({} if max_wait_s is None else {"max_wait_s": max_wait_s}))
    try:
        with remembered_interrupts():
            statistics = load_dataset(suite.dataset.name, suite.dataset.options).statistics()
            with tracking.uninterruptible():
                client.log_text(parent, suite_text, "suite.yaml")
                client.log_text(parent, json.dumps(statistics, indent=2), "dataset.json")
            outcomes = CellLoop(run, executor or InProcess(progress)).through(cells)
    except KeyboardInterrupt:
        tracking.end_run(client, parent, "interrupted", KILLED)
        raise
    except Exception as error:  # a store or code-identity error stops the suite: its run ends FAILED, if it can
        try:
            tracking.end_run(client, parent, "failed", FAILED, {"error": f"{type(error).__name__}: {error}"})
        except Exception as failure:  # noqa: BLE001  (the store may be what failed: the original error is raised)
            echo(f"could not end the suite run {parent}: {type(failure).__name__}: {failure}")
        raise
    failures = [o for o in outcomes if o.outcome == "failed"]
    tracking.end_run(client, parent, "failed" if failures else "finished", FINISHED,
                     {"cells": str(len(cells)), "failures": str(len(failures))})
    order = {cell.config_hash: i for i, cell in enumerate(cells)}
    return sorted(outcomes, key=lambda o: order[o.cell.config_hash])
