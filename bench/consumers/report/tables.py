"""The report's tables, as data frames (also written as CSV)."""
from __future__ import annotations

import math

import pandas as pd

from bench.core import metrics as m
from bench.core import tags as t
from bench.spec import published as papers
from bench.consumers.report.loading import Runs
from bench.consumers.report import reproduction
from bench.consumers.report.statistics import aligned, crossed_test
from bench.spec.suite import ReportOptions


def _ordered(runs: Runs, frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    order = {label: i for i, label in enumerate(runs.learners)}
    return frame.assign(_order=frame["learner"].map(order)).sort_values(["_order"] + by, kind="stable") \
        .drop(columns="_order").reset_index(drop=True)


def results(runs: Runs) -> pd.DataFrame:
    """One row per learner and condition: the score with its 95% interval over seeds and test episodes (both are
    samples: the test-episode draw is shared by every seed, so an interval across seeds alone leaves it out), how much
    of it the test-episode draw makes, and the costs. Only runs of one definition (differing in the seed alone) are
    pooled; their learner and conditions name it."""
    score = m.SCORES[runs.score]
    rows = []
    for _, part in runs.finished.groupby("definition", sort=False):
        part = part.sort_values("seed", key=lambda s: s.astype(int))
        first = part.iloc[0]
        table = aligned(runs, [part])
        test = crossed_test(table.tables[0])
        if len(part) == 1:  # one training run: only the episode-level interval exists
            shown = m.format_score(runs.score, test.mean, part[m.ci95(runs.score)].iloc[0]) + " (1 seed: CI over episodes)"
        else:
            shown = m.format_score(runs.score, test.mean, test.half_width)
        row = {"learner": first["learner"], **{a: first[a] for a in runs.conditions}, "seeds": len(part),
               f"{score.label} (mean ± 95% CI, seeds and episodes)": shown,
               "from the test-episode draw": reproduction.share(test.episode_share),
               "per seed": ", ".join(score.format(v) for v in table.tables[0].mean(axis=1)),
               "diverged episodes": _diverged(runs, part)}
        for metric in (m.TRAIN_MS, m.EVAL_MS, m.SAVED_MB, m.CUDA_MB, m.RSS_MB, m.TRAIN_SECONDS):
            row[metric.label] = metric.format(part[metric.name].mean(skipna=False))  # "-" unless every seed has it
        rows.append(row)
    return _ordered(runs, pd.DataFrame(rows), runs.conditions) if rows else pd.DataFrame()


def _diverged(runs: Runs, part: pd.DataFrame) -> str:
    """The diverged primary test episodes of ``part``'s runs, and whether the scores beside keep them."""
    flagged = int(runs.diverged_primary.reindex(part["run_id"]).fillna(0).sum())
    return str(flagged) + (" (left out)" if flagged and runs.excluded_diverged else " (kept)" if flagged else "")


def per_run(runs: Runs) -> pd.DataFrame:
    f = runs.finished
    score = m.SCORES[runs.score]
    table = pd.DataFrame({"learner": f["learner"], **{a: f[a] for a in runs.axes},
                          f"{score.label} (± 95% CI over episodes)": [
                              m.format_score(runs.score, a, b) for a, b in zip(f[score.name], f[m.ci95(runs.score)])],
                          m.TRAIN_MS.label: f[m.TRAIN_MS.name].map(m.TRAIN_MS.format),
                          m.SAVED_MB.label: f[m.SAVED_MB.name].map(m.SAVED_MB.format),
                          "task batching (as run)": f["task_batching"].replace("", "-"),
                          "code identity": f["code_identity"], "commit": f["git_commit"].str[:12],
                          "trained by": f["trained_by"].replace("", "-")})  # a run tested on another's training
    return _ordered(runs, table, runs.axes)


def _p(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}" if value >= 1e-3 else f"{value:.2e}"


def _tested(score: m.Metric, values: dict) -> dict:
    """The columns every tested difference shows: seeds, episodes, the difference with its interval, p, verdict."""
    test = values["test"]
    episodes = str(test.episodes) + (f" ({test.left_out} left out: not kept by every seed and side)"
                                     if test.left_out else "")
    return {"seeds": test.seeds, "episodes": episodes, "difference": score.signed(test.mean),
            "95% CI": "-" if math.isnan(test.half_width) else
            f"[{score.signed(test.mean - test.half_width)}, {score.signed(test.mean + test.half_width)}]",
            "p": _p(test.p), "p (Holm)": _p(values["p_holm"]),
            "verdict": values["verdict"]}


def verdicts(runs: Runs, compared: pd.DataFrame, kind: str) -> pd.DataFrame:
    if compared.empty:
        return pd.DataFrame()
    rows = []
    for values in compared[compared["kind"] == kind].to_dict("records"):
        tested = _tested(runs.metric, values)
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
             "at": v["at"], **_tested(runs.metric, v), "time / meta-iteration": v["time / meta-iteration"],
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
    """Each cell a suite ties to a published series: measured (seeds x test episodes) against published, by the
    equivalence rule (bench.consumers.report.reproduction)."""
    rows = []
    f = runs.finished
    statistics = runs.header["dataset"]
    for label, name in options.published.items():
        for _, part in f[f["learner"] == label].groupby("definition", sort=False):
            first = part.iloc[0]
            paper = papers.find(name, int(first["n_way"]), int(first["k_shot"]))
            if paper is None:
                continue
            why = papers.differences(paper, runs.resolved[first["config_hash"]], statistics.get("dataset", ""),
                                     statistics)
            rows.append({"learner": label, **{a: first[a] for a in runs.conditions},
                         **reproduction.columns(aligned(runs, [part]), paper, options, why)})
    return pd.DataFrame(rows)


def time_spent(runs: Runs) -> pd.DataFrame:
    """Where the time went, per learner: the mean seconds of each phase of its finished cells (``metrics.TIME_PHASES``,
    then the store writes after them) with its share of the cell's wall-clock, and what no phase holds (empty where
    no run recorded its phases)."""
    frame = runs.finished
    if frame.empty or frame[m.time_in("steps")].isna().all():
        return pd.DataFrame()
    rows = []
    for learner in runs.learners:
        part = frame[(frame["learner"] == learner) & frame[m.time_in("steps")].notna()]
        if part.empty:
            continue
        wall = float((part[m.CELL_SECONDS] + part[m.STORE_SECONDS].fillna(0.0)).mean())
        row: dict[str, object] = {"learner": learner, "cells": len(part), "wall s": f"{wall:.2f}"}
        held = 0.0
        for phase, label in [*m.TIME_PHASES.items(), ("store", "store writes")]:
            seconds = float(part[m.time_in(phase)].fillna(0.0).mean())
            held += seconds
            row[label] = f"{seconds:.2f} ({100 * seconds / wall:.1f}%)" if wall > 0 else f"{seconds:.2f}"
        row["unaccounted"] = f"{wall - held:+.3f}"
        rows.append(row)
    return pd.DataFrame(rows)
