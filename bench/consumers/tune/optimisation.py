"""Every study run up to its budget, in this process or by worker processes, and the problems that fail the command."""
from __future__ import annotations

import sys
import time
from typing import Callable

import optuna

from bench.core import tags as t
from bench.run.executors import DEFAULT as DEFAULT_EXECUTOR
from bench.spec.suite import Suite
from bench.store import tracking
from bench.consumers.tune.accounting import FINISHED_STATES, Budget, budget, charged, remaining
from bench.consumers.tune.objective import Objective
from bench.consumers.tune.options import TuneOptions
from bench.consumers.tune.studies import open_study, study_parents
from bench.consumers.tune.workers import start_workers


def optimise(suite: Suite, options: TuneOptions, uri: str, shares: dict[str, int] | None = None) -> None:
    """Every learner's study up to its budget; ``shares`` (label -> trials) caps this process's part (a worker)."""
    client = tracking.client_for(uri)
    experiment = tracking.experiment_id(client, f"{suite.suite}.tuning")
    parents = study_parents(suite, options, client, experiment)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    total = budget(suite, options)
    for spec in suite.learners:
        label = spec.display
        study = open_study(suite, options, label)
        left = remaining(study, total)
        if shares is not None:
            left = min(left, shares.get(label, 0))
        if left > 0:
            study.optimize(Objective(suite, label, client, experiment, parents[label]), n_trials=left,
                           timeout=options.timeout or suite.search.timeout, catch=(Exception,), gc_after_trial=True,
                           callbacks=[Budget(total)])


def run_workers(suite_path: str, suite: Suite, options: TuneOptions, uri: str, launch: Callable[..., list[str]]
                ) -> list[str]:
    """Every study run up to its budget, here or by ``workers`` processes that ``launch`` runs (an executor's
    launcher: processes here, a Slurm job array). Returns the problems that make the
    command fail: a study short of its budget (its timeout aside) and, unless its trials were retried to the budget
    anyway, a worker that died."""
    # the storage is opened (a bad URL refused) and every study created before anything is written to MLflow and
    # before workers race to create them
    studies = {spec.display: open_study(suite, options, spec.display) for spec in suite.learners}
    client = tracking.client_for(uri)
    experiment = tracking.experiment_id(client, f"{suite.suite}.tuning")
    study_parents(suite, options, client, experiment)  # created once, here
    try:
        return _run_studies(suite_path, suite, options, uri, studies, launch)
    finally:  # the trial runs of killed workers end FAILED/interrupted, not RUNNING (a study's own run stays open)
        tracking.close_orphaned(client, experiment, role=t.ROLE_TRIAL)


def _run_studies(suite_path: str, suite: Suite, options: TuneOptions, uri: str, studies: dict[str, optuna.Study],
                 launch: Callable[..., list[str]]) -> list[str]:
    total = budget(suite, options)
    if options.workers == 1 and options.executor == DEFAULT_EXECUTOR:  # here, in this process
        optimise(suite, options, uri)
        return shortfalls(suite, options, studies, [])
    failures = start_workers(suite_path, suite, options, uri,
                             {label: remaining(study, total) for label, study in studies.items()}, launch)
    if failures and any(charged(s, FINISHED_STATES) < total for s in studies.values()):
        # a dead worker's trial is stale 2 heartbeats after its last beat: then it is failed and retried here, with
        # the shares the dead worker did not run (on journal storage it stays RUNNING and the study stays short)
        if options.heartbeat_interval is not None:
            time.sleep(2 * options.heartbeat_interval + 1)
        optimise(suite, options, uri)
    return shortfalls(suite, options, studies, failures)


def shortfalls(suite: Suite, options: TuneOptions, studies: dict[str, optuna.Study], failures: list[str]) -> list[str]:
    total, problems = budget(suite, options), []
    for study in studies.values():
        finished = charged(study, FINISHED_STATES)
        if finished >= total:
            continue
        if failures:
            problems.append(f"study {study.study_name}: {finished} of {total} trial(s) finished: "
                            f"{'; '.join(failures)}")
        elif not (options.timeout or suite.search.timeout):  # a timeout is a budget too: a short study is its end
            stale = ("journal storage has no heartbeat, so a killed worker's trial stays RUNNING there for good"
                     if options.heartbeat_interval is None else
                     f"a killed worker's trial is failed and retried {2 * options.heartbeat_interval} s after its "
                     f"last heartbeat")
            problems.append(f"study {study.study_name}: {finished} of {total} trial(s) finished, "
                            f"{charged(study) - finished} RUNNING (another `bench tune` of this study, or "
                            f"a killed worker: {stale}); rerun this command when they have ended")
    if failures and not problems:
        print(f"note: {'; '.join(failures)}; its trials were retried and every study reached its budget",
              file=sys.stderr)
    return problems
