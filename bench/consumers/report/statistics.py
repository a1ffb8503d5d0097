"""Verdicts between learners with training seeds as the unit of replication.

Two learners are compared on the runs of the same seeds (same initial weights, same episode streams) scored on the
same test episodes: the per-episode score differences form a seeds x episodes table. Its mean is tested with a t
statistic whose variance adds the spread of the per-seed means over the seeds and the spread of the per-episode
means over the episodes (the conservative variance estimate of a crossed design: seeds and test episodes are both
samples), with Welch-Satterthwaite degrees of freedom: where the seeds dominate the variance the test has about
seeds - 1 of them, so a difference between two trained models that does not recur across seeds is no evidence. P-values are Holm-adjusted over every comparison of a report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from bench.consumers.report.loading import Runs
from bench.spec.suite import ABSENT, ReportOptions
from meta_bench.algorithms.base import IMPLEMENTATION_OPTIONS

METHOD = ("Seeds are the unit of replication: for two learners trained with the same seeds, the per-episode score "
          "differences on identical test episodes form a seeds x episodes table whose mean is tested with a t "
          "statistic whose variance adds the between-seed spread of per-seed means and the between-episode spread of "
          "per-episode means (Welch-Satterthwaite degrees of freedom, at least seeds - 1). P-values are Holm-adjusted over every comparison in this "
          "report, and a verdict needs at least {min_seeds} seeds and an adjusted p below {alpha} (with fewer seeds "
          "the difference is shown without one).")


@dataclass(frozen=True)
class Test:
    mean: float
    half_width: float  # of the 95% interval (nan with one seed)
    p: float  # two-sided (nan with one seed)
    seeds: int
    episodes: int


def crossed_test(differences: np.ndarray) -> Test:
    """``differences[s, e]``: score of A minus score of B on seed s, episode e."""
    seeds, episodes = differences.shape
    mean = float(differences.mean())
    if seeds < 2:
        return Test(mean, math.nan, math.nan, seeds, episodes)
    parts = [(differences.mean(axis=1).var(ddof=1) / seeds, seeds - 1)]
    if episodes > 1:
        parts.append((differences.mean(axis=0).var(ddof=1) / episodes, episodes - 1))
    variance = sum(v for v, _ in parts)
    if variance == 0:  # every seed and episode gives the same difference
        return Test(mean, 0.0, 1.0 if mean == 0 else 0.0, seeds, episodes)
    df = variance ** 2 / sum(v ** 2 / d for v, d in parts)  # Welch-Satterthwaite
    se = math.sqrt(variance)
    return Test(mean, float(stats.t.ppf(0.975, df)) * se, float(2 * stats.t.sf(abs(mean) / se, df)), seeds, episodes)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (nan entries are not part of the family and stay nan)."""
    index = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(index, key=lambda i: pvalues[i])
    adjusted, running = [math.nan] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def mean_of_every(grouped) -> pd.Series:
    """Each group's mean over every value: one that is not finite (a diverged episode) leaves it undefined, never
    averaged away (pandas' own mean skips NaN). Portable: GroupBy.mean's skipna is pandas 3 only."""
    return grouped.agg(lambda values: float(np.mean(values.to_numpy(dtype=float))))


def seed_interval(per_seed: list[float]) -> tuple[float, float]:
    """Mean over seeds and the half-width of its 95% t interval (nan with one seed)."""
    values = np.asarray(per_seed, dtype=float)
    if len(values) < 2:
        return float(values.mean()), math.nan
    return float(values.mean()), float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))


def _compatible(a: tuple, b: tuple) -> bool:
    """Two conditions pair when every axis agrees or one learner lacks that option."""
    return all(x == y or ABSENT in (x, y) for x, y in zip(a, b))


def _settings(runs: Runs, label: str) -> dict[str, object]:
    """What a label's runs set, less the grid's swept options and the implementation options: the options its
    configuration fixes (one value each where its runs agree)."""
    f = runs.finished
    values: dict[str, set] = {}
    for config_hash in f.loc[f["learner"] == label, "config_hash"]:
        for key, value in runs.resolved[config_hash]["learner_config"].items():
            if key not in runs.axes and key not in IMPLEMENTATION_OPTIONS:
                values.setdefault(key, set()).add(repr(value))
    return {key: next(iter(seen)) for key, seen in values.items() if len(seen) == 1}


def _same_configuration(a: dict[str, object], b: dict[str, object]) -> bool:
    return all(a[key] == b[key] for key in a.keys() & b.keys())


def representatives(runs: Runs) -> dict[str, str]:
    """Label -> the label that stands for its group between algorithms and configurations. Labels are implementation
    variants of one another only when their runs record the same algorithm (the registry's, not parsed from the
    name) *and* their configurations agree on every option they share (implementation options and swept axes
    aside): the first in the suite's order stands for its group (the group's own differences are compared among
    themselves, as rounding). Labelled arms of one algorithm with different options are groups of their own,
    compared as such; every other learner stands for itself."""
    f = runs.finished
    algorithm = dict(zip(f["learner"], f["algorithm"]))
    present = [label for label in runs.learners if label in algorithm]
    settings = {label: _settings(runs, label) for label in present}
    stand_in: dict[str, str] = {}
    for label in present:
        stand_in[label] = next((first for first in dict.fromkeys(stand_in.values())
                                if algorithm[first] == algorithm[label]
                                and _same_configuration(settings[first], settings[label])), label)
    return stand_in


def _pairs(runs: Runs, options: ReportOptions) -> list[tuple[str, str, str]]:
    """(A, B, kind) of every comparison the report makes."""
    stand_in = representatives(runs)
    present = list(stand_in)
    if options.reference:
        return [(label, options.reference, "algorithms") for label in present if label != options.reference]
    pairs = []
    for a, b in combinations(present, 2):
        if stand_in[a] == stand_in[b]:
            pairs.append((a, b, "variants of one algorithm"))
        elif stand_in[a] == a and stand_in[b] == b:
            pairs.append((a, b, "algorithms"))
    return pairs


def differences(runs: Runs, a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """Seeds x episodes table of A - B over the seeds both ran, matched by episode id."""
    rows = []
    for seed in sorted(set(a["seed"]) & set(b["seed"]), key=int):
        score_of = [runs.episodes[runs.episodes["run_id"] == part[part["seed"] == seed]["run_id"].iloc[0]]
                    for part in (a, b)]
        joined = score_of[0].merge(score_of[1], on="episode", suffixes=("_a", "_b")).sort_values("episode")
        rows.append((joined["score_a"] - joined["score_b"]).to_numpy())
    return np.array(rows) if rows else np.zeros((0, 0))


NOT_PAIRED = Test(math.nan, math.nan, math.nan, 0, 0)


def _groups(runs: Runs, label: str) -> list[pd.DataFrame]:
    """The finished runs of ``label`` that may be paired with another learner's, one frame per definition and
    evaluation fingerprint: runs that differ in the seed alone, scored on the same test episodes by the same code."""
    f = runs.finished
    return [part for _, part in f[f["learner"] == label].groupby(["definition", "eval_fingerprint"], sort=False)]


def _unpaired(label_a: str, part_a: pd.DataFrame, label_b: str, part_b: pd.DataFrame) -> str:
    seeds = ", ".join(sorted(set(part_a["seed"]) & set(part_b["seed"]), key=int)) or "none in common"
    fingerprints = " and ".join(part["eval_fingerprint"].iloc[0] for part in (part_a, part_b))
    return (f"not compared: {label_a} and {label_b} (seeds {seeds}) were scored on different test episodes or by "
            f"different dataset or evaluation code (evaluation fingerprints {fingerprints})")


def comparisons(runs: Runs, options: ReportOptions) -> pd.DataFrame:
    """Every pair of learners under every pair of compatible conditions, tested (``decide`` adjusts and judges them
    with the report's other tests). Runs pair only with runs of their own evaluation fingerprint (identical test
    episodes, scored by the same code); where the fingerprints differ the comparison is listed as not made rather
    than left out."""
    rows = []
    for label_a, label_b, kind in _pairs(runs, options):
        for part_a in _groups(runs, label_a):
            for part_b in _groups(runs, label_b):
                key_a, key_b = (tuple(part[runs.conditions].iloc[0]) for part in (part_a, part_b))
                if not _compatible(key_a, key_b):
                    continue
                condition = {axis: x if x != ABSENT else y for axis, x, y in zip(runs.conditions, key_a, key_b)}
                row = {"A": label_a, "B": label_b, **condition, "kind": kind, "better": f"{label_a} better",
                       "worse": f"{label_b} better"}
                if part_a["eval_fingerprint"].iloc[0] != part_b["eval_fingerprint"].iloc[0]:
                    rows.append({**row, "test": NOT_PAIRED, "unpaired": _unpaired(label_a, part_a, label_b, part_b)})
                    continue
                table = differences(runs, part_a, part_b)
                if table.size == 0:
                    continue
                rows.append({**row, "test": crossed_test(table), "unpaired": ""})
    return pd.DataFrame(rows)


def decide(tested: list[pd.DataFrame], options: ReportOptions, score: str) -> None:
    """Holm-adjust every test of the report as one family and give each its verdict, in place: each frame has the
    columns ``test`` (a Test), ``unpaired`` (why it was not made, or ""), ``better`` and ``worse`` (the verdict's
    words when the difference is positive or negative in the score's good direction). The family: the tests with a
    p-value (enough seeds, a made comparison); those outside it get ``p_holm`` nan."""
    frames = [frame for frame in tested if not frame.empty]
    eligible = [t.p if t.seeds >= options.min_seeds else math.nan for frame in frames for t in frame["test"]]
    adjusted = iter(holm(eligible))
    for frame in frames:
        frame["p_holm"] = [next(adjusted) for _ in range(len(frame))]
        frame["verdict"] = [why or _verdict(t, p, score, options, better, worse) for t, p, better, worse, why in
                            zip(frame["test"], frame["p_holm"], frame["better"], frame["worse"], frame["unpaired"])]


def _verdict(test: Test, adjusted: float, score: str, options: ReportOptions, better: str, worse: str) -> str:
    """``better``: the words for a significant positive difference where higher scores are better (accuracy)."""
    if test.mean == 0 and test.half_width == 0:  # every difference exactly 0 (float64 variants train identically)
        return "identical (the same score on every seed and episode)"
    if test.seeds < options.min_seeds:
        runs = "one training run" if test.seeds == 1 else f"{test.seeds} training runs"
        return f"no verdict: {runs} per arm ({options.min_seeds} seeds needed)"
    if not math.isfinite(test.mean) or math.isnan(adjusted):  # a diverged episode (inf, NaN) tests nothing
        return "no verdict: non-finite episode scores (diverged episodes, listed in the report)"
    if adjusted < options.alpha:
        return better if (test.mean > 0) == (score == "accuracy") else worse
    return "no evidence of a difference"
