"""Verdicts between learners with training seeds as the unit of replication.

Two learners are compared on the runs of the same seeds (same initial weights, same episode streams) scored on the
same test episodes: the per-episode score differences form a seeds x episodes table. Its mean is tested with a t
statistic whose variance adds the spread of the per-seed means over the seeds and the spread of the per-episode
means over the episodes (the conservative variance estimate of a crossed design: seeds and test episodes are both
samples), with Welch-Satterthwaite degrees of freedom: where the seeds dominate the variance the test has about
seeds - 1 of them, so a difference between two trained models that does not recur across seeds is no evidence. P-values are Holm-adjusted over every comparison of a report.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import optimize, stats

from bench.core import metrics as m
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
    se: float = math.nan  # the standard error behind half_width and p
    parts: tuple[tuple[float, float], ...] = ()  # each source of variance: (its variance of the mean, its df)
    episode_share: float = math.nan  # the part of the variance that comes from the draw of the test episodes
    left_out: int = 0  # episodes not common to every seed and side (diverged ones left out), not in the table
    diverged: int = 0  # diverged episodes in the table (kept in: the suite does not exclude them)

    def half(self, level: float) -> float:
        """Half-width of the two-sided ``level`` interval (see ``_combined``)."""
        return _combined(self.parts, level)


def _combined(parts: tuple[tuple[float, float], ...], level: float) -> float:
    """Each source's standard error scaled by its own t quantile, added in quadrature. Exact where one source
    dominates, conservative between. Welch-Satterthwaite's pooled degrees of freedom, estimated from the same noisy
    variances, were not: with 3 seeds a seed part of 95% of the variance beside 600 episodes covered 92.6% of the time
    (and 2 seeds gave 15% false verdicts), since an underestimated seed part also raised the degrees of freedom."""
    if not parts or any(math.isnan(v) for v, _ in parts):
        return math.nan
    quantile = 0.5 + level / 2
    return math.sqrt(sum(float(stats.t.ppf(quantile, d)) ** 2 * v for v, d in parts if v > 0))


def _p_value(mean: float, parts: tuple[tuple[float, float], ...]) -> float:
    """The smallest alpha whose (1 - alpha) interval of ``_combined`` excludes 0: a verdict at any level (Holm's
    included) agrees with the interval at that level."""
    if not math.isfinite(mean) or not all(math.isfinite(v) for v, _ in parts):  # a diverged episode: no test
        return math.nan
    if mean == 0:
        return 1.0
    live = [(v, d) for v, d in parts if v > 0]
    if len(live) == 1:  # one source: the t test itself
        (variance, df), = live
        return float(2 * stats.t.sf(abs(mean) / math.sqrt(variance), df))
    excess = lambda alpha: _combined(parts, 1 - alpha) - abs(mean)  # noqa: E731  (decreasing in alpha)
    if excess(1e-300) < 0:
        return 1e-300
    if excess(1 - 1e-12) >= 0:
        return 1.0
    return math.exp(optimize.brentq(lambda log_alpha: excess(math.exp(log_alpha)), math.log(1e-300),
                                    math.log(1 - 1e-12), xtol=1e-10))


def _welch(mean: float, parts: list[tuple[float, float]], seeds: int, episodes: int, episode_parts: int) -> Test:
    """The test of ``mean`` whose variance is the sum of ``parts`` (variance of the mean, degrees of freedom);
    the last ``episode_parts`` of them come from test episodes."""
    variance = sum(v for v, _ in parts)
    share = sum(v for v, _ in parts[len(parts) - episode_parts:]) / variance if variance > 0 else math.nan
    if variance == 0:  # every seed and episode gives the same value
        return Test(mean, 0.0, 1.0 if mean == 0 else 0.0, seeds, episodes, 0.0, tuple(parts), share)
    return Test(mean, _combined(tuple(parts), 0.95), _p_value(mean, tuple(parts)), seeds, episodes,
                math.sqrt(variance), tuple(parts), share)


def crossed_test(differences: np.ndarray) -> Test:
    """``differences[s, e]``: score of A minus score of B on seed s, episode e (or a score itself: its mean's
    interval, seeds and test episodes both samples)."""
    seeds, episodes = differences.shape
    if differences.size == 0:
        return Test(math.nan, math.nan, math.nan, seeds, episodes)
    mean = float(differences.mean())
    if seeds < 2:
        return Test(mean, math.nan, math.nan, seeds, episodes)
    parts = [(differences.mean(axis=1).var(ddof=1) / seeds, seeds - 1)]
    if episodes > 1:
        parts.append((differences.mean(axis=0).var(ddof=1) / episodes, episodes - 1))
    return _welch(mean, parts, seeds, episodes, len(parts) - 1)


def levels_test(arm: np.ndarray, reference: np.ndarray) -> Test:
    """Arm minus reference where the two are scored on *other* test episodes (another N, K or test K): ``arm[s, e]``
    and ``reference[s, e']`` on the same seeds s. Each level's episodes are one draw shared by every seed, so their
    sampling error is common to all seeds: the variance adds, to the spread of the per-seed differences, each level's
    between-episode variance of its seed-averaged scores over its episode count (Welch-Satterthwaite degrees of
    freedom). Tested on the per-seed differences alone, a null effect was called in 36% of experiments."""
    seeds = arm.shape[0]
    per_seed = arm.mean(axis=1) - reference.mean(axis=1)
    mean = float(per_seed.mean())
    if seeds < 2:
        return Test(mean, math.nan, math.nan, seeds, min(arm.shape[1], reference.shape[1]))
    parts = [(per_seed.var(ddof=1) / seeds, seeds - 1)]
    parts += [(level.mean(axis=0).var(ddof=1) / level.shape[1], level.shape[1] - 1)
              for level in (arm, reference) if level.shape[1] > 1]
    return _welch(mean, parts, seeds, min(arm.shape[1], reference.shape[1]), len(parts) - 1)


def shifted(test: Test, by: float, extra_se: float = 0.0) -> Test:
    """``test`` of the mean minus ``by``, with a known-normal source of variance ``extra_se``² added (a published
    value's own interval: infinite degrees of freedom)."""
    if not test.parts:
        return dataclasses.replace(test, mean=test.mean - by)
    parts = list(test.parts) + ([(extra_se ** 2, math.inf)] if extra_se > 0 else [])
    moved = _welch(test.mean - by, parts, test.seeds, test.episodes, 0)
    variance = sum(v for v, _ in parts)
    return dataclasses.replace(moved, episode_share=test.episode_share * test.se ** 2 / variance if variance else
                               math.nan, left_out=test.left_out, diverged=test.diverged)


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


@dataclass(frozen=True)
class Aligned:
    """Seeds x episodes score tables of several sets of runs, on the seeds they share (and, where they are scored on
    the same test episodes, the episodes common to every seed and set: a diverged episode left out of one run is
    left out of its partner too)."""

    tables: list[np.ndarray]
    seeds: list[str]
    left_out: int  # episodes some run had that the tables do not hold
    diverged: int  # diverged episodes the tables hold (kept in: the suite does not exclude them)


def aligned(runs: Runs, parts: list[pd.DataFrame], shared_episodes: bool = True) -> Aligned:
    """``parts``: frames of finished runs (a run per seed); ``shared_episodes`` False: each part keeps its own
    episodes (levels scored on other test episodes), common only across its seeds."""
    seeds = sorted(set.intersection(*(set(part["seed"]) for part in parts)), key=int)
    by_part = [[runs.scores_of(part.loc[part["seed"] == seed, "run_id"].iloc[0]) for seed in seeds]
               for part in parts]
    if not seeds:
        return Aligned([np.zeros((0, 0)) for _ in parts], [], 0, 0)
    groups = [[frame for frames in by_part for frame in frames]] if shared_episodes else by_part
    keep = [sorted(set.intersection(*(set(frame.index) for frame in group))) for group in groups]
    keep = keep * len(parts) if shared_episodes else keep
    tables, left_out, diverged = [], 0, 0
    for frames, episodes in zip(by_part, keep):
        index = pd.Index(episodes)
        rows = [frame if frame.index.equals(index) else frame.loc[episodes] for frame in frames]  # most hold them all
        tables.append(np.array([row["score"].to_numpy(dtype=float) for row in rows]))
        left_out = max([left_out] + [len(frame) - len(episodes) for frame in frames])
        diverged += int(sum(row["diverged"].sum() for row in rows))
    return Aligned(tables, seeds, left_out, diverged)


def with_counts(test: Test, table: Aligned) -> Test:
    return dataclasses.replace(test, left_out=table.left_out, diverged=table.diverged)


def differences(runs: Runs, a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, Aligned]:
    """Seeds x episodes table of A - B over the seeds both ran and the episodes both kept, matched by episode id."""
    table = aligned(runs, [a, b])
    return table.tables[0] - table.tables[1], table


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


def _both_primary(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """In the test-condition view: both sides under their primary condition, which the report's own view compares
    (testing it twice put the same p-value twice in the Holm family)."""
    return "primary" in a and bool(a["primary"].iloc[0]) and bool(b["primary"].iloc[0])


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
                if not _compatible(key_a, key_b) or _both_primary(part_a, part_b):
                    continue
                condition = {axis: x if x != ABSENT else y for axis, x, y in zip(runs.conditions, key_a, key_b)}
                row = {"A": label_a, "B": label_b, **condition, "kind": kind, "better": f"{label_a} better",
                       "worse": f"{label_b} better"}
                if part_a["eval_fingerprint"].iloc[0] != part_b["eval_fingerprint"].iloc[0]:
                    rows.append({**row, "test": NOT_PAIRED, "unpaired": _unpaired(label_a, part_a, label_b, part_b)})
                    continue
                table, counts = differences(runs, part_a, part_b)
                if table.size == 0:
                    continue
                rows.append({**row, "test": with_counts(crossed_test(table), counts), "unpaired": ""})
    return pd.DataFrame(rows)


def decide(tested: list[pd.DataFrame], options: ReportOptions, score: m.Metric) -> None:
    """Holm-adjust every test of the report as one family and give each its verdict, in place: each frame has the
    columns ``test`` (a Test), ``unpaired`` (why it was not made, or ""), ``better`` and ``worse`` (the verdict's
    words when the difference is positive or negative in the score's good direction). The family: the tests with a
    p-value (enough seeds, a made comparison); those outside it get ``p_holm`` nan."""
    frames = [frame for frame in tested if not frame.empty]
    eligible = [t.p if t.seeds >= options.min_seeds and not t.diverged else math.nan
                for frame in frames for t in frame["test"]]
    adjusted = iter(holm(eligible))
    for frame in frames:
        frame["p_holm"] = [next(adjusted) for _ in range(len(frame))]
        frame["verdict"] = [why or _verdict(t, p, score, options, better, worse) for t, p, better, worse, why in
                            zip(frame["test"], frame["p_holm"], frame["better"], frame["worse"], frame["unpaired"])]


def _verdict(test: Test, adjusted: float, score: m.Metric, options: ReportOptions, better: str, worse: str) -> str:
    """``better``: the words for a significant positive difference where higher scores are better (accuracy)."""
    if test.mean == 0 and test.half_width == 0:  # every difference exactly 0 (float64 variants train identically)
        return "identical (the same score on every seed and episode)"
    if test.seeds < options.min_seeds:
        runs = "one training run" if test.seeds == 1 else f"{test.seeds} training runs"
        return f"no verdict: {runs} per arm ({options.min_seeds} seeds needed)"
    if test.diverged:  # an absurd error dominates a mean: it tests nothing (exclude_diverged leaves them out)
        return (f"no verdict: {test.diverged} diverged episode score(s) in the comparison (listed in the report; "
                "evaluation.exclude_diverged leaves them out)")
    if not math.isfinite(test.mean) or math.isnan(adjusted):  # a diverged episode (inf, NaN) tests nothing
        return "no verdict: non-finite episode scores (diverged episodes, listed in the report)"
    if adjusted < options.alpha:
        return better if (test.mean > 0) == score.higher_is_better else worse
    return "no evidence of a difference"
