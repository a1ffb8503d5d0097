"""`bench run`: every cell of a suite through the same measured path, each result in MLflow as soon as it exists.

A cell already FINISHED by the same code (config hash and code identity) is reused unless forced; a failing cell
becomes a FAILED run and the suite goes on; a device that is not there makes its cells skipped runs with the reason.

Several invocations may share one store. A cell is claimed by creating its run; of the active runs of one cell
configuration, the oldest whose owner is alive (or that finished) wins, and a later claimant deletes its own run and
comes back to the cell once the winner has ended: every cell is finished once, whoever runs it.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm import tqdm

from bench import ownership, tracking
from bench.measure import device_available
from bench.provenance import code_identity
from bench.suite import Cell, Suite, expand
from bench.tracking import FAILED, FINISHED, KILLED, RUNNING
from bench.training import CellResult, run_cell
from datasets import DATASETS, load_dataset

CLAIM_POLL_S = 1.0  # how often a cell held by another invocation is looked at again
CLAIM_SETTLE_S = 1.0  # longer than a run takes from its start time to being visible in the store


class _Interrupts:
    """Ctrl-C, remembered. Python swallows a KeyboardInterrupt raised while a finaliser runs (the saved-tensor meter
    uses finalisers in warm-up iterations), so the runner also looks at this flag after every meta-iteration."""

    seen = False

    @classmethod
    def handler(cls, signum, frame) -> None:
        cls.seen = True
        raise KeyboardInterrupt

    @classmethod
    def check(cls) -> None:
        if cls.seen:
            raise KeyboardInterrupt


@contextlib.contextmanager
def remembered_interrupts():
    """Install the remembering handler where Ctrl-C is live (main thread, default handler); an ignored SIGINT
    (a job started in the background) stays ignored."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    _Interrupts.seen = False
    previous = signal.signal(signal.SIGINT, _Interrupts.handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Outcome:
    cell: Cell
    outcome: str  # finished, reused, failed, skipped
    metrics: dict[str, float] = field(default_factory=dict)
    detail: str = ""
    run_id: str = ""


def cell_code(cell: Cell) -> str:
    return code_identity(cell.learner, DATASETS[cell.dataset.name].version)


def cell_tags(cell: Cell, parent: str) -> dict[str, str]:
    return {"role": "cell", "config_hash": cell.config_hash, "code_identity": cell_code(cell),
            "eval_fingerprint": cell.evaluation_fingerprint, "learner": cell.learner, "label": cell.label,
            "dataset": cell.dataset.name, tracking.PARENT_TAG: parent,
            **{tracking.AXIS_PREFIX + name: value for name, value in cell.axes.items()},
            **tracking.environment_tags(cell.device)}


def _write_scores(scores: list[float], score_name: str) -> Callable:
    def write(path):
        path.write_text("episode," + score_name + "\n" + "".join(f"{i},{s!r}\n" for i, s in enumerate(scores)))
    return write


def new_run(client, experiment: str, parent: str, cell: Cell) -> str:
    return tracking.start_run(client, experiment, cell.title, cell_tags(cell, parent))


def run_one(client, run_id: str, cell: Cell, progress: bool) -> Outcome:
    """Run ``cell`` into the RUNNING run ``run_id`` and end the run with a status, whatever happens."""
    pending: list[tuple[str, float, int]] = []

    def on_train(iteration: int, values: dict[str, float]) -> None:
        _Interrupts.check()
        pending.extend((name, value, iteration) for name, value in values.items() if math.isfinite(value))

    def on_validation(iteration: int, values: dict[str, float]) -> None:
        pending.extend((name, value, iteration) for name, value in values.items())
        tracking.log_metrics(client, run_id, pending)  # curves reach MLflow at every validation
        pending.clear()

    try:  # from here on, whatever happens ends this run with a status
        tracking.log_params(client, run_id, cell.resolved())
        available, why = device_available(cell.device)
        if not available:
            return skip_run(client, run_id, cell, why)
        with ownership.Heartbeat(lambda now: tracking.heartbeat(client, run_id, now)):
            result = run_cell(cell, on_train, on_validation, progress)
    except KeyboardInterrupt:
        tracking.end_run(client, run_id, "interrupted", KILLED)
        raise
    except Exception as error:  # recorded as a FAILED run and listed at the end: the suite goes on
        if isinstance(error, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        return fail_run(client, run_id, cell, f"{type(error).__name__}: {error}", traceback.format_exc())
    return finish_run(client, run_id, cell, result)


def skip_run(client, run_id: str, cell: Cell, why: str) -> Outcome:
    tracking.end_run(client, run_id, "skipped", KILLED, {"skip_reason": why})
    return Outcome(cell, "skipped", detail=why, run_id=run_id)


def fail_run(client, run_id: str, cell: Cell, message: str, trace: str = "") -> Outcome:
    tracking.end_run(client, run_id, "failed", FAILED, {"error": message, "traceback": trace[-4000:]})
    return Outcome(cell, "failed", detail=message, run_id=run_id)


def finish_run(client, run_id: str, cell: Cell, result: CellResult, tags: dict[str, str] | None = None) -> Outcome:
    """Log a cell's results (metrics, per-episode test scores, meta-parameters) and end its run FINISHED."""
    tracking.log_metrics(client, run_id, [(k, v, 0) for k, v in result.metrics.items() if math.isfinite(v)])
    tracking.log_file(client, run_id, _write_scores(result.test_scores, result.score_name), "test_episodes.csv")
    tracking.log_file(client, run_id, lambda path: torch.save(result.state_dict, path), "meta_parameters.pt")
    ran = {f"ran.{k}": v for k, v in result.execution.items()}
    tracking.end_run(client, run_id, "finished", FINISHED, {"score": result.score_name, **ran, **(tags or {})})
    return Outcome(cell, "finished", result.metrics, run_id=run_id)


def _holder(runs: list, code: str | None, own: str | None = None):
    """The run that holds a cell: a finished one, else the oldest RUNNING one whose owner is alive (``own``, this
    invocation's claim, counts as alive). ``code``: the code identity a holder must have (None: any)."""
    of_code = [r for r in runs if code is None or r.data.tags.get("code_identity") == code]
    for run in of_code:
        if tracking.is_finished(run):
            return run
    for run in of_code:
        if run.info.status == RUNNING and (run.info.run_id == own or not ownership.owner_gone(run.data.tags)):
            return run
    return None


def _others_running(client, experiment: str, parent: str) -> bool:
    """Whether another live invocation works on this experiment now."""
    suites = client.search_runs([experiment], filter_string="tags.role = 'suite' and attributes.status = 'RUNNING'",
                                max_results=1000)
    return any(r.info.run_id != parent and not ownership.owner_gone(r.data.tags) for r in suites)


@dataclass
class Claim:
    """Where a cell stands for this invocation: exactly one of the three is set."""

    reused: Outcome | None = None  # finished before (by code that may be reused): nothing to run
    run_id: str = ""  # claimed: this RUNNING run is ours to run
    held_by: str = ""  # another live invocation runs it now


def claim(client, experiment: str, parent: str, cell: Cell, code: str | None) -> Claim:
    """Claim ``cell`` unless it is finished or held. ``code``: the code identity a reusable run must have (None:
    any)."""
    holder = _holder(tracking.runs_of_cell(client, experiment, cell.config_hash), code)
    if holder is None:
        contended = _others_running(client, experiment, parent)
        run_id = new_run(client, experiment, parent, cell)
        if contended:  # a claim stamped earlier than ours may still be on its way into the store: let it land
            time.sleep(CLAIM_SETTLE_S)
        holder = _holder(tracking.runs_of_cell(client, experiment, cell.config_hash), code, own=run_id)
        if holder is not None and holder.info.run_id == run_id:
            return Claim(run_id=run_id)
        tracking.delete_run(client, run_id)  # another claimant came first: step back
    if holder is not None and tracking.is_finished(holder):
        return Claim(reused=Outcome(cell, "reused", dict(holder.data.metrics), run_id=holder.info.run_id))
    return Claim(held_by=holder.info.run_id if holder is not None else "")


def attempt(client, experiment: str, parent: str, cell: Cell, code: str | None, progress: bool
            ) -> tuple[Outcome | None, str | None]:
    """Run ``cell`` unless it is held: (outcome, None) when it was run or reused, (None, run id of the holder)
    when another invocation holds it. ``code``: the code identity a reusable run must have (None: any)."""
    state = claim(client, experiment, parent, cell, code)
    if state.run_id:
        return run_one(client, state.run_id, cell, progress), None
    return state.reused, state.held_by or None


@dataclass
class SuiteRun:
    """One invocation's hold on a suite, as executors see it."""

    suite: str
    client: object
    experiment: str
    parent: str  # the suite run
    force: bool  # run every cell again
    reuse_other_code: bool  # reuse finished cells whatever code made them
    progress: bool
    echo: Callable[[str], None]

    def code(self, cell: Cell) -> str | None:
        return None if self.reuse_other_code else cell_code(cell)


class InProcess:
    """The default executor: cells one after another in this process, on its devices; no Ray."""

    def run_cells(self, run: SuiteRun, cells: list[Cell], outcomes: list[Outcome]) -> None:
        waiting: list[Cell] = []
        for cell in tqdm(cells, desc=f"{run.suite}: cells", unit="cell", disable=not run.progress):
            if run.force:
                run_id = new_run(run.client, run.experiment, run.parent, cell)
                outcomes.append(run_one(run.client, run_id, cell, run.progress))
                continue
            done, _ = attempt(run.client, run.experiment, run.parent, cell, run.code(cell), run.progress)
            outcomes.append(done) if done else waiting.append(cell)
        while waiting:  # cells another invocation is running: take them over if it ends without finishing them
            cell = waiting.pop(0)
            done, _ = attempt(run.client, run.experiment, run.parent, cell, run.code(cell), run.progress)
            if done:
                outcomes.append(done)
            else:
                waiting.append(cell)
                _Interrupts.check()
                time.sleep(CLAIM_POLL_S)


def run_suite(suite: Suite, suite_text: str, uri: str, force: bool = False, reuse_other_code: bool = False,
              progress: bool = True, echo: Callable[[str], None] = print, executor=None) -> list[Outcome]:
    """``force``: run every cell again; ``reuse_other_code``: reuse finished cells whatever code made them;
    ``executor``: what runs the cells (default: ``InProcess``; ``bench.ray_executor.RayExecutor`` spreads them)."""
    client = tracking.client_for(uri)
    experiment = tracking.experiment_id(client, suite.suite)
    closed = tracking.close_orphaned(client, experiment)
    if closed:
        echo(f"marked {closed} run(s) left RUNNING by an ended invocation as FAILED (outcome=interrupted)")
    cells = expand(suite)
    parent = tracking.start_run(client, experiment, f"{suite.suite} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                {"role": "suite", **tracking.environment_tags()})
    outcomes: list[Outcome] = []
    try:
        with remembered_interrupts():
            statistics = load_dataset(suite.dataset.name, suite.dataset.options).statistics()
            with tracking.uninterruptible():
                client.log_text(parent, suite_text, "suite.yaml")
                client.log_text(parent, json.dumps(statistics, indent=2), "dataset.json")
            run = SuiteRun(suite.suite, client, experiment, parent, force, reuse_other_code, progress, echo)
            (executor or InProcess()).run_cells(run, cells, outcomes)
    except KeyboardInterrupt:
        tracking.end_run(client, parent, "interrupted", KILLED)
        raise
    failures = [o for o in outcomes if o.outcome == "failed"]
    tracking.end_run(client, parent, "failed" if failures else "finished", FINISHED,
                     {"cells": str(len(cells)), "failures": str(len(failures))})
    order = {cell.config_hash: i for i, cell in enumerate(cells)}
    return sorted(outcomes, key=lambda o: order[o.cell.config_hash])
