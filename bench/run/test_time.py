"""Scoring a trained learner on its cell's test episodes under every test-time condition the suite names: each test
support size K (``evaluation.k_shot``) and, for learners that adapt in steps, each step count
(``evaluation.inner_steps`` as a list, read off one adaptation curve per episode). One trained model, no retraining.

The primary condition (the first K, the largest step count) gives the cell's usual test metrics and
``test_episodes.csv``; every condition gets ``metrics.under(...)`` metrics, and every episode's score after every
step of the curve is kept (``test_scores.csv``: the report's condition tables and adaptation curves).

A diverged episode (score non-finite, or an error above ``divergence_factor`` times a scale that does not move
with the failure: the dataset's stated error of predicting 0, else the episode's own error before adaptation) is
flagged and counted per condition, and left out of the mean only where ``evaluation.exclude_diverged`` says so:
never averaged in silently, never dropped silently. Every cell records its flags (``test_scores.csv``), whatever
test conditions its suite names, so every table and verdict of the report can honour them the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bench.core import metrics as m
from bench.run.evaluation import evaluate, evaluate_curve
from bench.run.measure import PhaseMeter, confidence_interval95
from bench.spec.suite import ABSENT, Cell
from meta_bench.algorithms import MetaLearner
from meta_bench.datasets import Dataset

SCORES_FILE = "test_scores.csv"
COLUMNS = ("test_k_shot", "test_steps", "episode", "score", "diverged")


@dataclass
class ConditionScores:
    metrics: dict[str, float]
    primary: list[float]  # per-episode scores under the primary condition
    rows: list[tuple] = field(default_factory=list)  # COLUMNS, every condition and every step of the curve


EXPLOSION_FACTOR = 10.0  # a regression cell's test MSE this many times predicting 0 everywhere: it exploded


def exploded(score: m.Metric, value: float | None, zero_prediction_mse: float | None) -> bool:
    """A regression cell whose mean test error is non-finite or ``EXPLOSION_FACTOR`` times the error of predicting 0
    (every episode may be off, so no episode stands out as diverged: the cell as a whole did not learn)."""
    if score.kind != "error" or value is None or zero_prediction_mse is None:
        return False
    return not math.isfinite(value) or value > EXPLOSION_FACTOR * zero_prediction_mse


def diverged(scores: list[float], lower_is_better: bool, factor: float,
             scale: float | list[float] | None) -> list[bool]:
    """Which scores are non-finite, or (errors only) above ``factor`` times ``scale``: one number for every episode
    (the dataset's stated error of predicting 0) or one per episode (its error before adaptation); None: non-finite
    only. Never relative to the scores themselves: if half the episodes blow up, their median does too."""
    scales = scale if isinstance(scale, list) else [scale] * len(scores)
    return [not math.isfinite(s) or (lower_is_better and reference is not None and math.isfinite(reference)
                                      and reference > 0 and s > factor * reference)
            for s, reference in zip(scores, scales)]


def divergence_scale(data: Dataset, curve: dict) -> float | list[float] | None:
    """What an episode's error is judged against: the dataset's stated scale, else each episode's error at step 0
    of its adaptation curve (before any test-time step), else nothing (classification, or no curve)."""
    stated = data.zero_prediction_mse()
    if stated is not None:
        return stated
    return list(curve[0]) if 0 in curve else None


def score_cell(cell: Cell, learner: MetaLearner, data: Dataset, device: torch.device, dtype: torch.dtype,
               per_pass: int, meter: PhaseMeter) -> ConditionScores:
    """``meter`` times the first K's pass (the primary condition's)."""
    evaluation, score_name = cell.evaluation, data.score_name
    metric = m.SCORES[score_name]
    lower = metric.direction == "lower"
    steps = cell.test_steps
    by_condition: dict[tuple[int, int | None], tuple[list[float], list[bool]]] = {}  # scores, diverged
    rows = []
    for i, k_shot in enumerate(cell.test_k_shots):
        source = data.sampler("test", cell.n_way, k_shot, cell.test_query, evaluation.episode_seed)
        timed = meter if i == 0 else None
        if steps == (None,):
            curve = {None: evaluate(learner, source, evaluation.test_episodes, device, dtype, timed, per_pass)}
        else:
            per_step = evaluate_curve(learner, source, evaluation.test_episodes, max(steps), device, dtype, timed,
                                      per_pass)
            curve = dict(enumerate(per_step))
        scale = divergence_scale(data, curve)
        for step, scores in curve.items():
            flags = diverged(scores, lower, evaluation.divergence_factor, scale)
            rows.extend((k_shot, ABSENT if step is None else step, episode, score, flag)
                        for episode, (score, flag) in enumerate(zip(scores, flags)))
            if step in steps:
                by_condition[(k_shot, step)] = scores, flags
    results, primary = {}, (cell.test_k_shots[0], max(steps) if steps != (None,) else None)
    several = len(by_condition) > 1 or bool(evaluation.k_shot)
    for (k_shot, step), (scores, flags) in by_condition.items():
        kept = [s for s, f in zip(scores, flags) if not (f and evaluation.exclude_diverged)]
        mean, half_width = confidence_interval95(kept)
        names = [(metric.name, mean), (m.ci95(score_name), half_width), (m.TEST_DIVERGED, float(sum(flags)))]
        if several:
            results.update({m.under(name, k_shot, step): value for name, value in names})
        if (k_shot, step) == primary:
            results.update(dict(names))
    return ConditionScores(results, by_condition[primary][0], rows)
