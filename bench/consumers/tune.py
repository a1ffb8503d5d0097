"""`bench tune`: an Optuna study per learner of a suite, each with the same budget, on validation episodes only.

A trial is one meta-training of the learner's first grid cell with the sampled options; its validation curve feeds
the pruner, its final validation score (and, as a second objective, ms per meta-iteration) is the value. Every trial
is an MLflow run under one parent run per study: pruned trials end KILLED with outcome ``pruned``, failing ones
FAILED, and the study goes on. Afterwards the best configuration of every learner is written as a suite file that
`bench run` accepts, evaluated on the test episodes across the suite's seeds, and reported.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
import yaml
from optuna.trial import TrialState

from bench.core import metrics as m
from bench.core import tags as t
from bench.core.config import ConfigError, field_names, yaml_documents
from bench.core.paths import OPTUNA_STORAGE, WORK_ROOT
from bench.run.training import run_cell
from bench.spec.search import ParamSpec, options_in, space_of
from bench.spec.suite import Suite, expand, suite_file
from bench.store import tracking
from bench.store.tracking import FAILED, FINISHED, KILLED
from meta_bench.algorithms import LEARNERS
from meta_bench.datasets import DATASETS, load_dataset

DEFAULT_STORAGE = OPTUNA_STORAGE
DEFAULT_HEARTBEAT = 10
JOURNAL = "journal:"  # a journal file on a shared filesystem
# the trials charged to a study's budget (see `charged`), and those of them that have ended
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
CHARGED_STATES = FINISHED_STATES + (TrialState.RUNNING,)


@dataclass(frozen=True)
class TuneOptions:
    storage: str = DEFAULT_STORAGE
    study: str = ""  # prefix of the study names; "" = the suite's name
    n_trials: int | None = None  # overrides search.n_trials: each study's total budget, not this invocation's
    timeout: float | None = None
    workers: int = 1
    # seconds; a killed worker's trial is failed (and retried) 2 heartbeats after its last. None: the default, or no
    # heartbeat at all on journal storage
    heartbeat: int | None = None

    def __post_init__(self) -> None:
        if self.heartbeat is not None and self.storage.startswith(JOURNAL):
            # Optuna's JournalStorage has no heartbeat (it is no BaseHeartbeat): accepting the flag would promise a
            # recovery that never happens
            raise ConfigError(f"--heartbeat {self.heartbeat}: journal storage ({self.storage}) has no heartbeat, so a "
                              f"killed worker's trial stays RUNNING and is never failed or retried there; leave out "
                              f"--heartbeat, or use an RDB storage (sqlite:///PATH, postgresql://...)")

    @property
    def heartbeat_interval(self) -> int | None:
        if self.storage.startswith(JOURNAL):
            return None
        return DEFAULT_HEARTBEAT if self.heartbeat is None else self.heartbeat


def storage_for(url: str, heartbeat: int | None) -> optuna.storages.BaseStorage:
    """An RDB storage runs with a heartbeat, so a killed worker's trial is failed and retried, never RUNNING forever;
    ``journal:PATH`` is a journal file for a shared filesystem (no heartbeat there). A storage that cannot be opened
    is bad input naming the URL."""
    try:
        with warnings.catch_warnings():  # the heartbeat's retry callback is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if url.startswith(JOURNAL):
                return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url[len(JOURNAL):]))
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
    # a malformed URL or unknown dialect, a database that cannot be opened or reached, a missing driver, a journal
    # path that cannot be written
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.OperationalError, ImportError, OSError) as error:
        reason = str(error).splitlines()[0]
        raise ConfigError(f"--storage {url}: cannot open this Optuna storage ({reason}); give sqlite:///PATH, "
                          f"postgresql+psycopg://USER@HOST/DB or journal:PATH") from error


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


def learner_space(suite: Suite, label: str) -> dict[str, ParamSpec]:
    spec = next(s for s in suite.learners if s.display == label)
    return space_of(suite.search, label, field_names(LEARNERS[spec.name].Config))


def configured(suite: Suite, label: str, values: dict[str, Any]) -> Suite:
    """The suite narrowed to one learner with ``values`` ("section.option" -> value) applied."""
    spec = next(s for s in suite.learners if s.display == label)
    return dataclasses.replace(
        suite, learners=(dataclasses.replace(spec, config={**spec.config, **options_in("learner", values)}),),
        training=dataclasses.replace(suite.training, **options_in("training", values)),
        backbone=dataclasses.replace(suite.backbone, **options_in("backbone", values)))


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
                                    {t.ROLE: t.ROLE_TRIAL, t.STUDY: trial.study.study_name, t.TRIAL: str(trial.number),
                                     t.LABEL: self.label, t.PARENT: self.parent})
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


def _worker_command(suite_path: str, options: TuneOptions, uri: str, shares: dict[str, int]) -> list[str]:
    command = [sys.executable, "-m", "bench", "tune", str(suite_file(suite_path).resolve()), "--worker-shares",
               json.dumps(shares), "--storage", options.storage, "--tracking-uri", uri]
    command += ["--n-trials", str(options.n_trials)] if options.n_trials else []
    command += ["--heartbeat", str(options.heartbeat)] if options.heartbeat is not None else []
    command += ["--study", options.study] if options.study else []
    command += ["--timeout", str(options.timeout)] if options.timeout else []
    return command


def _exit_failure(index: int, process: subprocess.Popen) -> str | None:
    """How a worker failed, or None: a signal death is a negative return code."""
    code = process.returncode
    if code == 0:
        return None
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    return f"worker {index} (pid {process.pid}) {how}"


def _start_workers(suite_path: str, suite: Suite, options: TuneOptions, uri: str, left: dict[str, int]) -> list[str]:
    """``workers`` processes on one storage (processes, not threads: CUDA and threads do not mix), the trials left
    split between them exactly; the failures of those that did not exit 0."""
    count = options.workers
    shares = [{label: n // count + (i < n % count) for label, n in left.items()} for i in range(count)]
    processes = []
    for i, share in enumerate(s for s in shares if any(s.values())):
        # the caller's directory and work root: its import-path plugins import, and an installed copy's workers
        # write where it does (never into site-packages)
        env = {**os.environ, "METABENCH_HOME": str(WORK_ROOT)}
        if suite.grid.devices[0].startswith("cuda") and "CUDA_VISIBLE_DEVICES" not in env:
            env["CUDA_VISIBLE_DEVICES"] = str(i)  # one GPU per worker
        processes.append(subprocess.Popen(_worker_command(suite_path, options, uri, share), cwd=Path.cwd(),
                                          env=env))
    for process in processes:
        process.wait()
    return [failure for i, p in enumerate(processes) if (failure := _exit_failure(i, p)) is not None]


def run_workers(suite_path: str, suite: Suite, options: TuneOptions, uri: str) -> list[str]:
    """Every study run up to its budget, here or by ``workers`` processes. Returns the problems that make the
    command fail: a study short of its budget (its timeout aside) and, unless its trials were retried to the budget
    anyway, a worker that died."""
    # the storage is opened (a bad URL refused) and every study created before anything is written to MLflow and
    # before workers race to create them
    studies = {spec.display: open_study(suite, options, spec.display) for spec in suite.learners}
    client = tracking.client_for(uri)
    experiment = tracking.experiment_id(client, f"{suite.suite}.tuning")
    study_parents(suite, options, client, experiment)  # created once, here
    try:
        return _run_studies(suite_path, suite, options, uri, studies)
    finally:  # the trial runs of killed workers end FAILED/interrupted, not RUNNING (a study's own run stays open)
        tracking.close_orphaned(client, experiment, role=t.ROLE_TRIAL)


def _run_studies(suite_path: str, suite: Suite, options: TuneOptions, uri: str, studies: dict[str, optuna.Study]
                 ) -> list[str]:
    total = budget(suite, options)
    if options.workers == 1:
        optimise(suite, options, uri)
        return shortfalls(suite, options, studies, [])
    failures = _start_workers(suite_path, suite, options, uri,
                              {label: remaining(study, total) for label, study in studies.items()})
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


def best_suite_documents(suite_text: str, suite: Suite, options: TuneOptions) -> list[dict]:
    """The suite file's document of ``suite``, once per learner, with that learner's best values: what `bench run`
    evaluates (suite name ``<suite>_tuned``)."""
    raw = next(d for d in yaml_documents(suite_text, "suite file") if d.get("suite") == suite.suite)
    documents = []
    for spec in suite.learners:
        label = spec.display
        study = open_study(suite, options, label)
        best = study.best_trials[0] if len(suite.search.objectives) > 1 else study.best_trial
        document = {k: v for k, v in raw.items() if k != "search"}
        document["suite"] = f"{suite.suite}_tuned"
        learner = {"name": spec.name, "label": label,
                   "config": {**spec.config, **options_in("learner", best.params)}}
        document["learners"] = [learner]
        for section in ("training", "backbone"):
            values = options_in(section, best.params)
            if values:
                document[section] = {**raw.get(section, {}), **values}
        documents.append(document)
    return documents


def write_best(path: Path, documents: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("# the best configuration of each learner found by `bench tune`: run it with `bench run`\n"
            + yaml.safe_dump_all(documents, sort_keys=False))
    # a temporary file of this invocation's own (two invocations of one study write the same path), then an atomic
    # rename: never a half-written file. (Not mkstemp: its file is private to its owner, best.yaml is not.)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
