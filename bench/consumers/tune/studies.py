"""A study per learner: its name bound to the search definition, how it is opened (sampler, pruner, directions), and
its MLflow parent run."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from typing import Any

import optuna

from bench.core import metrics as m
from bench.core import tags as t
from bench.spec.suite import Suite
from bench.store import tracking
from bench.consumers.tune.options import TuneOptions
from bench.consumers.tune.storage import storage_for
from bench.consumers.tune.trial_cell import learner_space, trial_cell
from meta_bench.datasets import DATASETS, load_dataset


def definition(suite: Suite, label: str) -> dict[str, Any]:
    """What a trial's values depend on besides its sampled values: the learner's space, the objectives and their
    directions, and the cell every trial trains (learner, training, backbone, evaluation, dataset and its version,
    the first grid point) less the options the space sets. Budget (n_trials, timeout), sampler seed and pruner are
    left out: they decide which trials run, not what a trial measures, so a bigger budget continues the study."""
    space = learner_space(suite, label)
    cell = trial_cell(suite, label, {}).resolved()
    sections = {"learner": "learner_config", "training": "training", "backbone": "backbone"}
    for name in space:
        section, _, option = name.partition(".")
        cell[sections[section]].pop(option, None)
    return {"cell": cell, "dataset_version": DATASETS[suite.dataset.name].version,
            "space": {name: dataclasses.asdict(spec) for name, spec in sorted(space.items())},
            "objectives": list(suite.search.objectives), "directions": directions(suite)}


def study_name(suite: Suite, options: TuneOptions, label: str) -> str:
    """The study is bound to its definition by name: an edited space, objective or trial cell starts a new study
    rather than mixing its trials with the old ones (which stay in the storage under their own name)."""
    digest = hashlib.sha256(json.dumps(definition(suite, label), sort_keys=True).encode()).hexdigest()[:8]
    return f"{options.study or suite.suite}.{label}.{digest}"


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
    study = optuna.create_study(storage=storage_for(options.storage, options.heartbeat_interval),
                                study_name=study_name(suite, options, label), sampler=sampler, pruner=pruner,
                                directions=directions(suite), load_if_exists=True)
    if study.metric_names is None:  # what optuna-dashboard's axes say, instead of "Objective 0"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(objective_names(suite))
    return study


def objective_names(suite: Suite) -> list[str]:
    score = load_dataset(suite.dataset.name, suite.dataset.options).score_name
    names = {"score": "validation " + m.SCORES[score].label.removeprefix("test "),
             "ms_per_iteration": m.TRAIN_MS.label}
    return [names.get(objective, objective) for objective in suite.search.objectives]


def study_parents(suite: Suite, options: TuneOptions, client, experiment: str) -> dict[str, str]:
    """One MLflow parent run per study (reused across invocations and workers)."""
    parents = {}
    for spec in suite.learners:
        label = spec.display
        name = study_name(suite, options, label)
        # found by a digest of the name: the name holds the label and --study, which may hold any quote, and an
        # MLflow filter string has no escape for quotes
        key = hashlib.sha256(name.encode()).hexdigest()[:16]
        found = client.search_runs([experiment], filter_string=t.matching({t.ROLE: t.ROLE_STUDY, t.STUDY_KEY: key}),
                                   max_results=1)
        parents[label] = found[0].info.run_id if found else tracking.start_run(
            client, experiment, f"study {name}", {t.ROLE: t.ROLE_STUDY, t.STUDY: name, t.STUDY_KEY: key})
    return parents
