"""The report's test conditions (suites whose evaluation names test K or step lists): every condition's score across
seeds, the adaptation curves, the diverged episodes, and the published results that name a test condition."""
from __future__ import annotations

import dataclasses
import math

import pandas as pd

from bench.consumers.report.loading import Runs
from bench.consumers.report.statistics import mean_of_every, seed_interval
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


def table(runs: Runs, evaluation: EvaluationSpec) -> pd.DataFrame:
    """Each learner and cell definition under each named test condition: the mean over seeds of the per-seed means
    with its 95% t interval across seeds, and the diverged episodes summed over seeds."""
    frame = per_run(runs, evaluation)
    if frame.empty:
        return frame
    rows = []
    conditions = runs.conditions  # the cell's axes but the seed
    for (_, k_shot, steps), part in _listed(frame, evaluation).groupby(["definition", "test_k_shot", "test_steps"],
                                                                       sort=False):
        mean, half = seed_interval(list(part["score"]))
        clean, clean_half = seed_interval(list(part["without_diverged"]))
        first = part.iloc[0]
        rows.append({"learner": first["learner"], **{a: first[a] for a in conditions}, "test K": k_shot,
                     "test steps": steps, "seeds": len(part),
                     f"{runs.score} (mean ± 95% CI across seeds)": m.format_score(runs.score, mean, half),
                     "diverged episodes": int(part["diverged"].sum()),
                     "without the diverged": m.format_score(runs.score, clean, clean_half)})
    return pd.DataFrame(rows)


def as_axes(runs: Runs, evaluation: EvaluationSpec) -> Runs:
    """The runs with the named test conditions as two more axes (``test_k_shot``, ``test_steps``): one row per
    finished run and condition, under the id ``<run id>|k<K>|s<S>``, with that condition's per-episode scores
    (diverged episodes left out where the suite says so) and its primary metrics replaced by the condition's mean.
    The pairwise comparisons then run on it unchanged: learners pair only under the same test condition (a learner
    that adapts in no steps, "-", pairs under every step count), and Holm's correction covers every condition."""
    c = _listed(runs.condition_scores, evaluation)
    if evaluation.exclude_diverged:
        c = c[~c["diverged"].astype(bool)]
    c = c.assign(id=c["run_id"] + "|k" + c["test_k_shot"].astype(str) + "|s" + c["test_steps"])
    keys = c[["run_id", "id", "test_k_shot", "test_steps"]].drop_duplicates("id")
    finished = runs.finished.merge(keys, on="run_id").assign(
        run_id=lambda f: f["id"], test_k_shot=lambda f: f["test_k_shot"].astype(str)).drop(columns="id")
    means = mean_of_every(c.groupby("id")["score"])
    finished[m.SCORES[runs.score].name] = finished["run_id"].map(means)
    # test episodes of another K are other episodes: the fingerprint says which K; and a run under another condition
    # is another definition (runs group by definition, seeds aside)
    finished["eval_fingerprint"] = finished["eval_fingerprint"] + "|k" + finished["test_k_shot"]
    finished["definition"] = finished["definition"] + "|k" + finished["test_k_shot"] + "|s" + finished["test_steps"]
    episodes = c[["id", "episode", "score"]].rename(columns={"id": "run_id"})
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


def _standing(paper: papers.Published, per_seed: list[float], options: ReportOptions,
              why: list[str]) -> tuple[papers.Standing, str]:
    """The verdict on measured per-seed means against ``paper``, and the rule it follows, as text."""
    if paper.ci95 is None:
        return (papers.standing_without_interval(paper, per_seed, options.published_tolerance, why),
                papers.TOLERANCE_RULE.format(tolerance=options.published_tolerance))
    mean, half = seed_interval(per_seed) if per_seed else (math.nan, math.nan)
    return papers.standing(paper, mean, half, why), "the difference's 95% interval (both in quadrature) holds 0"


def against_published(runs: Runs, options: ReportOptions, evaluation: EvaluationSpec) -> pd.DataFrame:
    """Published results that name a test condition, against the same condition measured (across seeds)."""
    frame = per_run(runs, evaluation)
    if frame.empty:
        return frame
    statistics = runs.header["dataset"]
    rows = []
    for label, name in options.published.items():
        mine = frame[frame["learner"] == label]
        for definition, part in mine.groupby("definition", sort=False):
            first = part.iloc[0]
            for paper in papers.under_conditions(name, int(first["n_way"]), int(first["k_shot"])):
                here = part[(part["test_k_shot"] == paper.test_k_shot) & (part["test_steps"] == str(paper.test_steps))]
                why = papers.differences(paper, runs.resolved[first["config_hash"]], statistics.get("dataset", ""),
                                         statistics)
                if here.empty:
                    why = why + [f"test K {paper.test_k_shot} after {paper.test_steps} steps was not measured"]
                scale = 100 if paper.score == "accuracy" else 1
                per_seed, clean = list(here["score"] * scale), list(here["without_diverged"] * scale)
                verdict, rule = _standing(paper, per_seed, options, why)
                diverged = int(here["diverged"].sum())
                if diverged and not evaluation.exclude_diverged and not why:  # a mean that diverged episodes
                    # dominate tests nothing: no verdict on it; the verdict without them is given beside
                    cleaned, _ = _standing(paper, clean, options, why)
                    verdict = papers.Standing(verdict.difference, verdict.half_width, (
                        f"no verdict: {diverged} diverged episode(s) in the mean; without them "
                        f"{seed_interval(clean)[0]:.3f}: {cleaned.verdict}"))
                mean, half = seed_interval(per_seed) if per_seed else (math.nan, math.nan)
                rows.append({"learner": label, "train K": int(first["k_shot"]), "test K": paper.test_k_shot,
                             "test steps": paper.test_steps, "seeds": len(per_seed),
                             "measured": f"{_fixed(mean, '.3f')} ± {_fixed(half, '.3f')}" if math.isfinite(mean)
                             else "-", "published": f"{paper.value:g}",
                             "difference": _fixed(verdict.difference, "+.3f"),
                             "allowed": "-" if not math.isfinite(verdict.half_width)
                             else f"±{verdict.half_width:.3f}",
                             "diverged episodes": diverged, "verdict": verdict.verdict, "rule": rule,
                             "source": paper.citation})
    return pd.DataFrame(rows)


def _fixed(value: float, spec: str) -> str:
    """A number as ``spec`` formats it; "-" where it is not finite (a mean over a diverged episode is undefined)."""
    return format(value, spec) if math.isfinite(value) else "-"
