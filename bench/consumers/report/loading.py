"""What a report is built from: the runs of the suite *as it stands now*, read from MLflow through one client."""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class Runs:
    """The runs of current cells (finished, problems) have a column per axis, from their cell, and ``definition``:
    the cell's configuration hash with the seed set aside, which only runs that differ in the seed alone share."""

    finished: pd.DataFrame  # one row per current cell: the latest finished run of its config hash
    problems: pd.DataFrame  # current cells with no finished run: their latest attempt
    other_definitions: pd.DataFrame  # runs of this experiment that belong to no cell of the suite as it stands
    episodes: pd.DataFrame  # per-episode test scores of the finished runs: run_id, episode, score
    curves: pd.DataFrame  # validation scores over meta-iterations: run_id, iteration, val_score
    axes: list[str]  # n_way, k_shot, device, seed, the swept options, then the settings the suite's documents differ in
    learners: list[str]  # labels in the suite's order
    resolved: dict[str, dict]  # config hash -> the cell's resolved configuration (current definitions)
    header: dict
    score: str  # "accuracy" or "mse"
    # every test condition's per-episode scores, whole adaptation curves (runs whose suite names test conditions):
    # run_id, test_k_shot, test_steps, episode, score, diverged
    condition_scores: pd.DataFrame = field(default_factory=pd.DataFrame)
    # axis -> its values in the suite's order (the first listed is an ablation's baseline unless report.baselines
    # names another)
    levels: dict[str, list[str]] = field(default_factory=dict)

    @property
    def conditions(self) -> list[str]:
        """Axes other than the seed: what a comparison holds fixed."""
        return [a for a in self.axes if a != "seed"]

    def varying(self, exclude: tuple[str, ...] = ()) -> list[str]:
        """Condition axes with more than one value among the finished runs."""
        f = self.finished
        return [a for a in self.conditions if a not in exclude and f[a][f[a] != ABSENT].nunique() > 1]


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
                        ("dataset_origin", t.DATASET_ORIGIN)):
        frame[column] = _tag(raw, tag)
    # runs of versions that did not record it: what the registry says (a name no longer registered: itself)
    recorded = frame["registered"].map(lambda name: algorithm_of(name) if name in LEARNERS else name)
    frame["algorithm"] = frame["algorithm"].mask(frame["algorithm"] == "", recorded)
    for axis in axes:
        frame[axis] = _tag(raw, t.axis(axis)).replace("", ABSENT)
    score = "mse" if (frame["score_name"] == "mse").any() else "accuracy"
    for name in (m.SCORES[score].name, m.ci95(score)) + tuple(metric.name for metric in m.COSTS):
        frame[name] = _metric(raw, name).values
    return frame, score


def load_runs(client: MlflowClient, suites: list[Suite]) -> Runs:
    name = suites[0].suite
    experiment = tracking.experiment_id(client, name, create=False)
    if experiment is None:
        known = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise LookupError(f"no MLflow experiment named {name!r} at {client.tracking_uri}; known experiments: {known}")
    raw = pd.DataFrame([{"run_id": r.info.run_id, "start_time": r.info.start_time, "status": r.info.status,
                         **{f"tags.{k}": v for k, v in r.data.tags.items()},
                         **{f"metrics.{k}": v for k, v in r.data.metrics.items()}}
                        for r in tracking.child_runs(client, experiment)])
    if raw.empty:
        raise LookupError(f"experiment {name!r} at {client.tracking_uri} holds no cell runs yet: run the suite first")
    cells = [cell for suite in suites for cell in suite.cells]
    axes, by_cell = cell_axes(cells)
    frame, score = _frame(raw.sort_values("start_time"), axes)
    frame = _with_cell_axes(frame, by_cell)
    current = frame["config_hash"].isin(by_cell) & (frame["eval_fingerprint"] != "")
    done = frame[current & (frame["status"] == tracking.FINISHED) & (frame["outcome"] == t.OUTCOME_FINISHED)]
    finished = done.groupby("config_hash").tail(1).reset_index(drop=True)
    problems = frame[current & ~frame["config_hash"].isin(finished["config_hash"])].groupby("config_hash").tail(1)
    episodes, curves, conditions = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for row in finished.itertuples():
            path = client.download_artifacts(row.run_id, "test_episodes.csv", str(Path(folder) / row.run_id))
            scores = pd.read_csv(path)
            episodes.append(scores.rename(columns={scores.columns[1]: "score"}).assign(run_id=row.run_id))
            if SCORES_FILE in {a.path for a in client.list_artifacts(row.run_id)}:
                path = client.download_artifacts(row.run_id, SCORES_FILE, str(Path(folder) / row.run_id))
                conditions.append(pd.read_csv(path, dtype={"test_steps": str}).assign(run_id=row.run_id))
            for point in client.get_metric_history(row.run_id, m.VAL_SCORE):
                curves.append({"run_id": row.run_id, "iteration": point.step, "val_score": point.value})
    episodes = pd.concat(episodes, ignore_index=True) if episodes else pd.DataFrame(columns=["episode", "score",
                                                                                            "run_id"])
    learners = list(dict.fromkeys(spec.display for s in suites for spec in s.learners))
    levels = {axis: list(dict.fromkeys(v[axis] for v in by_cell.values() if v[axis] != ABSENT)) for axis in axes}
    return Runs(finished, problems.reset_index(drop=True), frame[~current].reset_index(drop=True), episodes,
                pd.DataFrame(curves, columns=["run_id", "iteration", "val_score"]), axes, learners,
                {c.config_hash: c.resolved() for c in cells},
                _header(client, experiment, name, finished, settings_between_learners(cells)), score,
                pd.concat(conditions, ignore_index=True) if conditions else pd.DataFrame(columns=[
                    "run_id", *COLUMNS]), levels)


def _commit(commit: str) -> str:
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def _code_versions(finished: pd.DataFrame, mixed: list[str]) -> list[str]:
    """Which code made each learner's runs, where the runs of the report were made at more than one commit or a
    learner's by more than one code identity (else empty): the learners compared may have been run by different
    code."""
    if finished["git_commit"].nunique() <= 1 and not mixed:
        return []
    made = finished.groupby(["learner", "code_identity", "git_commit"], sort=False).size()
    return [f"{learner}: code {identity} at commit {_commit(commit)} ({runs} run{'s' * (runs > 1)})"
            for (learner, identity, commit), runs in made.items()]


def _environments(finished: pd.DataFrame) -> list[str]:
    """Where each learner's runs were timed, where the report's runs come from more than one execution environment
    (executor, threads, CPU and device model; else empty): their times and memory are not comparable as they are."""
    if finished["environment"].nunique() <= 1:
        return []
    made = finished.assign(environment=finished["environment"].replace("", "not recorded")).groupby(
        ["learner", "environment"], sort=False).size()
    return [f"{learner}: {environment} ({runs} run{'s' * (runs > 1)})" for (learner, environment), runs in made.items()]


def _header(client: MlflowClient, experiment: str, suite: str, finished: pd.DataFrame, between: list[str]) -> dict:
    logged = suite_artifact(client, experiment, "dataset.json")
    mixed = [learner for learner, part in finished.groupby("learner") if part["code_identity"].nunique() > 1]
    return {"suite": suite, "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
            "git commits": ", ".join(sorted(set(finished["git_commit"]))) or "-",
            "torch": ", ".join(sorted(set(finished["torch_version"]))) or "-",
            "devices": ", ".join(sorted({f"{d} ({n})" for d, n in zip(finished["device"], finished["device_name"])}))
            or "-",
            "mixed code": mixed, "code versions": _code_versions(finished, mixed), "settings between learners": between,
            "environments": _environments(finished),
            "plugins": [f"{learner}: {origin}" for learner, origin in
                        dict(zip(finished["learner"], finished["origin"])).items() if origin not in ("", "built in")],
            "plugin datasets": [f"{name}: {origin}" for name, origin in dict(zip(
                finished["dataset_name"], finished["dataset_origin"])).items() if origin not in ("", "built in")],
            "dataset": json.loads(logged) if logged else {"note": "dataset statistics not logged with these runs"}}
