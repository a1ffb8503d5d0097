"""The report's tables, as data frames (also written as CSV)."""
from __future__ import annotations

import math

import pandas as pd

from bench.core import metrics as m
from bench.core import tags as t
from bench.spec import published as papers
from bench.consumers.report.loading import Runs
from bench.consumers.report.statistics import seed_interval
from bench.spec.suite import ReportOptions


def _ordered(runs: Runs, frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    order = {label: i for i, label in enumerate(runs.learners)}
    return frame.assign(_order=frame["learner"].map(order)).sort_values(["_order"] + by, kind="stable") \
        .drop(columns="_order").reset_index(drop=True)


def results(runs: Runs) -> pd.DataFrame:
    """One row per learner and condition: the score over seeds with its across-seed interval, and the costs. Only
    runs of one definition (differing in the seed alone) are averaged; their learner and conditions name it."""
    score = m.SCORES[runs.score]
    rows = []
    for _, part in runs.finished.groupby("definition", sort=False):
        part = part.sort_values("seed", key=lambda s: s.astype(int))
        first = part.iloc[0]
        mean, half = seed_interval(list(part[score.name]))
        if len(part) == 1:  # one training run: only the episode-level interval exists
            shown = m.format_score(runs.score, mean, part[m.ci95(runs.score)].iloc[0]) + " (1 seed: CI over episodes)"
        else:
            shown = m.format_score(runs.score, mean, half)
        row = {"learner": first["learner"], **{a: first[a] for a in runs.conditions}, "seeds": len(part),
               f"{score.label} (mean ± 95% CI across seeds)": shown,
               "per seed": ", ".join(score.format(v) for v in part[score.name])}
        for metric in (m.TRAIN_MS, m.EVAL_MS, m.SAVED_MB, m.CUDA_MB, m.RSS_MB, m.TRAIN_SECONDS):
            row[metric.label] = metric.format(part[metric.name].mean(skipna=False))  # "-" unless every seed has it
        rows.append(row)
    return _ordered(runs, pd.DataFrame(rows), runs.conditions) if rows else pd.DataFrame()


def per_run(runs: Runs) -> pd.DataFrame:
    f = runs.finished
    score = m.SCORES[runs.score]
    table = pd.DataFrame({"learner": f["learner"], **{a: f[a] for a in runs.axes},
                          f"{score.label} (± 95% CI over episodes)": [
                              m.format_score(runs.score, a, b) for a, b in zip(f[score.name], f[m.ci95(runs.score)])],
                          m.TRAIN_MS.label: f[m.TRAIN_MS.name].map(m.TRAIN_MS.format),
                          m.SAVED_MB.label: f[m.SAVED_MB.name].map(m.SAVED_MB.format),
                          "task batching (as run)": f["task_batching"].replace("", "-"),
                          "code identity": f["code_identity"], "commit": f["git_commit"].str[:12]})
    return _ordered(runs, table, runs.axes)


def _signed(score: str, value: float) -> str:
    """A difference of scores in the score's unit (percentage points for accuracy)."""
    if math.isnan(value):
        return "-"
    return f"{value * 100:+.2f}pp" if score == "accuracy" else f"{value:+.4f}"


def _p(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}" if value >= 1e-3 else f"{value:.2e}"


def _tested(score: str, values: dict) -> dict:
    """The columns every tested difference shows: seeds, episodes, the difference with its interval, p, verdict."""
    test = values["test"]
    return {"seeds": test.seeds, "episodes": test.episodes, "difference": _signed(score, test.mean),
            "95% CI": "-" if math.isnan(test.half_width) else
            f"[{_signed(score, test.mean - test.half_width)}, {_signed(score, test.mean + test.half_width)}]",
            "p": _p(test.p), "p (Holm)": _p(values["p_holm"]),
            "verdict": values["verdict"]}


def verdicts(runs: Runs, compared: pd.DataFrame, kind: str) -> pd.DataFrame:
    if compared.empty:
        return pd.DataFrame()
    rows = []
    for values in compared[compared["kind"] == kind].to_dict("records"):
        tested = _tested(runs.score, values)
        tested["A - B"] = tested.pop("difference")
        rows.append({"A": values["A"], "B": values["B"], **{a: values[a] for a in runs.conditions}, **tested})
    return pd.DataFrame(rows)[["A", "B", *runs.conditions, "seeds", "episodes", "A - B", "95% CI", "p", "p (Holm)",
                               "verdict"]] if rows else pd.DataFrame()


def ablations(runs: Runs, effects: pd.DataFrame) -> pd.DataFrame:
    """One row per effect: learner, kind, component, levels (baseline → level), where it was measured, the effect
    in the score's unit with its 95% interval, p raw and Holm-adjusted, the verdict, and the costs beside it."""
    if effects.empty:
        return pd.DataFrame()
    rows = [{"learner": v["learner"], "effect": v["kind"], "component": v["component"], "levels": v["levels"],
             "at": v["at"], **_tested(runs.score, v), "time / meta-iteration": v["time / meta-iteration"],
             "saved for backward": v["saved for backward"]} for v in effects.to_dict("records")]
    return _ordered(runs, pd.DataFrame(rows), [])


def problems(runs: Runs) -> pd.DataFrame:
    p = runs.problems
    return pd.DataFrame({"learner": p["learner"], **{a: p[a] for a in runs.axes},
                         "outcome": p["outcome"].replace("", t.OUTCOME_INTERRUPTED),
                         "reason": [e or s or "run did not finish" for e, s in zip(p["error"], p["skip_reason"])]})


def other_definitions(runs: Runs) -> pd.DataFrame:
    """Runs kept in the experiment that no cell of the current suite matches (changed options, older harness)."""
    o = runs.other_definitions
    if o.empty:
        return pd.DataFrame()
    counts = o.groupby(["learner", "outcome"], dropna=False).size().reset_index(name="runs")
    return counts.assign(outcome=counts["outcome"].replace("", "running or interrupted"))


def against_published(runs: Runs, options: ReportOptions) -> pd.DataFrame:
    """Each cell a suite ties to a published series: measured (across seeds) against published, with a verdict."""
    rows = []
    f = runs.finished
    statistics = runs.header["dataset"]
    for label, name in options.published.items():
        for _, part in f[f["learner"] == label].groupby("definition", sort=False):
            first = part.iloc[0]
            paper = papers.find(name, int(first["n_way"]), int(first["k_shot"]))
            if paper is None:
                continue
            mean, half = seed_interval(list(100 * part[m.SCORES["accuracy"].name]))
            if len(part) == 1:
                half = 100 * float(first[m.ci95("accuracy")])
            why = papers.differences(paper, runs.resolved[first["config_hash"]], statistics.get("dataset", ""),
                                     statistics)
            verdict = papers.standing(paper, mean, half, why)
            ci = "-" if math.isnan(verdict.half_width) else f"±{verdict.half_width:.2f}"
            rows.append({"learner": label, **{a: first[a] for a in runs.conditions}, "seeds": len(part),
                         "measured %": f"{mean:.2f} ± {half:.2f}",
                         "published %": f"{paper.accuracy:.2f}" + (f" ± {paper.ci95:.2f}" if paper.ci95 else ""),
                         "difference (pp)": f"{verdict.difference:+.2f} {ci}", "verdict": verdict.verdict,
                         "source": paper.citation})
    return pd.DataFrame(rows)
