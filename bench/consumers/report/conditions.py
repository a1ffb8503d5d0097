"""The report's test conditions (suites whose evaluation names test K or step lists): every condition's score across
seeds, the adaptation curves, the diverged episodes, and the published results that name a test condition."""
from __future__ import annotations

import dataclasses

import pandas as pd

from bench.consumers.report.loading import Runs
from bench.consumers.report import reproduction
from bench.consumers.report.statistics import aligned, crossed_test, mean_of_every
from bench.core import metrics as m
from bench.spec import published as papers
from bench.spec.suite import ABSENT, EvaluationSpec, ReportOptions

LISTED_DIVERGED = 100  # the diverged-episode table lists this many, then says how many more


def per_run(runs: Runs, evaluation: EvaluationSpec) -> pd.DataFrame:
    """One row per finished run, test K and test step count (every step of the curves): the run's mean score
    (diverged episodes left out only where the suite says so), its mean without the diverged episodes whatever the
    suite says (shown beside, never instead), and its count of diverged episodes."""
    c = runs.condition_scores
    if c.empty:
        return pd.DataFrame()
    key = ["run_id", "test_k_shot", "test_steps"]
    flags = c["diverged"].astype(bool)
    without = mean_of_every(c[~flags].groupby(key, sort=False)["score"])
    means = without if evaluation.exclude_diverged else mean_of_every(c.groupby(key, sort=False)["score"])
    diverged = c.groupby(key, sort=False)["diverged"].sum()
    frame = pd.DataFrame({"score": means, "without_diverged": without, "diverged": diverged}).reset_index()
    info = runs.finished[["run_id", "learner", "definition", "config_hash", *runs.axes]]
    return frame.merge(info, on="run_id")


def _listed(frame: pd.DataFrame, evaluation: EvaluationSpec) -> pd.DataFrame:
    """The conditions the suite names: its step counts (and "-", learners that adapt in no steps)."""
    listed = {ABSENT} | {str(s) for s in (evaluation.steps_list or ())}
    return frame[frame["test_steps"].isin(listed)]


def table(runs: Runs, under: Runs) -> pd.DataFrame:
    """Each learner and cell definition under each named test condition (``under``: the runs with the test
    conditions as axes): the mean score with its 95% interval over seeds and test episodes (both samples), how much of
    that interval the test-episode draw makes, and the diverged episodes (kept or left out as the suite says)."""
    rows = []
    clean = _without_diverged(under)
    c = runs.condition_scores
    flagged = _condition_ids(c[c["diverged"].astype(bool)]).value_counts()
    for _, part in under.finished.groupby("definition", sort=False):
        first = part.iloc[0]
        kept, without = aligned(under, [part]), aligned(clean, [part])
        test, clean_test = crossed_test(kept.tables[0]), crossed_test(without.tables[0])
        rows.append({"learner": first["learner"], **{a: first[a] for a in runs.conditions},
                     "test K": first["test_k_shot"], "test steps": first["test_steps"], "seeds": len(part),
                     f"{runs.metric.label} (mean ± 95% CI, seeds and episodes)": m.format_score(runs.score, test.mean,
                                                                                          test.half_width),
                     "from the test-episode draw": reproduction.share(test.episode_share),
                     "diverged episodes": int(sum(flagged.get(run_id, 0) for run_id in part["run_id"])),
                     "without the diverged": m.format_score(runs.score, clean_test.mean, clean_test.half_width)})
    return pd.DataFrame(rows)


def _condition_ids(scores: pd.DataFrame) -> pd.Series:
    """The id of a run under one test condition: ``<run id>|k<K>|s<steps>``."""
    return scores["run_id"] + "|k" + scores["test_k_shot"].astype(str) + "|s" + scores["test_steps"]


def as_axes(runs: Runs, evaluation: EvaluationSpec) -> Runs:
    """The runs with the named test conditions as two more axes (``test_k_shot``, ``test_steps``): one row per
    finished run and condition, under the id ``<run id>|k<K>|s<S>``, with that condition's per-episode scores
    (diverged episodes left out where the suite says so) and its primary metrics replaced by the condition's mean.
    The pairwise comparisons then run on it unchanged: learners pair only under the same test condition (a learner
    that adapts in no steps, "-", pairs under every step count), and Holm's correction covers every condition."""
    c = _listed(runs.condition_scores, evaluation)
    if evaluation.exclude_diverged:
        c = c[~c["diverged"].astype(bool)]
    c = c.assign(id=_condition_ids(c))
    keys = c[["run_id", "id", "test_k_shot", "test_steps"]].drop_duplicates("id")
    finished = runs.finished.merge(keys, on="run_id").assign(
        run_id=lambda f: f["id"], test_k_shot=lambda f: f["test_k_shot"].astype(str)).drop(columns="id")
    means = mean_of_every(c.groupby("id")["score"])
    finished[m.SCORES[runs.score].name] = finished["run_id"].map(means)
    # test episodes of another K are other episodes: the fingerprint says which K; and a run under another condition
    # is another definition (runs group by definition, seeds aside)
    finished["eval_fingerprint"] = finished["eval_fingerprint"] + "|k" + finished["test_k_shot"]
    finished["definition"] = finished["definition"] + "|k" + finished["test_k_shot"] + "|s" + finished["test_steps"]
    # the primary condition (first test K, most steps) is the report's own view: compared there, once
    first_k = str(evaluation.k_shot[0]) if evaluation.k_shot else finished["k_shot"]
    most = str(max(evaluation.steps_list)) if evaluation.steps_list else ABSENT
    finished["primary"] = (finished["test_k_shot"] == first_k) & finished["test_steps"].isin([most, ABSENT])
    episodes = c[["id", "episode", "score", "diverged"]].rename(columns={"id": "run_id"})
    episodes["diverged"] = episodes["diverged"].astype(bool)
    levels = {**runs.levels, "test_k_shot": [str(k) for k in evaluation.k_shot] or list(dict.fromkeys(
        finished["test_k_shot"])), "test_steps": [str(s) for s in evaluation.steps_list or ()]}
    return dataclasses.replace(runs, finished=finished, episodes=episodes,
                               axes=[*runs.axes, "test_k_shot", "test_steps"], levels=levels)


def curves(runs: Runs, evaluation: EvaluationSpec) -> pd.DataFrame:
    """Per run, test K and step 0..max: the run's mean score (the adaptation curve figure's points)."""
    frame = per_run(runs, evaluation)
    if frame.empty:
        return frame
    frame = frame[frame["test_steps"] != ABSENT]
    return frame.assign(step=frame["test_steps"].astype(int))


def diverged_episodes(runs: Runs, evaluation: EvaluationSpec) -> tuple[pd.DataFrame, int]:
    """The diverged episodes of the named conditions (at most ``LISTED_DIVERGED``), and how many there are."""
    c = runs.condition_scores
    if c.empty:
        return pd.DataFrame(), 0
    flagged = _listed(c[c["diverged"].astype(bool)], evaluation)
    info = runs.finished[["run_id", "learner", "seed"]]
    listed = flagged.merge(info, on="run_id")[["learner", "seed", "test_k_shot", "test_steps", "episode", "score"]]
    return listed.head(LISTED_DIVERGED), len(listed)


def _without_diverged(runs: Runs) -> Runs:
    return dataclasses.replace(runs, episodes=runs.episodes[~runs.episodes["diverged"].astype(bool)])


def against_published(runs: Runs, under: Runs, options: ReportOptions) -> pd.DataFrame:
    """Published results that name a test condition, against the same condition measured (``under``: the runs with
    the test conditions as axes), by the equivalence rule (bench.consumers.report.reproduction)."""
    statistics = runs.header["dataset"]
    clean = _without_diverged(under)
    rows = []
    for label, name in options.published.items():
        mine = runs.finished[runs.finished["learner"] == label]
        for definition, part in mine.groupby("definition", sort=False):
            first = part.iloc[0]
            for paper in papers.under_conditions(name, int(first["n_way"]), int(first["k_shot"])):
                here = under.finished[under.finished["definition"]
                                      == f"{definition}|k{paper.test_k_shot}|s{paper.test_steps}"]
                why = papers.differences(paper, runs.resolved[first["config_hash"]], statistics.get("dataset", ""),
                                         statistics)
                if here.empty:
                    why = why + [f"test K {paper.test_k_shot} after {paper.test_steps} steps was not measured"]
                kept, without = (None, None) if here.empty else (aligned(under, [here]), aligned(clean, [here]))
                rows.append({"learner": label, "train K": int(first["k_shot"]), "test K": paper.test_k_shot,
                             "test steps": paper.test_steps,
                             **reproduction.columns(kept, paper, options, why, without)})
    return pd.DataFrame(rows)
