"""`bench run`: every cell of a suite through the same measured path, each result in MLflow as soon as it exists.

Cells already FINISHED (same config hash) are reused unless forced; a failing cell becomes a FAILED run and the
suite goes on; a device that is not there makes its cells skipped runs carrying the reason.
"""
from __future__ import annotations

import json
import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import torch
from mlflow.entities import RunStatus
from tqdm import tqdm

from bench import tracking
from bench.cell import run_cell
from bench.measure import device_available
from bench.suite import Cell, Suite, expand
from datasets import load_dataset

FINISHED, FAILED, KILLED = (RunStatus.to_string(s) for s in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED))


@dataclass
class Outcome:
    cell: Cell
    outcome: str  # finished, reused, failed, skipped
    metrics: dict[str, float] = field(default_factory=dict)
    detail: str = ""
    run_id: str = ""


def cell_tags(cell: Cell, parent: str) -> dict[str, str]:
    steps = getattr(cell.learner_config, "inner_steps", None)
    return {"role": "cell", "config_hash": cell.config_hash, "learner": cell.learner, "label": cell.label,
            "n_way": str(cell.n_way), "k_shot": str(cell.k_shot), "inner_steps": "" if steps is None else str(steps),
            "device": cell.device, "seed": str(cell.seed), "dataset": cell.dataset.name, tracking.PARENT_TAG: parent,
            **tracking.environment_tags(cell.device)}


def _write_scores(scores: list[float], score_name: str) -> Callable:
    def write(path):
        path.write_text("episode," + score_name + "\n" + "".join(f"{i},{s!r}\n" for i, s in enumerate(scores)))
    return write


def run_one(client, experiment: str, parent: str, cell: Cell, progress: bool) -> Outcome:
    run_id = tracking.start_run(client, experiment, cell.title, cell_tags(cell, parent))
    pending: list[tuple[str, float, int]] = []

    def on_train(iteration: int, loss: float) -> None:
        pending.append(("train_loss", loss, iteration))

    def on_validation(iteration: int, score: float) -> None:
        pending.append(("val_score", score, iteration))
        tracking.log_metrics(client, run_id, pending)  # curves reach MLflow at every validation
        pending.clear()

    try:  # from here on, whatever happens ends this run with a status
        tracking.log_params(client, run_id, cell.resolved())
        available, why = device_available(cell.device)
        if not available:
            tracking.end_run(client, run_id, "skipped", KILLED, {"skip_reason": why})
            return Outcome(cell, "skipped", detail=why, run_id=run_id)
        result = run_cell(cell, on_train, on_validation, progress)
    except KeyboardInterrupt:
        tracking.end_run(client, run_id, "interrupted", KILLED)
        raise
    except Exception as error:  # recorded as a FAILED run and listed at the end: the suite goes on
        if isinstance(error, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        message = f"{type(error).__name__}: {error}"
        tracking.end_run(client, run_id, "failed", FAILED,
                         {"error": message, "traceback": traceback.format_exc()[-4000:]})
        return Outcome(cell, "failed", detail=message, run_id=run_id)
    tracking.log_metrics(client, run_id, [(k, v, 0) for k, v in result.metrics.items() if math.isfinite(v)])
    tracking.log_file(client, run_id, _write_scores(result.test_scores, result.score_name), "test_episodes.csv")
    tracking.log_file(client, run_id, lambda path: torch.save(result.state_dict, path), "meta_parameters.pt")
    tracking.end_run(client, run_id, "finished", FINISHED, {"score": result.score_name})
    return Outcome(cell, "finished", result.metrics, run_id=run_id)


def run_suite(suite: Suite, suite_text: str, uri: str, force: bool = False, progress: bool = True,
              echo: Callable[[str], None] = print) -> list[Outcome]:
    client = tracking.client_for(uri)
    experiment = tracking.experiment_id(client, suite.suite)
    closed = tracking.close_interrupted(client, experiment)
    if closed:
        echo(f"marked {closed} run(s) left RUNNING by an interrupted invocation as FAILED (outcome=interrupted)")
    previous = {} if force else tracking.finished_runs(client, experiment)
    cells = expand(suite)
    parent = tracking.start_run(client, experiment, f"{suite.suite} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                {"role": "suite", **tracking.environment_tags()})
    outcomes: list[Outcome] = []
    try:
        statistics = load_dataset(suite.dataset.name, suite.dataset.options).statistics()
        with tracking.uninterruptible():
            client.log_text(parent, suite_text, "suite.yaml")
            client.log_text(parent, json.dumps(statistics, indent=2), "dataset.json")
        for cell in tqdm(cells, desc=f"{suite.suite}: cells", unit="cell", disable=not progress):
            if cell.config_hash in previous:
                run = previous[cell.config_hash]
                outcomes.append(Outcome(cell, "reused", dict(run.data.metrics), run_id=run.info.run_id))
                continue
            outcomes.append(run_one(client, experiment, parent, cell, progress))
    except KeyboardInterrupt:
        tracking.end_run(client, parent, "interrupted", KILLED)
        raise
    failures = [o for o in outcomes if o.outcome == "failed"]
    tracking.end_run(client, parent, "failed" if failures else "finished", FINISHED,
                     {"cells": str(len(cells)), "failures": str(len(failures))})
    return outcomes
