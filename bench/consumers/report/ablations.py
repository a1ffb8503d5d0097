"""Ablations: within each learner, what every swept axis does to the test score, with seed-level tests.

Simple effects: each value of an axis against the axis's baseline (the first value the suite lists, or
``report.baselines``) at every combination of the other axes, on the same seeds and, where the levels share them,
identical test episodes. Factorial effects, where a learner's runs cross two or more options: each option's main
effect and each two-way interaction as contrasts of the cell means, computed per seed and episode. Every effect is
tested by ``statistics.crossed_test`` and judged with the report's other tests in one Holm family
(``statistics.decide``).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from bench.consumers.report.loading import Runs
from bench.consumers.report.statistics import (NOT_PAIRED, aligned, crossed_test, differences, levels_test,
                                               with_counts)
from bench.core import metrics as m
from bench.spec.suite import ABSENT, ReportOptions

EPISODE_AXES = ("n_way", "k_shot", "test_k_shot")  # their levels are scored on other test episodes
TEST_AXES = ("test_k_shot", "test_steps")  # what as_axes adds: one trained model scored under other conditions
NOT_ABLATED = ("device", "seed")  # where a cell ran and its replicate: no component of a learner

MODEL = ("Every effect is a contrast of cell means computed separately for each training seed and test episode: a "
         "simple effect is a value's score minus the baseline's with every other axis fixed, a main effect is that "
         "difference averaged with equal weight over every combination of the other crossed options, and a two-way "
         "interaction is how much one option's effect changes when the other moves from its baseline (averaged over "
         "the rest). Each contrast's seeds x episodes table is then tested like a comparison between learners, so "
         "seeds are the unit of replication (effects of N and K, whose levels are scored on other test episodes, are "
         "tested on per-seed mean differences with each level's own test-episode draw added to the variance).")

WORDS = {"simple effect": ("helps", "hurts"), "main effect": ("helps", "hurts"),
         "interaction": ("stronger together", "weaker together")}


def _levels(runs: Runs, axis: str, frame: pd.DataFrame) -> list[str]:
    """The values of ``axis`` among ``frame``'s runs, in the suite's order."""
    present = set(frame[axis]) - {ABSENT}
    ordered = [v for v in runs.levels.get(axis, []) if v in present]
    return ordered + sorted(present - set(ordered))


def _baseline(options: ReportOptions, axis: str, levels: list[str]) -> str:
    wanted = str(options.baselines.get(axis, ""))
    return wanted if wanted in levels else levels[0]


def ablated_axes(runs: Runs, test_view: bool = False) -> list[str]:
    """The axes whose effects are measured: every condition axis but the device (the cell axes, or with
    ``test_view`` the test-time axes alone: the view of ``conditions.as_axes`` holds the cell axes as well, and their
    effects are measured once, in the report's own view)."""
    if test_view:
        return [a for a in TEST_AXES if a in runs.conditions]
    return [a for a in runs.conditions if a not in NOT_ABLATED + TEST_AXES]


def _option_axes(runs: Runs) -> list[str]:
    """Axes that may be crossed in a factorial: the learner options (levels scored on the same test episodes)."""
    return [a for a in ablated_axes(runs) if a not in EPISODE_AXES]


def _at(axes: list[str], key: tuple, varying: set[str]) -> str:
    """The setting of the other axes an effect is measured at (those that vary for the learner)."""
    return ", ".join(f"{a}={v}" for a, v in zip(axes, key) if a in varying) or "-"


def _cost(arm: pd.DataFrame, reference: pd.DataFrame, metric: m.Metric, unit: str) -> str:
    """``baseline → level`` of a cost (mean over the runs of each) and their ratio."""
    before, after = reference[metric.name].mean(skipna=False), arm[metric.name].mean(skipna=False)
    if not (math.isfinite(before) and math.isfinite(after)) or before == 0:
        return "-"
    return f"{metric.format(before)} → {metric.format(after)} {unit} (×{after / before:.2f})"


def _costs(axis: str, arm: pd.DataFrame, reference: pd.DataFrame) -> dict[str, str]:
    if any(a in TEST_AXES for a in axis.split(" × ")):  # the same trained model: no training cost changes
        return {"time / meta-iteration": "-", "saved for backward": "-"}
    return {"time / meta-iteration": _cost(arm, reference, m.TRAIN_MS, "ms"),
            "saved for backward": _cost(arm, reference, m.SAVED_MB, "MB")}


def _tested(runs: Runs, axis: str, arm: pd.DataFrame, reference: pd.DataFrame) -> tuple[object, str]:
    """The test of arm - reference and, where none could be made, why."""
    if set(arm["eval_fingerprint"]) == set(reference["eval_fingerprint"]):
        table, counts = differences(runs, arm, reference)
        test = crossed_test(table) if table.size else None
    elif axis in EPISODE_AXES:  # each level is scored on its own test episodes
        counts = aligned(runs, [arm, reference], shared_episodes=False)
        test = levels_test(*counts.tables) if counts.seeds else None
    else:
        return NOT_PAIRED, (f"not compared: scored on different test episodes or by different evaluation code "
                            f"(fingerprints {', '.join(sorted(set(arm['eval_fingerprint'])))} against "
                            f"{', '.join(sorted(set(reference['eval_fingerprint'])))})")
    if test is None:
        return NOT_PAIRED, "not compared: no training seed in common"
    return with_counts(test, counts), ""


def _row(label: str, kind: str, component: str, levels: str, at: str, test, why: str, costs: dict) -> dict:
    better, worse = WORDS[kind]
    return {"learner": label, "kind": kind, "component": component, "levels": levels, "at": at, "test": test,
            "unpaired": why, "better": better, "worse": worse, **costs}


def simple_effects(runs: Runs, options: ReportOptions, test_view: bool = False) -> pd.DataFrame:
    """Per learner and ablated axis with two or more values: each value against the baseline at every combination
    of the other axes."""
    rows = []
    f = runs.finished
    for label in runs.learners:
        mine = f[f["learner"] == label]
        varying = {a for a in runs.conditions if len(_levels(runs, a, mine)) > 1}
        for axis in ablated_axes(runs, test_view):
            levels = _levels(runs, axis, mine)
            if len(levels) < 2:
                continue
            base = _baseline(options, axis, levels)
            others = [a for a in runs.conditions if a != axis]
            for key, group in mine.groupby(others, sort=False):
                reference = group[group[axis] == base]
                if reference.empty:
                    continue
                for level in (v for v in levels if v != base):
                    arm = group[group[axis] == level]
                    if arm.empty:
                        continue
                    test, why = _tested(runs, axis, arm, reference)
                    rows.append(_row(label, "simple effect", axis, f"{base} → {level}", _at(others, key, varying),
                                     test, why, _costs(axis, arm, reference)))
    return pd.DataFrame(rows)


def factorial_effects(runs: Runs, options: ReportOptions) -> tuple[pd.DataFrame, list[str]]:
    """Per learner whose runs cross two or more options: each option's main effect per non-baseline level and each
    two-way interaction, at every setting of the axes that are not crossed. Also what could not be analysed so."""
    rows, notes = [], []
    f = runs.finished
    for label in runs.learners:
        mine = f[f["learner"] == label]
        factors = [a for a in _option_axes(runs) if len(_levels(runs, a, mine)) > 1]
        if len(factors) < 2:
            continue
        strata = [a for a in runs.conditions if a not in factors]
        varying = {a for a in strata if len(_levels(runs, a, mine)) > 1}
        for key, group in mine.groupby(strata, sort=False):
            at = _at(strata, key, varying)
            levels = {a: _levels(runs, a, group) for a in factors}
            cells = {combo: part for combo, part in group.groupby(factors, sort=False)}
            wanted = set(itertools.product(*levels.values()))
            if set(cells) != wanted or group["eval_fingerprint"].nunique() != 1:
                why = ("not a full factorial: " + ", ".join(" × ".join(c) for c in sorted(wanted - set(cells)))
                       + " not run") if set(cells) != wanted else "its runs were scored on different test episodes"
                notes.append(f"{label} ({at}): main effects and interactions not estimated: {why}")
                continue
            table = aligned(runs, list(cells.values()))
            if not table.seeds:
                notes.append(f"{label} ({at}): no training seed ran every combination of {', '.join(factors)}")
                continue
            scores = dict(zip(cells, table.tables))
            base = {a: _baseline(options, a, levels[a]) for a in factors}
            rows += _main_effects(label, at, factors, levels, base, scores, cells, table)
            rows += _interactions(label, at, factors, levels, base, scores, table)
    return pd.DataFrame(rows), notes


def _mean_where(scores: dict[tuple, np.ndarray], factors: list[str], fixed: dict[str, str]) -> np.ndarray:
    """The mean seeds x episodes table over the cells whose factors take the ``fixed`` levels (equal weights)."""
    chosen = [table for combo, table in scores.items() if all(combo[factors.index(a)] == v for a, v in fixed.items())]
    return np.mean(chosen, axis=0)


def _main_effects(label, at, factors, levels, base, scores, cells, table) -> list[dict]:
    rows = []
    for axis in factors:
        for level in (v for v in levels[axis] if v != base[axis]):
            contrast = _mean_where(scores, factors, {axis: level}) - _mean_where(scores, factors, {axis: base[axis]})
            arm = pd.concat([p for c, p in cells.items() if c[factors.index(axis)] == level])
            reference = pd.concat([p for c, p in cells.items() if c[factors.index(axis)] == base[axis]])
            rows.append(_row(label, "main effect", axis, f"{base[axis]} → {level}", at,
                             with_counts(crossed_test(contrast), table), "",
                             _costs(axis, arm, reference)))
    return rows


def _interactions(label, at, factors, levels, base, scores, table) -> list[dict]:
    rows = []
    for a, b in itertools.combinations(factors, 2):
        for x, y in itertools.product((v for v in levels[a] if v != base[a]), (v for v in levels[b] if v != base[b])):
            def mean(level_a: str, level_b: str) -> np.ndarray:
                return _mean_where(scores, factors, {a: level_a, b: level_b})

            contrast = (mean(x, y) - mean(x, base[b])) - (mean(base[a], y) - mean(base[a], base[b]))
            rows.append(_row(label, "interaction", f"{a} × {b}", f"{base[a]} → {x} × {base[b]} → {y}", at,
                             with_counts(crossed_test(contrast), table), "",
                             {"time / meta-iteration": "-", "saved for backward": "-"}))
    return rows
