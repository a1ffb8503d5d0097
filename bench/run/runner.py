"""`bench run`: every cell of a suite through the same measured path, each result in MLflow as soon as it exists.

The suite run (the parent), then the one cell-execution loop (``bench.run.execution``) over an executor
(``bench.run.executors``): by default ``InProcess``, the cells one after another in this process; Ray and Slurm
spread them.
"""
from __future__ import annotations

import json
import time
from typing import Callable

from bench.core import tags as t
from bench.core import interrupts
from bench.run.execution import CellLoop, Outcome, SuiteRun
from bench.run.executors.in_process import InProcess
from bench.spec.suite import Cell, Suite
from bench.store import claims, tracking
from bench.store.tracking import FAILED, FINISHED, KILLED
from meta_bench.datasets import load_dataset


def run_suite(suite: Suite, suite_text: str, uri: str, force: bool = False, reuse_other_code: bool = False,
              progress: bool = True, echo: Callable[[str], None] = print, executor=None,
              max_wait_s: float | None = None, cells: list[Cell] | None = None) -> list[Outcome]:
    """``force``: run every cell again; ``reuse_other_code``: reuse finished cells whatever code made them;
    ``executor``: what runs the cells, already started (default: ``InProcess``); ``max_wait_s``: how long a cell
    another invocation runs is waited for before it is left to a later run; ``cells``: those of the suite's cells to
    run (default: all; a sequential plan's look runs some)."""
    client = tracking.client_for(uri)
    experiment = tracking.experiment_id(client, suite.suite)
    kept = claims.keep(client, suite.suite)
    if kept:
        echo(f"kept {kept} claim record(s) of an older version where `mlflow gc` cannot erase them")
    executor = executor or InProcess(progress)
    closed = tracking.close_orphaned(client, experiment, keep=lambda run: executor.adoptable(run))
    if closed:
        echo(f"marked {closed} run(s) left RUNNING by an ended invocation as FAILED (outcome=interrupted)")
    cells = list(suite.cells if cells is None else cells)
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
            outcomes = CellLoop(run, executor).through(cells)
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
