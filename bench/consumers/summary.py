"""The table printed at the end of `bench run`: one row per cell, its axes as columns (those of the report, so that
cells of two documents that differ in a setting are told apart), score and costs."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from bench.core import metrics as m
from bench.run.test_time import EXPLOSION_FACTOR, exploded
from bench.spec.conditions import cell_axes
from meta_bench.datasets import load_dataset

if TYPE_CHECKING:
    from bench.run.runner import Outcome


def _note(outcome: Outcome) -> str:
    """What the row's numbers need beside them: why it did not finish, or how many test episodes diverged (scored
    non-finite or absurd: bench.run.test_time.diverged), which the mean keeps unless the suite leaves them out."""
    diverged = int(outcome.metrics.get(m.TEST_DIVERGED, 0) or 0)
    error = outcome.metrics.get(m.SCORES["mse"].name)  # a regression cell's: only those are judged against 0
    cell = outcome.cell
    reference = None if error is None else load_dataset(cell.dataset.name, cell.dataset_options).zero_prediction_mse()
    notes = [f"EXPLODED: test MSE above {EXPLOSION_FACTOR:g}x predicting 0 ({reference:.3g})"
             if exploded(m.SCORES["mse"], error, reference) else "",
             f"DIVERGED: {diverged} test episode(s)" if diverged else "", outcome.detail[:60]]
    return "; ".join(note for note in notes if note)


def summary_table(outcomes: list[Outcome]) -> str:
    axes, by_cell = cell_axes([o.cell for o in outcomes])
    rows = []
    for o in outcomes:
        values = o.metrics
        score = next((name for name, metric in m.SCORES.items() if metric.name in values), "accuracy")
        rows.append({"learner": o.cell.label, **{a: by_cell[o.cell.config_hash][a] for a in axes}, "outcome": o.outcome,
                     m.SCORES[score].label: m.format_score(score, values.get(m.SCORES[score].name),
                                                           values.get(m.ci95(score))),
                     "ms/iter": m.TRAIN_MS.format(values.get(m.TRAIN_MS.name)),
                     "saved MB": m.SAVED_MB.format(values.get(m.SAVED_MB.name)),
                     "cuda MB": m.CUDA_MB.format(values.get(m.CUDA_MB.name)),
                     "rss MB": m.RSS_MB.format(values.get(m.RSS_MB.name)),
                     "note": _note(o)})
    return pd.DataFrame(rows).fillna("-").to_string(index=False) if rows else "(no cells)"
