"""The trial objective: sample, train the trial's cell on validation episodes (reporting to the pruner), and log the
trial as an MLflow run that ends FINISHED, KILLED (pruned) or FAILED."""
from __future__ import annotations

import math
import os
import socket
import traceback

import optuna
from optuna.trial import TrialState

from bench.core import metrics as m
from bench.core import tags as t
from bench.run.executors.slurm_jobs import job_id_here
from bench.run.training import run_cell
from bench.spec.suite import Suite
from bench.store import tracking
from bench.store.tracking import FAILED, FINISHED, KILLED
from bench.consumers.tune.trial_cell import learner_space, trial_cell


def _where() -> dict[str, str]:
    """Where the trial runs: the node, and its Slurm job when a worker job runs it."""
    return {t.EXECUTOR_NODE: socket.gethostname(),
            **({t.SLURM_JOB: job_id_here()} if "SLURM_JOB_ID" in os.environ else {})}


class Objective:
    """One trial: sample, train on the first grid cell with validation only, log it as an MLflow run."""

    def __init__(self, suite: Suite, label: str, client, experiment: str, parent: str):
        self.suite, self.label, self.client, self.experiment, self.parent = suite, label, client, experiment, parent
        self.space = learner_space(suite, label)

    def __call__(self, trial: optuna.Trial):
        values = {name: spec.suggest(trial, name) for name, spec in self.space.items()}
        run_id = tracking.start_run(self.client, self.experiment, f"{self.label} trial {trial.number}",
                                    {t.ROLE: t.ROLE_TRIAL, t.STUDY: trial.study.study_name, t.TRIAL: str(trial.number),
                                     t.LABEL: self.label, t.PARENT: self.parent, **_where()})
        tracking.log_params(self.client, run_id, values)
        single = len(self.suite.search.objectives) == 1

        def on_validation(iteration: int, reported: dict[str, float]) -> None:
            value = reported[m.VAL_SCORE]
            tracking.log_metrics(self.client, run_id, [(m.VAL_SCORE, value, iteration)])
            if single:
                trial.report(value, iteration)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at meta-iteration {iteration} (validation {value:.4f})")

        try:
            result = run_cell(trial_cell(self.suite, self.label, values), on_validation=on_validation, test=False)
        except optuna.TrialPruned as pruned:
            tracking.end_run(self.client, run_id, t.OUTCOME_PRUNED, KILLED,
                             {t.STATE: TrialState.PRUNED.name, t.REASON: str(pruned)})
            raise
        except Exception as error:  # the trial FAILS (Optuna records it) and the study goes on
            tracking.end_run(self.client, run_id, t.OUTCOME_FAILED, FAILED, {
                t.STATE: TrialState.FAIL.name, t.ERROR: f"{error}", t.TRACEBACK: traceback.format_exc()[-4000:]})
            raise
        score, ms = result.metrics[m.FINAL_VAL_SCORE], result.metrics[m.TRAIN_MS.name]
        if not math.isfinite(score):
            tracking.end_run(self.client, run_id, t.OUTCOME_FAILED, FAILED,
                             {t.STATE: TrialState.FAIL.name, t.ERROR: f"score {score}"})
            raise FloatingPointError(f"validation score {score}")
        tracking.log_metrics(self.client, run_id, [(m.OBJECTIVE_SCORE, score, 0), (m.TRAIN_MS.name, ms, 0)])
        tracking.end_run(self.client, run_id, t.OUTCOME_FINISHED, FINISHED, {t.STATE: TrialState.COMPLETE.name})
        return score if single else (score, ms)
