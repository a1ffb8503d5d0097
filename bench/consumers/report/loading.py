"""What a report is built from: the runs of the suite *as it stands now*, read from MLflow through one client."""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bench.core import metrics as m
from bench.core import tags as t
from bench.run.test_time import COLUMNS, SCORES_FILE
from bench.spec.conditions import cell_axes, settings_between_learners
from bench.spec.suite import ABSENT, Suite, suites_from_text
from bench.store import tracking
from meta_bench.algorithms import LEARNERS
from meta_bench.algorithms.base import algorithm_of


_NO_SCORES = pd.DataFrame({"score": pd.Series(dtype=float), "diverged": pd.Series(dtype=bool)},
                          index=pd.Index([], name="episode"))


@dataclass
class Runs:
    """The runs of current cells (finished, problems) have a column per axis, from their cell, and ``definition``:
    the cell's configuration hash with the seed set aside, which only runs that differ in the seed alone share."""

    finished: pd.DataFrame  # one row per current cell: the run that stands for it (tracking.standing_run)
    problems: pd.DataFrame  # current cells with no finished run: their latest attempt
    other_definitions: pd.DataFrame  # runs of this experiment that belong to no cell of the suite as it stands
    episodes: pd.DataFrame  # per-episode test scores of the finished runs: run_id, episode, score, diverged
    curves: pd.DataFrame  # validation scores over meta-iterations: run_id, iteration, val_score
    axes: list[str]  # n_way, k_shot, device, seed, the swept options, then the settings the suite's documents differ in
    learners: list[str]  # labels in the suite's order
    resolved: dict[str, dict]  # config hash -> the cell's resolved configuration (current definitions)
    header: dict
    score: str  # a key of metrics.SCORES: the score every cell of the suite is measured by
    # every test condition's per-episode scores, whole adaptation curves (runs whose suite names test conditions):
    # run_id, test_k_shot, test_steps, episode, score, diverged
    condition_scores: pd.DataFrame = field(default_factory=pd.DataFrame)
    # axis -> its values in the suite's order (the first listed is an ablation's baseline unless report.baselines
    # names another)
    levels: dict[str, list[str]] = field(default_factory=dict)
    # run id -> its diverged primary test episodes (counted before exclude_diverged leaves them out of ``episodes``)
    diverged_primary: pd.Series = field(default_factory=lambda: pd.Series(dtype=int))
    excluded_diverged: bool = False
    _by_run: dict | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def metric(self) -> m.Metric:
        return m.SCORES[self.score]

    def scores_of(self, run_id: str) -> pd.DataFrame:
        """One run's test scores by episode id (score, diverged)."""
        if self._by_run is None:
            self._by_run = {key: part.set_index("episode")[["score", "diverged"]]
                            for key, part in self.episodes.groupby("run_id", sort=False)}
        return self._by_run.get(run_id, _NO_SCORES)  # every episode left out (diverged and excluded)

    @property
    def conditions(self) -> list[str]:
        """Axes other than the seed: what a comparison holds fixed."""
        return [a for a in self.axes if a != "seed"]

    def varying(self, exclude: tuple[str, ...] = ()) -> list[str]:
        """Condition axes with more than one value among the finished runs."""
        f = self.finished
        return [a for a in self.conditions if a not in exclude and f[a][f[a] != ABSENT].nunique() > 1]


def first_seeds(runs: Runs, seeds: int) -> Runs:
    """``runs`` as they stood with seeds 0..seeds-1 alone: a sequential design's look (its later seeds left out of
    every table and test)."""
    finished = runs.finished[runs.finished["seed"].map(lambda seed: seed.isdigit() and int(seed) < seeds)]
    kept = set(finished["run_id"])
    return dataclasses.replace(
        runs, finished=finished.reset_index(drop=True),
        episodes=runs.episodes[runs.episodes["run_id"].isin(kept)],
        curves=runs.curves[runs.curves["run_id"].isin(kept)],
        condition_scores=(runs.condition_scores[runs.condition_scores["run_id"].isin(kept)]
                          if not runs.condition_scores.empty else runs.condition_scores),
        diverged_primary=runs.diverged_primary[runs.diverged_primary.index.isin(kept)])


def _tag(frame: pd.DataFrame, name: str) -> pd.Series:
    column = f"tags.{name}"
    values = frame[column] if column in frame else pd.Series([None] * len(frame), index=frame.index)
    return values.fillna("")


def _metric(frame: pd.DataFrame, name: str) -> pd.Series:
    column = f"metrics.{name}"
    return frame[column].astype(float) if column in frame else pd.Series([float("nan")] * len(frame), index=frame.index)


def suite_artifact(client: MlflowClient, experiment: str | None, name: str) -> str | None:
    """Text of artifact ``name`` of the latest suite invocation (None where there is none)."""
    parents = [] if experiment is None else client.search_runs(
        [experiment], filter_string=t.matching({t.ROLE: t.ROLE_SUITE}), order_by=["start_time DESC"], max_results=1)
    if not parents:
        return None
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(parents[0].info.run_id, name, folder)
        except (MlflowException, OSError):  # an older invocation that did not log it
            return None
        return Path(path).read_text(encoding="utf-8")


def logged_suites(client: MlflowClient, name: str) -> list[Suite]:
    """The suite definition the latest invocation logged (the report's "as it stands now" when given a name)."""
    text = suite_artifact(client, tracking.experiment_id(client, name, create=False), "suite.yaml")
    if text is None:
        raise LookupError(f"no suite file was logged with the runs of {name!r}: report from the suite YAML instead")
    suites = [s for s in suites_from_text(text, f"suite file logged for {name}", notes=[]) if s.suite == name]
    if not suites:
        raise LookupError(f"the suite file logged for {name!r} defines no suite of that name")
    return suites


def _with_cell_axes(frame: pd.DataFrame, by_cell: dict[str, dict[str, str]]) -> pd.DataFrame:
    """The runs of current cells with their cell's axes and definition (other runs keep their tags)."""
    frame = frame.assign(definition="")
    current = frame["config_hash"].isin(by_cell)
    if current.any():
        derived = pd.DataFrame([by_cell[h] for h in frame.loc[current, "config_hash"]], index=frame.index[current])
        frame.loc[current, list(derived.columns)] = derived
    return frame


# where a run's meta-training was made (bench.core.tags.TRAINED_AS), a column each: column -> its tag, and the column
# it repeats for a run that trained itself (so every check of code and environment reads the training's as well)
_TRAINING = {"trained_code_identity": (t.TRAINED_CODE_IDENTITY, "code_identity"),
             "trained_commit": (t.TRAINED_COMMIT, "git_commit"),
             "trained_environment": (t.TRAINED_ENVIRONMENT, "environment")}


def _frame(raw: pd.DataFrame, axes: list[str]) -> tuple[pd.DataFrame, str]:
    """One row per run, its tags and metrics as columns; and what the runs are scored by. ``learner`` is the label,
    ``registered`` the registered name and ``algorithm`` the algorithm the registry recorded for it."""
    frame = pd.DataFrame({"run_id": raw["run_id"], "start_time": raw["start_time"], "status": raw["status"]})
    for column, tag in (("outcome", t.OUTCOME), ("config_hash", t.CONFIG_HASH), ("code_identity", t.CODE_IDENTITY),
                        ("eval_fingerprint", t.EVAL_FINGERPRINT), ("learner", t.LABEL), ("registered", t.LEARNER),
                        ("algorithm", t.ALGORITHM), ("device_name", t.DEVICE_NAME), ("git_commit", t.GIT_COMMIT),
                        ("torch_version", t.TORCH_VERSION), ("score_name", t.SCORE), ("error", t.ERROR),
                        ("skip_reason", t.SKIP_REASON), ("task_batching", t.ran("task_batching")),
                        ("environment", t.ENVIRONMENT), ("origin", t.ORIGIN), ("dataset_name", t.DATASET),
                        ("data_identity", t.DATA_IDENTITY), ("dataset_origin", t.DATASET_ORIGIN),
                        ("trained_by", t.TRAINED_BY)):
        frame[column] = _tag(raw, tag)
    for column, (tag, own) in _TRAINING.items():  # a run that trained itself: its own
        frame[column] = _tag(raw, tag).mask(frame["trained_by"] == "", frame[own])
    # runs of versions that did not record it: what the registry says (a name no longer registered: itself)
    recorded = frame["registered"].map(lambda name: algorithm_of(name) if name in LEARNERS else name)
    frame["algorithm"] = frame["algorithm"].mask(frame["algorithm"] == "", recorded)
    for axis in axes:
        frame[axis] = _tag(raw, t.axis(axis)).replace("", ABSENT)
    score = next((name for name in frame["score_name"].unique() if name in m.SCORES), m.DEFAULT_SCORE)
    times = tuple(m.time_in(phase) for phase in m.TIME_PHASES) + (m.STORE_SECONDS, m.CELL_SECONDS)
    for name in (m.SCORES[score].name, m.ci95(score)) + tuple(metric.name for metric in m.COSTS) + times:
        frame[name] = _metric(raw, name).values
    return frame, score


@dataclass
class Stored:
    """What a report reads from the store, read once: the experiment's cell runs (MLflow ``Run`` objects, or anything
    with their ``info`` and ``data``), the artifacts of the runs that stand for cells, and the dataset's statistics.
    ``assemble`` builds the report's ``Runs`` from it alone (the calibration builds one in memory)."""

    runs: list
    episodes: dict[str, pd.DataFrame]  # run id -> its test_episodes.csv (episode, <score>)
    conditions: dict[str, pd.DataFrame]  # run id -> its test_scores.csv (bench.run.test_time.COLUMNS)
    curves: list[dict]  # run_id, iteration, val_score
    dataset: dict
    suite_run: dict = field(default_factory=dict)  # what the header names: unused by the statistics


def standing_runs(runs: list, config_hashes: set[str]) -> dict[str, object]:
    """Config hash -> the run that stands for that cell (``tracking.standing_run``: the rule reuse follows too)."""
    by_cell: dict[str, list] = {}
    for run in runs:
        key = run.data.tags.get(t.CONFIG_HASH, "")
        if key in config_hashes and run.data.tags.get(t.EVAL_FINGERPRINT):
            by_cell.setdefault(key, []).append(run)
    standing = {key: tracking.standing_run(found) for key, found in by_cell.items()}
    return {key: run for key, run in standing.items() if run is not None}


def load_runs(client: MlflowClient, suites: list[Suite]) -> Runs:
    name = suites[0].suite
    experiment = tracking.experiment_id(client, name, create=False)
    if experiment is None:
        known = ", ".join(e.name for e in client.search_experiments() if t.CLAIM_RUN_ID not in e.tags) or "none"
        raise LookupError(f"no MLflow experiment named {name!r} at {client.tracking_uri}; known experiments: {known}")
    runs = tracking.child_runs(client, experiment)
    if not runs:
        raise LookupError(f"experiment {name!r} at {client.tracking_uri} holds no cell runs yet: run the suite first")
    standing = standing_runs(runs, {cell.config_hash for suite in suites for cell in suite.cells})
    episodes, conditions, curves = {}, {}, []
    with tempfile.TemporaryDirectory() as folder:
        for run in standing.values():
            run_id = run.info.run_id
            episodes[run_id] = pd.read_csv(client.download_artifacts(run_id, "test_episodes.csv",
                                                                     str(Path(folder) / run_id)))
            if SCORES_FILE in {a.path for a in client.list_artifacts(run_id)}:
                path = client.download_artifacts(run_id, SCORES_FILE, str(Path(folder) / run_id))
                conditions[run_id] = pd.read_csv(path, dtype={"test_steps": str})
            curves += [{"run_id": run_id, "iteration": point.step, "val_score": point.value}
                       for point in client.get_metric_history(run_id, m.VAL_SCORE)]
    logged = suite_artifact(client, experiment, "dataset.json")
    dataset = json.loads(logged) if logged else {"note": "dataset statistics not logged with these runs"}
    return assemble(Stored(runs, episodes, conditions, curves, dataset), suites)


def _primary_flags(scores: pd.DataFrame, conditions: pd.DataFrame | None, cell) -> pd.Series:
    """Whether each primary test episode diverged: the flags the run recorded under its primary condition (first
    test K, most steps); a run that recorded none (an older harness) has its non-finite scores flagged."""
    if conditions is not None and not conditions.empty:
        steps = ABSENT if cell.test_steps == (None,) else str(max(cell.test_steps))
        primary = conditions[(conditions["test_k_shot"] == cell.test_k_shots[0]) & (conditions["test_steps"] == steps)]
        flags = dict(zip(primary["episode"], primary["diverged"].astype(bool)))
        if len(flags) == len(scores):
            return scores["episode"].map(flags)
    return ~np.isfinite(scores["score"].to_numpy(dtype=float))


def _episodes(stored: Stored, finished: pd.DataFrame, cells: dict) -> pd.DataFrame:
    """Every standing run's primary test scores: run_id, episode, score, diverged."""
    parts = []
    for run_id, config_hash in zip(finished["run_id"], finished["config_hash"]):
        scores = stored.episodes[run_id]
        scores = scores.rename(columns={scores.columns[1]: "score"})[["episode", "score"]]
        flags = _primary_flags(scores, stored.conditions.get(run_id), cells[config_hash])
        parts.append(scores.assign(run_id=run_id, diverged=np.asarray(flags, dtype=bool)))
    episodes = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["episode", "score", "run_id", "diverged"])
    return episodes.astype({"diverged": bool})


def assemble(stored: Stored, suites: list[Suite]) -> Runs:
    """The report's runs of ``suites`` (its current cells) from what the store holds."""
    raw = pd.DataFrame([{"run_id": r.info.run_id, "start_time": r.info.start_time, "status": r.info.status,
                         **{f"tags.{k}": v for k, v in r.data.tags.items()},
                         **{f"metrics.{k}": v for k, v in r.data.metrics.items()}} for r in stored.runs])
    cells = [cell for suite in suites for cell in suite.cells]
    axes, by_cell = cell_axes(cells)
    frame, score = _frame(raw.sort_values(["start_time", "run_id"]), axes)
    frame = _with_cell_axes(frame, by_cell)
    current = frame["config_hash"].isin(by_cell) & (frame["eval_fingerprint"] != "")
    standing = {run.info.run_id for run in standing_runs(stored.runs, set(by_cell)).values()}
    finished = frame[frame["run_id"].isin(standing)].reset_index(drop=True)
    problems = frame[current & ~frame["config_hash"].isin(finished["config_hash"])].groupby("config_hash").tail(1)
    conditions = [part.assign(run_id=run_id) for run_id, part in stored.conditions.items() if run_id in standing]
    learners = list(dict.fromkeys(spec.display for s in suites for spec in s.learners))
    levels = {axis: list(dict.fromkeys(v[axis] for v in by_cell.values() if v[axis] != ABSENT)) for axis in axes}
    episodes = _episodes(stored, finished, {c.config_hash: c for c in cells})
    diverged = episodes.groupby("run_id")["diverged"].sum().astype(int)
    exclude = suites[0].evaluation.exclude_diverged
    if exclude:  # here, once, for every table and verdict of the report's own view
        episodes = episodes[~episodes["diverged"]]
    return Runs(finished, problems.reset_index(drop=True), frame[~current].reset_index(drop=True), episodes,
                pd.DataFrame([c for c in stored.curves if c["run_id"] in standing],
                             columns=["run_id", "iteration", "val_score"]), axes, learners,
                {c.config_hash: c.resolved() for c in cells},
                _header(suites[0].suite, finished, settings_between_learners(cells), stored.dataset), score,
                pd.concat(conditions, ignore_index=True) if conditions else pd.DataFrame(columns=[
                    "run_id", *COLUMNS]), levels, diverged, exclude)


def _commit(commit: str) -> str:
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def _made_by(identity: str, commit: str) -> str:
    return f"code {identity or 'not recorded'} at commit {_commit(commit) or 'not recorded'}"


def _code_versions(finished: pd.DataFrame, mixed: list[str]) -> list[str]:
    """Which code made each learner's runs, where the runs of the report were made (trained or tested) at more than
    one commit or a learner's by more than one code identity (else empty): the learners compared may have been run
    by different code."""
    if len({*finished["git_commit"], *finished["trained_commit"]}) <= 1 and not mixed:
        return []
    made = finished.groupby(["learner", "code_identity", "git_commit", "trained_code_identity", "trained_commit"],
                            sort=False).size()
    lines = []
    for (learner, identity, commit, trained, at), runs in made.items():
        training = "" if (trained, at) == (identity, commit) else f", trained by {_made_by(trained, at)}"
        lines.append(f"{learner}: {_made_by(identity, commit)}{training} ({runs} run{'s' * (runs > 1)})")
    return lines


def _environments(finished: pd.DataFrame) -> list[str]:
    """Where each learner's runs were timed, where the report's runs come from more than one execution environment
    (executor, threads, CPU and device model; else empty): their times and memory are not comparable as they are.
    A run tested on another's training carries that run's training times and memory, timed where it was trained."""
    if len({*finished["environment"], *finished["trained_environment"]}) <= 1:
        return []
    shown = finished[["learner", "environment", "trained_environment"]].replace("", "not recorded")
    tested, trained = shown["environment"], shown["trained_environment"]
    where = tested.where(tested == trained, "trained in " + trained + ", tested in " + tested)
    made = shown.assign(environment=where).groupby(["learner", "environment"], sort=False).size()
    return [f"{learner}: {environment} ({runs} run{'s' * (runs > 1)})" for (learner, environment), runs in made.items()]


def _header(suite: str, finished: pd.DataFrame, between: list[str], dataset: dict) -> dict:
    mixed = [learner for learner, part in finished.groupby("learner")
             if len({*part["code_identity"], *part["trained_code_identity"]}) > 1]
    return {"suite": suite, "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
            "git commits": ", ".join(sorted(set(finished["git_commit"]))) or "-",
            "torch": ", ".join(sorted(set(finished["torch_version"]))) or "-",
            "devices": ", ".join(sorted({f"{d} ({n})" for d, n in zip(finished["device"], finished["device_name"])}))
            or "-",
            "data identities": sorted(set(finished["data_identity"]) - {""}),
            "mixed code": mixed, "code versions": _code_versions(finished, mixed), "settings between learners": between,
            "environments": _environments(finished),
            "plugins": [f"{learner}: {origin}" for learner, origin in
                        dict(zip(finished["learner"], finished["origin"])).items() if origin not in ("", "built in")],
            "plugin datasets": [f"{name}: {origin}" for name, origin in dict(zip(
                finished["dataset_name"], finished["dataset_origin"])).items() if origin not in ("", "built in")],
            "dataset": dataset}
