"""`bench tune`: an Optuna study per learner of a suite, each with the same budget, on validation episodes only.

A trial is one meta-training of the learner's first grid cell with the sampled options; its validation curve feeds
the pruner, its final validation score (and, as a second objective, ms per meta-iteration) is the value. Every trial
is an MLflow run under one parent run per study: pruned trials end KILLED with outcome ``pruned``, failing ones
FAILED, and the study goes on. Afterwards the best configuration of every learner is written as a suite file that
`bench run` accepts, evaluated on the test episodes across the suite's seeds, and reported.
"""
from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from algorithms import LEARNERS
from bench import metrics as m
from bench import tracking
from bench.config import field_names, from_mapping
from bench.provenance import PROJECT_ROOT
from bench.search import ParamSpec, space_of
from bench.suite import Suite, expand
from bench.tracking import FAILED, FINISHED, KILLED
from bench.training import run_cell
from datasets import load_dataset

DEFAULT_STORAGE = "sqlite:///results/optuna.db"


@dataclass(frozen=True)
class TuneOptions:
    storage: str = DEFAULT_STORAGE
    study: str = ""  # prefix of the study names; "" = the suite's name
    n_trials: int | None = None  # overrides search.n_trials
    timeout: float | None = None
    workers: int = 1
    heartbeat: int = 10  # seconds; a killed worker's trial is failed (and retried) 2 heartbeats after its last


def storage_for(url: str, heartbeat: int) -> optuna.storages.BaseStorage:
    """An RDB storage runs with a heartbeat, so a killed worker's trial is failed and retried, never RUNNING forever;
    ``journal:PATH`` is a journal file for a shared filesystem."""
    with warnings.catch_warnings():  # the heartbeat's retry callback is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if url.startswith("journal:"):
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url[len("journal:"):]))
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))


def study_name(suite: Suite, options: TuneOptions, label: str) -> str:
    return f"{options.study or suite.suite}.{label}"


def directions(suite: Suite) -> list[str]:
    score = load_dataset(suite.dataset.name, suite.dataset.options).score_name
    first = "maximize" if m.SCORES[score].direction == "higher" else "minimize"
    return [first] + ["minimize"] * (len(suite.search.objectives) - 1)


def open_study(suite: Suite, options: TuneOptions, label: str) -> optuna.Study:
    search = suite.search
    two = len(search.objectives) > 1
    sampler = optuna.samplers.NSGAIISampler(seed=search.seed) if two else optuna.samplers.TPESampler(seed=search.seed)
    # Optuna prunes single-objective studies only
    pruner = optuna.pruners.MedianPruner(n_startup_trials=search.pruner_startup_trials,
                                         n_warmup_steps=search.pruner_warmup_steps) \
        if search.pruner == "median" and not two else optuna.pruners.NopPruner()
    return optuna.create_study(storage=storage_for(options.storage, options.heartbeat), study_name=study_name(suite, options, label),
                               sampler=sampler, pruner=pruner, directions=directions(suite), load_if_exists=True)


def learner_space(suite: Suite, label: str) -> dict[str, ParamSpec]:
    spec = next(s for s in suite.learners if (s.label or s.name) == label)
    return space_of(suite.search, label, field_names(LEARNERS[spec.name].Config))


def configured(suite: Suite, label: str, values: dict[str, Any]) -> Suite:
    """The suite narrowed to one learner with ``values`` ("section.option" -> value) applied."""
    spec = next(s for s in suite.learners if (s.label or s.name) == label)
    learner = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("learner.")}
    training = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("training.")}
    backbone = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("backbone.")}
    return dataclasses.replace(
        suite, learners=(dataclasses.replace(spec, config={**spec.config, **learner}),),
        training=dataclasses.replace(suite.training, **training),
        backbone=dataclasses.replace(suite.backbone, **backbone))


def trial_cell(suite: Suite, label: str, values: dict[str, Any]):
    """The cell a trial trains: the learner's first grid point (first N, K, device and seed), no swept options."""
    narrowed = configured(suite, label, values)
    grid = narrowed.grid
    narrowed = dataclasses.replace(narrowed, grid=dataclasses.replace(
        grid, n_way=grid.n_way[:1], k_shot=grid.k_shot[:1], devices=grid.devices[:1], seeds=grid.seeds[:1],
        options={}))
    return expand(narrowed)[0]


class Objective:
    """One trial: sample, train on the first grid cell with validation only, log it as an MLflow run."""

    def __init__(self, suite: Suite, label: str, client, experiment: str, parent: str):
        self.suite, self.label, self.client, self.experiment, self.parent = suite, label, client, experiment, parent
        self.space = learner_space(suite, label)

    def __call__(self, trial: optuna.Trial):
        values = {name: spec.suggest(trial, name) for name, spec in self.space.items()}
        run_id = tracking.start_run(self.client, self.experiment, f"{self.label} trial {trial.number}",
                                    {"role": "trial", "study": trial.study.study_name, "trial": str(trial.number),
                                     "label": self.label, tracking.PARENT_TAG: self.parent})
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
            tracking.end_run(self.client, run_id, "pruned", KILLED, {"state": "PRUNED", "reason": str(pruned)})
            raise
        except Exception as error:  # the trial FAILS (Optuna records it) and the study goes on
            tracking.end_run(self.client, run_id, "failed", FAILED, {"state": "FAIL", "error": f"{error}",
                                                                     "traceback": traceback.format_exc()[-4000:]})
            raise
        score, ms = result.metrics[m.FINAL_VAL_SCORE], result.metrics[m.TRAIN_MS.name]
        if not math.isfinite(score):
            tracking.end_run(self.client, run_id, "failed", FAILED, {"state": "FAIL", "error": f"score {score}"})
            raise FloatingPointError(f"validation score {score}")
        tracking.log_metrics(self.client, run_id, [("objective_score", score, 0), (m.TRAIN_MS.name, ms, 0)])
        tracking.end_run(self.client, run_id, "finished", FINISHED, {"state": "COMPLETE"})
        return score if single else (score, ms)


def _parents(suite: Suite, options: TuneOptions, client, experiment: str) -> dict[str, str]:
    """One MLflow parent run per study (reused across invocations and workers)."""
    parents = {}
    for spec in suite.learners:
        label = spec.label or spec.name
        name = study_name(suite, options, label)
        found = client.search_runs([experiment], filter_string=f"tags.role = 'study' and tags.study = '{name}'",
                                   max_results=1)
        parents[label] = found[0].info.run_id if found else tracking.start_run(
            client, experiment, f"study {name}", {"role": "study", "study": name})
    return parents


def optimise(suite: Suite, options: TuneOptions, uri: str, share: int) -> None:
    """This process's share of every learner's trials (a worker)."""
    client = tracking.client_for(uri)
    experiment = tracking.experiment_id(client, f"{suite.suite}.tuning")
    parents = _parents(suite, options, client, experiment)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for spec in suite.learners:
        label = spec.label or spec.name
        study = open_study(suite, options, label)
        study.optimize(Objective(suite, label, client, experiment, parents[label]), n_trials=share,
                       timeout=options.timeout or suite.search.timeout, catch=(Exception,), gc_after_trial=True)


def run_workers(suite_path: str, suite: Suite, options: TuneOptions, uri: str) -> int:
    """``workers`` processes on one storage (processes, not threads: CUDA and threads do not mix); the trials are
    split between them so the total is exactly the budget."""
    total = options.n_trials or suite.search.n_trials
    client = tracking.client_for(uri)
    _parents(suite, options, client, tracking.experiment_id(client, f"{suite.suite}.tuning"))  # created once, here
    for spec in suite.learners:  # create every study before the workers race to
        open_study(suite, options, spec.label or spec.name)
    if options.workers == 1:
        optimise(suite, options, uri, total)
        return 0
    shares = [total // options.workers + (i < total % options.workers) for i in range(options.workers)]
    processes = []
    for i, share in enumerate(s for s in shares if s):
        command = [sys.executable, "-m", "bench", "tune", suite_path, "--worker", "--n-trials", str(share),
                   "--storage", options.storage, "--tracking-uri", uri, "--heartbeat", str(options.heartbeat)]
        command += ["--study", options.study] if options.study else []
        if options.timeout:
            command += ["--timeout", str(options.timeout)]
        env = dict(os.environ)
        devices = suite.grid.devices[0]
        if devices.startswith("cuda") and "CUDA_VISIBLE_DEVICES" not in env:
            env["CUDA_VISIBLE_DEVICES"] = str(i)  # one GPU per worker
        processes.append(subprocess.Popen(command, cwd=PROJECT_ROOT, env=env))
    return max(p.wait() for p in processes)


def best_suite_documents(suite_text: str, suite: Suite, options: TuneOptions) -> list[dict]:
    """The suite file's document of ``suite``, once per learner, with that learner's best values: what `bench run`
    evaluates (suite name ``<suite>_tuned``)."""
    raw = next(d for d in yaml.safe_load_all(suite_text) if d and d.get("suite") == suite.suite)
    documents = []
    for spec in suite.learners:
        label = spec.label or spec.name
        study = open_study(suite, options, label)
        best = study.best_trials[0] if len(suite.search.objectives) > 1 else study.best_trial
        document = {k: v for k, v in raw.items() if k != "search"}
        document["suite"] = f"{suite.suite}_tuned"
        learner = {"name": spec.name, "label": label,
                   "config": {**spec.config, **{k.split(".", 1)[1]: v for k, v in best.params.items()
                                                if k.startswith("learner.")}}}
        document["learners"] = [learner]
        for section in ("training", "backbone"):
            values = {k.split(".", 1)[1]: v for k, v in best.params.items() if k.startswith(f"{section}.")}
            if values:
                document[section] = {**raw.get(section, {}), **values}
        documents.append(document)
    return documents


def write_best(path: Path, documents: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text("# the best configuration of each learner found by `bench tune`: run it with `bench run`\n"
                         + yaml.safe_dump_all(documents, sort_keys=False))
    temporary.replace(path)  # never a half-written file
