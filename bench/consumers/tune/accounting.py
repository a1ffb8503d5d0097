"""A study's budget: the trials charged to it, however many invocations and workers share it, and those left."""
from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState

from bench.spec.suite import Suite
from bench.consumers.tune.options import TuneOptions

# the trials charged to a study's budget (see `charged`), and those of them that have ended
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
CHARGED_STATES = FINISHED_STATES + (TrialState.RUNNING,)


def budget(suite: Suite, options: TuneOptions) -> int:
    """Each study's total number of trials, however many invocations and workers share it."""
    return options.n_trials or suite.search.n_trials


def charged(study: optuna.Study, states: tuple[TrialState, ...] = CHARGED_STATES) -> int:
    """The trials (in ``states``) charged to the study's budget: COMPLETE, PRUNED and FAIL (a configuration that
    diverged is one the search spent its budget on), and RUNNING, so that workers and concurrent invocations stop
    together at the budget instead of each spending it. A WAITING trial (enqueued, or a retry) is charged once it
    runs. The exception is a killed worker's trial that the heartbeat failed and retried: its retry is charged
    instead, so a kill costs no budget. (Optuna's MaxTrialsCallback counts by state alone: it would charge such a
    trial twice.)"""
    trials = study.get_trials(deepcopy=False)
    with warnings.catch_warnings():  # retry_history is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = {n for trial in trials for n in optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trial)}
    return sum(trial.number not in retried and trial.state in states for trial in trials)


def remaining(study: optuna.Study, total: int) -> int:
    """Trials left to the budget, once the trials of killed workers past their grace period are failed and retried
    (no-op on journal storage, which has no heartbeat)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return total - charged(study)


class Budget:
    """Stops this process's optimisation once the study's budget is charged, whoever spent it (checked after each
    trial, as Optuna runs callbacks)."""

    def __init__(self, n_trials: int):
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if charged(study) >= self.n_trials:
            study.stop()
