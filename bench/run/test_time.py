"""Scoring a trained learner on its cell's test episodes under every test-time condition the suite names: each test
support size K (``evaluation.k_shot``) and, for learners that adapt in steps, each step count
(``evaluation.inner_steps`` as a list, read off one adaptation curve per episode). One trained model, no retraining.

The primary condition (the first K, the largest step count) gives the cell's usual test metrics and
``test_episodes.csv``; every condition gets ``metrics.under(...)`` metrics, and every episode's score after every
step of the curve is kept (``test_scores.csv``: the report's condition tables and adaptation curves).

A diverged episode (score non-finite, or an error above ``divergence_factor`` times its condition's median) is
flagged and counted per condition, and left out of the mean only where ``evaluation.exclude_diverged`` says so:
never averaged in silently, never dropped silently.
"""
from __future__ import annotations

import math
import statistics
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


def exploded(score: str, value: float | None, zero_prediction_mse: float | None) -> bool:
    """A regression cell whose mean test error is non-finite or ``EXPLOSION_FACTOR`` times the error of predicting 0
    (every episode may be off, so no episode stands out as diverged: the cell as a whole did not learn)."""
    if score != "mse" or value is None or zero_prediction_mse is None:
        return False
    return not math.isfinite(value) or value > EXPLOSION_FACTOR * zero_prediction_mse


def diverged(scores: list[float], lower_is_better: bool, factor: float) -> list[bool]:
    """Which scores are non-finite, or (for errors) above ``factor`` times the median of the finite ones."""
    finite = [s for s in scores if math.isfinite(s)]
    bound = factor * statistics.median(finite) if finite and lower_is_better else math.inf
    return [not math.isfinite(s) or (lower_is_better and s > bound and bound > 0) for s in scores]


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
        for step, scores in curve.items():
            flags = diverged(scores, lower, evaluation.divergence_factor)
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
    return ConditionScores(results, by_condition[primary][0], rows if several or steps != (None,) else [])
